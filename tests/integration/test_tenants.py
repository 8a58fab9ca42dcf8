"""Tenants: a key never sees, searches, re-runs or replays another tenant's documents.

Tenant A owns a succeeded document and a dead one (with its dead letter). Tenant B,
with every scope, tries everything on them: each answer is exactly what an id that
does not exist gets (no oracle), and A's rows stay as they were.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from typing import Any

import dramatiq
import msgspec
import pytest
from click.testing import CliRunner
from litestar.testing import TestClient
from sqlalchemy import Engine, text

from pipeline.cli import main
from pipeline.engine.dispatch import Dispatcher
from pipeline.http.app import create_app
from pipeline.settings import Settings
from tests.support.api import AsKey, bearer, make_key, upload
from tests.support.documents import wait_for_document

GIF = b"GIF89a" + bytes(100)


class TenantA(msgspec.Struct, frozen=True):
    client: Any
    word: str
    document_id: str
    dead_document_id: str
    letter_id: str


def _letters_of(as_key: AsKey, document_id: str) -> list[dict[str, Any]]:
    deadline = time.monotonic() + 10
    while True:
        items: list[dict[str, Any]] = as_key.get(
            "/dead-letters", params={"document_id": document_id}
        ).json()["items"]
        if items or time.monotonic() > deadline:
            return items
        time.sleep(0.05)


@pytest.fixture(scope="module")
def tenant_a(client: TestClient[Any], engine: Engine, worker: Any) -> TenantA:
    as_a = AsKey(client, make_key(engine, f"acme-{uuid.uuid4().hex[:6]}"))
    word = "zq" + uuid.uuid4().hex[:10]
    text_ = f"Tenant isolation test about {word} and glaciers.\n\nSecond paragraph.".encode()
    document_id = upload(as_a, text_, "mine.txt").json()["id"]
    assert wait_for_document(as_a, document_id)["status"] == "succeeded"
    dead = upload(as_a, GIF + uuid.uuid4().bytes, "dead.dat", "application/octet-stream")
    dead_id = dead.json()["id"]
    assert wait_for_document(as_a, dead_id)["status"] == "failed"
    (letter,) = _letters_of(as_a, dead_id)
    return TenantA(as_a, word, document_id, dead_id, letter["id"])


@pytest.fixture(scope="module")
def tenant_b(client: TestClient[Any], engine: Engine) -> AsKey:
    return AsKey(client, make_key(engine, f"globex-{uuid.uuid4().hex[:6]}"))


def same_as_unknown(response: Any, other_id: str, unknown: Any, unknown_id: str) -> None:
    """The answer about another tenant's item is the answer about no item, id aside."""
    assert response.status_code == unknown.status_code == 404, response.text
    assert response.headers["content-type"] == unknown.headers["content-type"]
    mine = response.text.replace(other_id, "ID")
    assert mine == unknown.text.replace(unknown_id, "ID")


def snapshot(engine: Engine, document_ids: list[str]) -> dict[str, Any]:
    ids = [uuid.UUID(document_id) for document_id in document_ids]
    queries = {
        "documents": "SELECT * FROM documents WHERE id = ANY(:ids) ORDER BY id",
        "stage_runs": "SELECT * FROM stage_runs WHERE document_id = ANY(:ids) "
        "ORDER BY document_id, position",
        "dead_letters": "SELECT * FROM dead_letters WHERE document_id = ANY(:ids) ORDER BY id",
        "stage_events": "SELECT count(*) FROM stage_events WHERE document_id = ANY(:ids)",
    }
    with engine.connect() as conn:
        return {
            name: [dict(row) for row in conn.execute(text(sql), {"ids": ids}).mappings()]
            for name, sql in queries.items()
        }


def test_documents_chunks_listing_and_search_are_the_tenants_own(
    tenant_a: TenantA, tenant_b: AsKey
) -> None:
    unknown = str(uuid.uuid4())
    for path in ("/documents/{}", "/documents/{}/chunks"):
        same_as_unknown(
            tenant_b.get(path.format(tenant_a.document_id)),
            tenant_a.document_id,
            tenant_b.get(path.format(unknown)),
            unknown,
        )
    assert tenant_a.client.get(f"/documents/{tenant_a.document_id}/chunks").json()["count"] >= 1
    listed_by_b = [item["id"] for item in tenant_b.get("/documents").json()["items"]]
    assert tenant_a.document_id not in listed_by_b
    listed_by_a = [item["id"] for item in tenant_a.client.get("/documents").json()["items"]]
    assert set(listed_by_a) == {tenant_a.document_id, tenant_a.dead_document_id}
    assert tenant_b.get("/search", params={"q": tenant_a.word}).json()["hits"] == []
    hits = tenant_a.client.get("/search", params={"q": tenant_a.word}).json()["hits"]
    assert [hit["document_id"] for hit in hits] == [tenant_a.document_id]


def test_rerun_of_another_tenants_documents_is_unknown_and_changes_nothing(
    tenant_a: TenantA, tenant_b: AsKey, engine: Engine
) -> None:
    before = snapshot(engine, [tenant_a.document_id])
    unknown = str(uuid.uuid4())
    body = {"from_stage": "chunk"}
    same_as_unknown(
        tenant_b.post(f"/documents/{tenant_a.document_id}/rerun", json=body),
        tenant_a.document_id,
        tenant_b.post(f"/documents/{unknown}/rerun", json=body),
        unknown,
    )
    (item,) = tenant_b.post("/rerun", json={**body, "ids": [tenant_a.document_id]}).json()["items"]
    assert (item["action"], item["detail"]) == ("skipped", "no such document")
    by_filter = tenant_b.post(
        "/rerun", json={**body, "filter": {"status": "succeeded"}, "dry_run": True}
    ).json()
    assert tenant_a.document_id not in [item["id"] for item in by_filter["items"]]
    assert snapshot(engine, [tenant_a.document_id]) == before


def test_dead_letters_of_another_tenant_are_unknown_and_stay_dead(
    tenant_a: TenantA, tenant_b: AsKey, engine: Engine
) -> None:
    before = snapshot(engine, [tenant_a.dead_document_id])
    unknown = str(uuid.uuid4())
    letter = tenant_a.letter_id
    same_as_unknown(
        tenant_b.get(f"/dead-letters/{letter}"),
        letter,
        tenant_b.get(f"/dead-letters/{unknown}"),
        unknown,
    )
    assert _letters_of(tenant_b, tenant_a.dead_document_id) == []
    listed = [
        item["id"] for item in tenant_b.get("/dead-letters", params={"limit": 500}).json()["items"]
    ]
    assert letter not in listed
    for action in ("replay", "discard"):
        report = tenant_b.post(f"/dead-letters/{action}", json={"ids": [letter]}).json()
        assert [(i["action"], i["detail"]) for i in report["items"]] == [
            ("skipped", "no such dead letter")
        ]
        by_filter = tenant_b.post(
            f"/dead-letters/{action}", json={"filter": {"status": "dead"}, "dry_run": True}
        ).json()
        assert letter not in [item["id"] for item in by_filter["items"]]
    assert snapshot(engine, [tenant_a.dead_document_id]) == before
    assert tenant_a.client.get(f"/dead-letters/{letter}").json()["letter"]["status"] == "dead"


@pytest.fixture
def queueing(settings: Settings, broker: dramatiq.Broker) -> Iterator[TestClient[Any]]:
    """An API that runs every bulk action as a background job."""
    app = create_app(
        settings.replace(operations={"admin_sync_limit": 0}), dispatcher=Dispatcher(broker)
    )
    with TestClient(app) as client:
        yield client


def wait_for_job(as_key: AsKey, job_id: str) -> dict[str, Any]:
    deadline = time.monotonic() + 30
    while (job := as_key.get(f"/operations/{job_id}").json())["status"] not in (
        "succeeded",
        "failed",
    ):
        assert time.monotonic() < deadline, job
        time.sleep(0.05)
    return job


def test_operations_belong_to_the_tenant_that_made_them(
    tenant_a: TenantA, tenant_b: AsKey, queueing: TestClient[Any], engine: Engine
) -> None:
    a_key, b_key = tenant_a.client.key, tenant_b.key
    assert a_key is not None
    assert b_key is not None
    as_a, as_b = AsKey(queueing, a_key), AsKey(queueing, b_key)
    before = snapshot(engine, [tenant_a.dead_document_id])
    # B's job names A's letter: it runs in a worker, still as B, and skips it.
    queued = as_b.post("/dead-letters/discard", json={"ids": [tenant_a.letter_id]})
    assert queued.status_code == 202, queued.text
    job = wait_for_job(as_b, queued.json()["job_id"])
    assert (job["status"], job["done"], job["skipped"]) == ("succeeded", 0, 1)
    assert snapshot(engine, [tenant_a.dead_document_id]) == before
    # A's job is A's alone.
    dry = {"ids": [tenant_a.letter_id], "reason": "tenant test", "rate": 0.1}
    a_job = as_a.post("/dead-letters/replay", json=dry)  # paced past 5 s: a job
    assert a_job.status_code == 202, a_job.text
    job_id = a_job.json()["job_id"]
    unknown = str(uuid.uuid4())
    same_as_unknown(
        as_b.get(f"/operations/{job_id}"), job_id, as_b.get(f"/operations/{unknown}"), unknown
    )
    assert as_a.get(f"/operations/{job_id}").status_code == 200
    assert wait_for_job(as_a, job_id)["status"] == "succeeded"


def test_poison_letters_are_shown_by_the_cli_only(
    client: TestClient[Any], engine: Engine, settings: Settings, tenant_a: TenantA
) -> None:
    poison = uuid.uuid4()
    with engine.begin() as conn:
        conn.execute(
            text(
                "INSERT INTO dead_letters (id, actor_name, queue_name, message_id, message, "
                "error_type, error_message, attempts) VALUES (:id, '<undecodable>', 'extract', "
                ":mid, '{}'::jsonb, 'UndecodableMessage', 'poison', 1)"
            ),
            {"id": poison, "mid": uuid.uuid4().hex},
        )
    listed = [
        item["id"] for item in client.get("/dead-letters", params={"limit": 500}).json()["items"]
    ]
    assert str(poison) not in listed
    assert client.get(f"/dead-letters/{poison}").status_code == 404
    env = {"DATABASE_URL": settings.database.url}
    everything = CliRunner().invoke(main, ["replay", "list", "--limit", "500"], env=env)
    assert str(poison) in everything.output
    tenant = tenant_a.dead_document_id
    only_a = CliRunner().invoke(
        main,
        ["replay", "list", "--tenant", _tenant_of(engine, tenant), "--format", "json"],
        env=env,
    )
    assert [item["id"] for item in msgspec.json.decode(only_a.stdout)] == [tenant_a.letter_id]


def _tenant_of(engine: Engine, document_id: str) -> str:
    with engine.connect() as conn:
        return str(
            conn.execute(
                text("SELECT tenant FROM documents WHERE id = :id"), {"id": document_id}
            ).scalar_one()
        )


def test_the_cli_reruns_any_tenants_documents_or_one_tenants(
    tenant_a: TenantA, engine: Engine, settings: Settings
) -> None:
    env = {
        "DATABASE_URL": settings.database.url,
        "REDIS_URL": settings.broker.url,
        "PIPELINE_REDIS_NAMESPACE": settings.broker.namespace,
    }
    other = CliRunner().invoke(
        main,
        ["rerun", tenant_a.document_id, "--from-stage", "chunk", "--dry-run", "--tenant", "nobody"],
        env=env,
    )
    assert "no such document" in other.output
    anyone = CliRunner().invoke(
        main, ["rerun", tenant_a.document_id, "--from-stage", "chunk", "--dry-run"], env=env
    )
    assert anyone.exit_code == 0, anyone.output
    assert f"would rerun {tenant_a.document_id}" in anyone.output


def test_uploads_belong_to_the_uploading_keys_tenant(
    client: TestClient[Any], engine: Engine, api_key: str
) -> None:
    tenant = f"initech-{uuid.uuid4().hex[:6]}"
    key = make_key(engine, tenant, "ingest")
    accepted = client.post(
        "/documents?filename=owned.txt",
        content=b"Owned by the key's tenant.",
        headers={**bearer(key), "Content-Type": "text/plain"},
    )
    assert accepted.status_code == 202, accepted.text
    assert _tenant_of(engine, accepted.json()["id"]) == tenant
    # The same idempotency key in two tenants makes two documents.
    idem = {"Idempotency-Key": f"shared-{uuid.uuid4()}", "Content-Type": "text/plain"}
    first = client.post("/documents?filename=a.txt", content=b"x", headers={**idem, **bearer(key)})
    second = client.post("/documents?filename=a.txt", content=b"x", headers=idem)  # default
    assert first.json()["id"] != second.json()["id"]
