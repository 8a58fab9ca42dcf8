"""Deleting a document: erased, out of search at once, its work in flight stopped, a
tombstone and the audit trail kept; over HTTP, from the CLI, and during processing with
real worker processes.

Every test uses a tenant of its own (or words of its own), so that the other tests
sharing the database never see, nor are seen by, what it deletes.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import dramatiq
import pytest
from click.testing import CliRunner
from litestar.testing import TestClient
from sqlalchemy import Engine, text

from pipeline.cli import main
from pipeline.engine.dispatch import Dispatcher
from pipeline.messages import StageMessage
from pipeline.operations.common import Operator, RunContext
from pipeline.operations.replay import ReplayService
from pipeline.operations.requests import ReplayRequest, RerunRequest
from pipeline.operations.rerun import RerunService
from pipeline.settings import Settings
from pipeline.stages.builtin import PIPELINE
from tests.support.api import AsKey, assert_problem, make_key, upload
from tests.support.documents import events, wait_for_document
from tests.support.processes import ProcessStack, stack_maker, wait_until

RUN = RunContext(operator=Operator(name="lifecycle@tests", via="cli"))


def words() -> tuple[str, bytes]:
    """A word no other document has, and a document that holds it."""
    word = "zq" + uuid.uuid4().hex[:10]
    body = f"A lifecycle test about {word}. It has sentences.\n\nAnd {word} again.".encode()
    return word, body


def tenant_key(client: TestClient[Any], engine: Engine, tenant: str | None = None) -> AsKey:
    """A client acting as a tenant of its own (or ``tenant``), with every scope."""
    return AsKey(client, make_key(engine, tenant=tenant or f"life-{uuid.uuid4().hex[:8]}"))


def row(engine: Engine, sql: str, **params: Any) -> Any:
    with engine.connect() as conn:
        return conn.execute(text(sql), params).one()


def content_left(engine: Engine, document_id: str) -> dict[str, int]:
    """How many rows of the document's content and stage state are left."""
    counts = {}
    for table in ("document_blobs", "document_texts", "artifacts", "chunks", "stage_runs"):
        counts[table] = row(
            engine, f"SELECT count(*) FROM {table} WHERE document_id = :id", id=document_id
        )[0]
    return counts


NOTHING_LEFT = dict.fromkeys(
    ("document_blobs", "document_texts", "artifacts", "chunks", "stage_runs"), 0
)


def test_delete_over_http_erases_and_keeps_a_tombstone(
    client: TestClient[Any], engine: Engine, broker: dramatiq.Broker, worker: Any
) -> None:
    as_key = tenant_key(client, engine)
    word, body = words()
    document_id = upload(as_key, body, "private-name.txt").json()["id"]
    assert wait_for_document(as_key, document_id)["status"] == "succeeded"
    assert as_key.get("/search", params={"q": word}).json()["hits"]
    before = {e["event"] for e in events(engine, document_id)}

    reader = AsKey(client, make_key(engine, tenant="default", scopes="read"))
    assert reader.request("DELETE", f"/documents/{document_id}").status_code == 403

    response = as_key.request("DELETE", f"/documents/{document_id}", params={"reason": "gdpr"})
    assert response.status_code == 204, response.text

    assert_problem(as_key.get(f"/documents/{document_id}"), 404, "no document")
    assert_problem(as_key.get(f"/documents/{document_id}/chunks"), 404, "no document")
    assert_problem(as_key.request("DELETE", f"/documents/{document_id}"), 404, "no document")
    hits = as_key.get("/search", params={"q": word}).json()["hits"]
    assert document_id not in {hit["document_id"] for hit in hits}
    assert document_id not in {d["id"] for d in as_key.get("/documents").json()["items"]}
    assert content_left(engine, document_id) == NOTHING_LEFT

    tomb = row(
        engine,
        "SELECT status, deleted_at, deleted_by, delete_reason, filename, sha256, generation "
        "FROM documents WHERE id = :id",
        id=document_id,
    )
    assert tomb.status == "deleted"
    assert tomb.deleted_at is not None
    assert tomb.deleted_by.startswith("api:life-")
    assert tomb.delete_reason == "gdpr"
    assert tomb.filename == ""
    assert tomb.sha256 == ""
    history = events(engine, document_id)
    assert before <= {e["event"] for e in history}  # the audit trail stays
    [deleted] = [e for e in history if e["event"] == "document_deleted"]
    assert deleted["detail"] == {"by": tomb.deleted_by, "reason": "gdpr"}

    # A stale message that arrives afterwards is dropped, and says why.
    Dispatcher(broker).send(
        Dispatcher(broker).build(StageMessage(uuid.UUID(document_id), "chunk", tomb.generation))
    )
    wait_until(
        lambda: any(
            e["event"] == "dropped" and e["detail"]["reason"] == "the document was deleted"
            for e in events(engine, document_id)
        ),
        20,
        "the stale message to be dropped",
    )
    assert content_left(engine, document_id) == NOTHING_LEFT


def test_delete_discards_letters_and_rerun_and_replay_skip_it(
    client: TestClient[Any],
    engine: Engine,
    worker: Any,
    replay_service: ReplayService,
    rerun_service: RerunService,
) -> None:
    as_key = tenant_key(client, engine)
    gif = b"GIF89a" + uuid.uuid4().bytes + bytes(64)
    document_id = upload(as_key, gif, "bad.gif", "application/octet-stream").json()["id"]
    assert wait_for_document(as_key, document_id)["status"] == "failed"
    [letter] = [
        r.id
        for r in _letters(engine, document_id)
        if r.status == "dead"  # the validate stage's
    ]
    assert as_key.request("DELETE", f"/documents/{document_id}").status_code == 204
    assert [r.status for r in _letters(engine, document_id)] == ["discarded"]

    ident = uuid.UUID(document_id)
    rerun = rerun_service.rerun(RerunRequest(from_stage="validate", ids=[ident]), RUN)
    assert rerun.items[0].action == "skipped"
    assert "the document was deleted" in rerun.items[0].detail
    replay = replay_service.replay(ReplayRequest(ids=[letter], force=True), RUN)
    assert replay.items[0].action == "skipped"
    assert "deleted" in replay.items[0].detail
    assert content_left(engine, document_id) == NOTHING_LEFT


def _letters(engine: Engine, document_id: str) -> list[Any]:
    with engine.connect() as conn:
        return list(
            conn.execute(
                text("SELECT id, status FROM dead_letters WHERE document_id = :id"),
                {"id": document_id},
            )
        )


def test_cli_delete_dry_run_then_for_real(
    client: TestClient[Any], engine: Engine, settings: Settings, worker: Any
) -> None:
    tenant = f"life-{uuid.uuid4().hex[:8]}"
    as_key = tenant_key(client, engine, tenant)
    ids = [upload(as_key, words()[1], f"cli-{i}.txt").json()["id"] for i in range(2)]
    for document_id in ids:
        wait_for_document(as_key, document_id)
    env = {
        "DATABASE_URL": settings.database.url,
        "REDIS_URL": settings.broker.url,
        "PIPELINE_REDIS_NAMESPACE": settings.broker.namespace,
    }
    runner = CliRunner()

    def cli(*args: str) -> Any:
        return runner.invoke(main, list(args), env=env, catch_exceptions=False)

    dry = cli("documents", "delete", "--status", "succeeded", "--tenant", tenant, "--dry-run")
    assert dry.exit_code == 0, dry.output
    assert "would delete 2, skipped 0 (dry run: nothing changed)" in dry.output
    assert all(f"would delete {i}" in dry.output for i in ids)
    assert [as_key.get(f"/documents/{i}").status_code for i in ids] == [200, 200]

    real = cli("documents", "delete", ids[0], "--reason", "asked by the user")
    assert real.exit_code == 0, real.output
    assert "deleted 1, skipped 0" in real.output
    assert as_key.get(f"/documents/{ids[0]}").status_code == 404
    assert as_key.get(f"/documents/{ids[1]}").status_code == 200
    tomb = row(engine, "SELECT deleted_by, delete_reason FROM documents WHERE id = :id", id=ids[0])
    assert tomb.deleted_by.startswith("cli:")
    assert tomb.delete_reason == "asked by the user"

    again = cli("documents", "delete", ids[0])
    assert again.exit_code == 1
    assert "no such document" in again.output

    # `documents cancel` takes the same selection; a finished document is not cancelled.
    finished = cli("documents", "cancel", ids[1], "--dry-run")
    assert "already succeeded" in finished.output, finished.output
    none = cli("documents", "cancel", "--status", "processing", "--tenant", tenant)
    assert none.exit_code == 0
    assert "no documents match" in none.output


# -- during processing, with real worker processes ---------------------------------------


@pytest.fixture
def make_stack(settings: Settings, engine: Engine, tmp_path: Path, api_key: str) -> Iterator[Any]:
    with stack_maker(settings, engine, tmp_path, api_key, ProcessStack) as make:
        yield make


@pytest.mark.slow
def test_delete_during_processing_stops_the_run(make_stack: Any, engine: Engine) -> None:
    """A document held in its extract stage (a fault makes it sleep) is deleted; when the
    stage finishes, its completion loses (``superseded``), nothing is written, and no
    later stage is ever claimed."""
    stack = make_stack([{"stage": "extract", "match": "held-*", "sleep_s": 3}])
    stack.processes.worker()
    stack.processes.reconciler()
    word, body = words()
    document_id = stack.upload("held-delete.txt", body)

    def extract_running() -> bool:
        return any(
            e["stage"] == "extract" and e["event"] == "claimed" for e in events(engine, document_id)
        )

    wait_until(extract_running, 30, "extract to be claimed")
    response = stack.client.delete(f"/documents/{document_id}", params={"reason": "mid-stage"})
    assert response.status_code == 204, response.text
    assert stack.client.get(f"/documents/{document_id}").status_code == 404

    def extract_lost() -> bool:
        return any(
            e["stage"] == "extract" and e["event"] == "superseded"
            for e in events(engine, document_id)
        )

    try:
        wait_until(extract_lost, 30, "the held extract attempt to finish and lose")
    except AssertionError:
        print(stack.processes.log("worker"))
        raise
    # No stage row is left to claim or to re-send: nothing can run for it any more.
    history = [(e["stage"], e["event"]) for e in events(engine, document_id)]
    assert ("extract", "succeeded") not in history
    later = PIPELINE.names[PIPELINE.names.index("extract") + 1 :]
    assert not [stage for stage, event in history if event == "claimed" and stage in later]
    assert content_left(engine, document_id) == NOTHING_LEFT
    hits = stack.client.get("/search", params={"q": word}).json()["hits"]
    assert document_id not in {hit["document_id"] for hit in hits}
    tomb = row(
        engine,
        "SELECT status, deleted_by, delete_reason FROM documents WHERE id = :id",
        id=document_id,
    )
    assert tomb.status == "deleted"
    assert tomb.delete_reason == "mid-stage"
    assert ("validate", "succeeded") in history  # the audit trail of the run stays
