"""Operator services against real Postgres, Redis and Dramatiq: replay, discard, rerun, import."""

from __future__ import annotations

import re
import time
import uuid
from typing import Any

import dramatiq
import msgspec
from click.testing import CliRunner
from litestar.testing import TestClient
from sqlalchemy import Engine, text

from pipeline.operations.common import Operator, RunContext
from pipeline.operations.dead_letters import LetterFilter, get_letter, list_letters
from pipeline.operations.replay import ReplayService
from pipeline.operations.requests import DiscardRequest, ReplayRequest, RerunRequest
from pipeline.operations.rerun import DocumentFilter, RerunService
from pipeline.queries.cursors import CursorCodec
from pipeline.settings import Settings
from tests.support.api import upload
from tests.support.documents import events, wait_for_document
from tests.support.faults import Fault, FaultPlan

ME = Operator(name="tester@ci", via="cli")
RUN = RunContext(operator=ME)
TEXT = b"Operations test text. It talks about otters and kelp forests.\n\nSecond paragraph."
GIF = b"GIF89a" + bytes(100)
CURSORS = CursorCodec.ephemeral()


def letter_of(engine: Engine, document_id: str) -> dict[str, Any]:
    with engine.connect() as conn:
        row = (
            conn.execute(
                text("SELECT * FROM dead_letters WHERE document_id = :id"), {"id": document_id}
            )
            .mappings()
            .one()
        )
    return dict(row)


def failed_document(
    client: TestClient[Any],
    faults: FaultPlan | None,
    name: str,
    stage: str = "extract",
    times: int = 1,
) -> str:
    if faults is not None:
        faults.add(stage, name, Fault("permanent", times=times))
    document_id = upload(client, TEXT, name).json()["id"]
    assert wait_for_document(client, document_id)["status"] == "failed"
    return str(document_id)


def snapshot(engine: Engine, document_ids: list[str]) -> dict[str, Any]:
    ids = [uuid.UUID(i) for i in document_ids]
    tables = {
        "documents": "SELECT * FROM documents WHERE id = ANY(:ids) ORDER BY id",
        "stage_runs": "SELECT * FROM stage_runs WHERE document_id = ANY(:ids) "
        "ORDER BY document_id, position",
        "stage_events": "SELECT * FROM stage_events WHERE document_id = ANY(:ids) ORDER BY id",
        "dead_letters": "SELECT * FROM dead_letters WHERE document_id = ANY(:ids) ORDER BY id",
        "chunks": "SELECT id, document_id, ordinal, text FROM chunks "
        "WHERE document_id = ANY(:ids) ORDER BY id",
    }
    with engine.connect() as conn:
        return {
            name: [dict(r) for r in conn.execute(text(sql), {"ids": ids}).mappings()]
            for name, sql in tables.items()
        }


def test_replay_after_the_cause_is_fixed_succeeds(
    client: TestClient[Any],
    engine: Engine,
    faults: FaultPlan,
    worker: Any,
    replay_service: ReplayService,
) -> None:
    document_id = failed_document(client, faults, "fixed-later.txt")  # fault fires once
    letter = letter_of(engine, document_id)
    assert letter["status"] == "dead"
    result = replay_service.replay(ReplayRequest(ids=[letter["id"]], reason="parser fixed"), RUN)
    assert [item.action for item in result.items] == ["replayed"]
    document = wait_for_document(client, document_id)
    assert document["status"] == "succeeded"
    assert document["failure_reason"] is None
    after = letter_of(engine, document_id)
    assert after["status"] == "replayed"
    assert after["replay_count"] == 1
    assert after["replayed_message_id"] == result.items[0].message_id
    replayed = next(e for e in events(engine, document_id) if e["event"] == "replayed")
    assert replayed["detail"]["by"] == "tester@ci"
    assert replayed["detail"]["reason"] == "parser fixed"
    assert replayed["detail"]["selection"] == {"ids": [str(letter["id"])]}


def test_replay_without_fixing_dies_again_with_history_intact(
    client: TestClient[Any],
    engine: Engine,
    faults: FaultPlan,
    worker: Any,
    replay_service: ReplayService,
) -> None:
    document_id = failed_document(client, faults, "still-broken.txt", times=5)
    letter = letter_of(engine, document_id)
    replay_service.replay(ReplayRequest(ids=[letter["id"]]), RUN)
    deadline = time.monotonic() + 20
    while letter_of(engine, document_id)["status"] != "dead" and time.monotonic() < deadline:
        time.sleep(0.05)
    again = letter_of(engine, document_id)
    assert again["status"] == "dead"
    assert again["replay_count"] == 1
    assert again["id"] == letter["id"]  # one letter per failure lineage
    assert wait_for_document(client, document_id)["status"] == "failed"
    history = [(e["stage"], e["event"]) for e in events(engine, document_id)]
    assert history.count(("extract", "dead")) == 2
    assert ("extract", "replayed") in history
    refused = replay_service.replay(ReplayRequest(ids=[letter["id"]]), RUN)
    assert refused.items[0].action == "replayed"  # dead again: replayable again
    wait_for_document(client, document_id)


def test_replaying_a_replayed_letter_needs_force(
    client: TestClient[Any],
    engine: Engine,
    faults: FaultPlan,
    worker: Any,
    replay_service: ReplayService,
) -> None:
    document_id = failed_document(client, faults, "twice.txt")
    letter_id = letter_of(engine, document_id)["id"]
    replay_service.replay(ReplayRequest(ids=[letter_id]), RUN)
    assert wait_for_document(client, document_id)["status"] == "succeeded"
    refused = replay_service.replay(ReplayRequest(ids=[letter_id]), RUN)
    assert refused.items[0].action == "skipped"
    assert "already replayed" in refused.items[0].detail
    forced = replay_service.replay(ReplayRequest(ids=[letter_id], force=True), RUN)
    assert forced.items[0].action == "skipped"  # the stage succeeded meanwhile: nothing to do
    assert "not dead" in forced.items[0].detail


def test_bulk_replay_is_paced_and_replays_each_letter_once(
    client: TestClient[Any],
    engine: Engine,
    worker: Any,
    replay_service: ReplayService,
) -> None:
    marker = f"bulk-{uuid.uuid4().hex[:6]}"
    ids = [
        upload(client, GIF, f"{marker}-{i}.gif", "application/octet-stream").json()["id"]
        for i in range(200)
    ]
    for document_id in ids:
        assert wait_for_document(client, document_id, timeout=60)["status"] == "failed"
    with engine.connect() as conn:
        letters = list(
            conn.execute(
                text("SELECT id FROM dead_letters WHERE document_id = ANY(:ids)"),
                {"ids": [uuid.UUID(i) for i in ids]},
            ).scalars()
        )
    assert len(letters) == 200
    started = time.monotonic()
    result = replay_service.replay(ReplayRequest(ids=letters, rate=50), RUN)
    elapsed = time.monotonic() - started
    assert result.done == 200
    assert elapsed >= 3.9, elapsed
    for document_id in ids:
        wait_for_document(client, document_id, timeout=60)
    with engine.connect() as conn:
        counts = conn.execute(
            text(
                "SELECT replay_count, count(*) FROM dead_letters WHERE id = ANY(:ids) "
                "GROUP BY replay_count"
            ),
            {"ids": letters},
        ).all()
        replayed_events = conn.execute(
            text(
                "SELECT count(*) FROM stage_events WHERE event = 'replayed' "
                "AND document_id = ANY(:ids)"
            ),
            {"ids": [uuid.UUID(i) for i in ids]},
        ).scalar_one()
    assert dict(counts) == {1: 200}
    assert replayed_events == 200


def test_rerun_from_chunk_keeps_earlier_stages_and_one_set_of_chunks(
    client: TestClient[Any],
    engine: Engine,
    worker: Any,
    rerun_service: RerunService,
) -> None:
    document_id = upload(client, TEXT, "rerun-me.txt").json()["id"]
    assert wait_for_document(client, document_id)["status"] == "succeeded"
    before = snapshot(engine, [document_id])
    result = rerun_service.rerun(
        RerunRequest(from_stage="chunk", ids=[uuid.UUID(document_id)], reason="new chunker"), RUN
    )
    assert result.items[0].action == "rerun"
    document = wait_for_document(client, document_id)
    assert document["status"] == "succeeded"
    assert document["generation"] == 2
    after = snapshot(engine, [document_id])
    rows_before = {row["stage"]: row for row in before["stage_runs"]}
    rows_after = {row["stage"]: row for row in after["stage_runs"]}
    carried = {"generation", "updated_at"}  # the earlier rows join the new generation as they are
    for stage in ("validate", "extract"):
        assert rows_after[stage]["generation"] == 2
        same = {k: v for k, v in rows_after[stage].items() if k not in carried}
        assert same == {k: v for k, v in rows_before[stage].items() if k not in carried}
    for stage in ("chunk", "embed", "index"):
        assert rows_after[stage]["generation"] == 2
        assert rows_after[stage]["status"] == "succeeded"
        assert rows_after[stage]["finished_at"] > rows_before[stage]["finished_at"]
    ordinals = [chunk["ordinal"] for chunk in after["chunks"]]
    assert ordinals == sorted(set(ordinals))
    assert len(after["chunks"]) == len(before["chunks"])
    succeeded = [
        (e["stage"], e["event"]) for e in events(engine, document_id) if e["event"] == "succeeded"
    ]
    assert succeeded.count(("extract", "succeeded")) == 1
    assert succeeded.count(("chunk", "succeeded")) == 2
    rerun = next(e for e in events(engine, document_id) if e["event"] == "rerun")
    assert rerun["detail"]["from_stage"] == "chunk"
    assert rerun["detail"]["previous_generation"] == 1


def test_rerun_refuses_when_an_earlier_stage_has_not_succeeded(
    client: TestClient[Any],
    faults: FaultPlan,
    worker: Any,
    rerun_service: RerunService,
) -> None:
    document_id = failed_document(client, faults, "no-text.txt", stage="extract", times=9)
    result = rerun_service.rerun(
        RerunRequest(from_stage="embed", ids=[uuid.UUID(document_id)]), RUN
    )
    assert result.items[0].action == "skipped"
    assert "extract has not succeeded" in result.items[0].detail


def test_dry_runs_change_nothing(
    client: TestClient[Any],
    engine: Engine,
    faults: FaultPlan,
    worker: Any,
    replay_service: ReplayService,
    rerun_service: RerunService,
) -> None:
    failed = failed_document(client, faults, "dry.txt")
    fine = upload(client, TEXT, "dry-ok.txt").json()["id"]
    assert wait_for_document(client, fine)["status"] == "succeeded"
    letter_id = letter_of(engine, failed)["id"]
    before = snapshot(engine, [failed, fine])
    replay = replay_service.replay(ReplayRequest(ids=[letter_id], dry_run=True), RUN)
    discard = replay_service.discard(DiscardRequest(ids=[letter_id], dry_run=True), RUN)
    rerun = rerun_service.rerun(
        RerunRequest(from_stage="chunk", ids=[uuid.UUID(fine)], dry_run=True), RUN
    )
    assert [replay.items[0].action, discard.items[0].action, rerun.items[0].action] == [
        "would replay",
        "would discard",
        "would rerun",
    ]
    time.sleep(0.5)  # had anything been sent, a worker would have picked it up by now
    assert snapshot(engine, [failed, fine]) == before


def test_discard_marks_the_letter_and_keeps_the_document_failed(
    client: TestClient[Any],
    engine: Engine,
    faults: FaultPlan,
    worker: Any,
    replay_service: ReplayService,
) -> None:
    document_id = failed_document(client, faults, "discard-me.txt")
    letter_id = letter_of(engine, document_id)["id"]
    result = replay_service.discard(DiscardRequest(ids=[letter_id], reason="junk upload"), RUN)
    assert result.items[0].action == "discarded"
    assert letter_of(engine, document_id)["status"] == "discarded"
    assert wait_for_document(client, document_id)["status"] == "failed"
    discarded = next(e for e in events(engine, document_id) if e["event"] == "discarded")
    assert discarded["detail"]["reason"] == "junk upload"


def test_filters_and_pagination(
    client: TestClient[Any],
    engine: Engine,
    faults: FaultPlan,
    worker: Any,
) -> None:
    ids = [failed_document(client, faults, f"page-{i}.txt") for i in range(3)]
    with engine.connect() as conn:
        for document_id in ids:
            page = list_letters(
                conn,
                LetterFilter(
                    document_id=uuid.UUID(document_id),
                    stage="extract",
                    error_type="PermanentError",
                    status="dead",
                ),
                limit=5,
                cursors=CURSORS,
            )
            assert len(page.items) == 1
            assert page.items[0].document_id == uuid.UUID(document_id)
        assert (
            list_letters(
                conn,
                LetterFilter(document_id=uuid.UUID(ids[0]), stage="validate"),
                limit=5,
                cursors=CURSORS,
            ).items
            == []
        )
        seen: list[uuid.UUID] = []
        cursor = None
        for _ in range(100):
            page = list_letters(
                conn,
                LetterFilter(error_type="PermanentError"),
                limit=2,
                cursors=CURSORS,
                cursor=cursor,
            )
            seen.extend(item.id for item in page.items)
            cursor = page.next_cursor
            if cursor is None:
                break
        assert len(seen) == len(set(seen))
        mine = {letter_of(engine, document_id)["id"] for document_id in ids}
        assert mine <= set(seen)
        detail = get_letter(conn, next(iter(mine)))
        assert detail is not None
        assert [e.event for e in detail.history][:2] == ["accepted", "queued"]


def test_import_from_redis_dead_letter_sets(
    client: TestClient[Any],
    engine: Engine,
    settings: Settings,
    broker: dramatiq.Broker,
    replay_service: ReplayService,
    worker: Any,
) -> None:
    document_id = upload(client, TEXT, "imported.txt").json()["id"]
    wait_for_document(client, document_id)
    message = dramatiq.Message(
        queue_name="embed",
        actor_name="embed",
        args=({"document_id": document_id, "stage": "embed", "generation": 1},),
        kwargs={},
        options={"retries": 5, "traceback": "Traceback...\nOSError: disk gone\n"},
    )
    redis_id = str(uuid.uuid4())
    key = f"{settings.broker.namespace}:embed.XQ"
    client_ = broker.client  # type: ignore[attr-defined]
    client_.zadd(key, {redis_id: int(time.time() * 1000)})
    client_.hset(f"{key}.msgs", redis_id, msgspec.json.encode(message.asdict()))
    try:
        dry = replay_service.import_from_redis(client_, ME, queues=["embed"], dry_run=True)
        assert [item.action for item in dry.items if item.message_id == message.message_id] == [
            "would import"
        ]
        first = replay_service.import_from_redis(client_, ME, queues=["embed"])
        mine = [item for item in first.items if item.message_id == message.message_id]
        assert [item.action for item in mine] == ["imported"]
        again = replay_service.import_from_redis(client_, ME, queues=["embed"])
        assert [item.action for item in again.items if item.message_id == message.message_id] == [
            "skipped"
        ]
        with engine.connect() as conn:
            row = (
                conn.execute(
                    text("SELECT * FROM dead_letters WHERE message_id = :m"),
                    {"m": message.message_id},
                )
                .mappings()
                .one()
            )
        assert row["document_id"] == uuid.UUID(document_id)
        assert row["stage"] == "embed"
        assert row["attempts"] == 6
        assert row["error_message"] == "OSError: disk gone"
    finally:
        client_.delete(key, f"{key}.msgs")


def test_rerun_by_filter_selects_documents_dead_at_a_stage(
    client: TestClient[Any],
    faults: FaultPlan,
    worker: Any,
    rerun_service: RerunService,
) -> None:
    failed_document(client, faults, "filter-dead.txt", stage="chunk")
    dry = rerun_service.rerun(
        RerunRequest(
            from_stage="chunk", filter=DocumentFilter(status="failed", stage="chunk"), dry_run=True
        ),
        RUN,
    )
    assert dry.matched >= 1
    assert all(item.action == "would rerun" for item in dry.items)


def test_reconciler_resends_lost_jobs_and_fails_stalled_ones(
    client: TestClient[Any],
    engine: Engine,
    faults: FaultPlan,
    worker: Any,
    settings: Settings,
    broker: dramatiq.Broker,
) -> None:
    from pipeline.cli import main
    from pipeline.operations.jobs import create_job, get_job

    document_id = failed_document(client, faults, "lost-job.txt")
    letter_id = letter_of(engine, document_id)["id"]
    with engine.begin() as conn:  # a job whose message never reached Redis
        lost = create_job(conn, "discard", DiscardRequest(ids=[letter_id]), ME, "default")
        stalled = create_job(conn, "discard", DiscardRequest(ids=[letter_id]), ME, "default")
        conn.execute(
            text(
                "UPDATE operation_jobs SET dispatched_at = now() - interval '1 hour' WHERE id = :id"
            ),
            {"id": lost},
        )
        conn.execute(
            text(
                "UPDATE operation_jobs SET status = 'running', started_at = now() - "
                "interval '1 hour', heartbeat_at = now() - interval '1 hour' "
                "WHERE id = :id"
            ),
            {"id": stalled},
        )
    # The real entry point: `pipeline reconciler --once` builds its sweeps as every
    # reconciler process does (the composition root hands it the jobs' sweep).
    env = {
        "DATABASE_URL": settings.database.url,
        "REDIS_URL": settings.broker.url,
        "PIPELINE_REDIS_NAMESPACE": settings.broker.namespace,
    }
    swept = CliRunner().invoke(main, ["reconciler", "--once"], env=env, catch_exceptions=False)
    assert swept.exit_code == 0, swept.output
    found = re.search(r"jobs resent: (\d+), jobs failed: (\d+)", swept.output)
    assert found is not None, swept.output
    assert int(found.group(1)) >= 1
    assert int(found.group(2)) >= 1
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        with engine.connect() as conn:
            job = get_job(conn, lost)
        if job is not None and job.status == "succeeded":
            break
        time.sleep(0.1)
    assert job is not None
    assert job.status == "succeeded"
    assert job.done == 1
    assert letter_of(engine, document_id)["status"] == "discarded"
    with engine.connect() as conn:
        failed = get_job(conn, stalled)
    assert failed is not None
    assert failed.status == "failed"
    assert "stopped" in (failed.error or "")


def test_rerun_settles_the_dead_letters_of_the_failed_run(
    client: TestClient[Any],
    engine: Engine,
    faults: FaultPlan,
    worker: Any,
    rerun_service: RerunService,
) -> None:
    document_id = failed_document(client, faults, "rerun-settles.txt", stage="chunk")
    assert letter_of(engine, document_id)["status"] == "dead"
    result = rerun_service.rerun(
        RerunRequest(from_stage="chunk", ids=[uuid.UUID(document_id)]), RUN
    )
    assert result.items[0].action == "rerun"
    assert wait_for_document(client, document_id)["status"] == "succeeded"
    assert letter_of(engine, document_id)["status"] == "discarded"
    rerun = next(e for e in events(engine, document_id) if e["event"] == "rerun")
    assert rerun["detail"]["discarded_dead_letters"] == [str(letter_of(engine, document_id)["id"])]


def test_import_keeps_bad_entries_by_their_redis_id(
    engine: Engine,
    settings: Settings,
    broker: dramatiq.Broker,
    replay_service: ReplayService,
) -> None:
    key = f"{settings.broker.namespace}:chunk.XQ"
    client_ = broker.client  # type: ignore[attr-defined]
    garbage_ids = [str(uuid.uuid4()), str(uuid.uuid4())]
    odd = dramatiq.Message(
        queue_name="chunk",
        actor_name="chunk",
        args=(),
        kwargs={},
        options={"traceback": "   ", "retries": "many"},
    )
    odd_id = str(uuid.uuid4())
    now = int(time.time() * 1000)
    client_.zadd(key, {garbage_ids[0]: now, garbage_ids[1]: now, odd_id: now})
    client_.hset(
        f"{key}.msgs",
        mapping={
            garbage_ids[0]: b"\x80not json",
            garbage_ids[1]: b"[1, 2, 3]",
            odd_id: msgspec.json.encode(odd.asdict()),
        },
    )
    try:
        result = replay_service.import_from_redis(client_, ME, queues=["chunk"])
        imported = {item.message_id for item in result.items if item.action == "imported"}
        assert {*garbage_ids, odd.message_id} <= imported
        again = replay_service.import_from_redis(client_, ME, queues=["chunk"])
        assert all(item.action == "skipped" for item in again.items)
        with engine.connect() as conn:
            rows = (
                conn.execute(
                    text(
                        "SELECT message_id, attempts, error_message, message FROM dead_letters "
                        "WHERE message_id = ANY(:ids)"
                    ),
                    {"ids": [*garbage_ids, odd.message_id]},
                )
                .mappings()
                .all()
            )
        by_id = {row["message_id"]: row for row in rows}
        assert "not json" in by_id[garbage_ids[0]]["message"]["raw"]
        assert by_id[odd.message_id]["attempts"] == 1
        assert "imported" in by_id[odd.message_id]["error_message"]
    finally:
        client_.delete(key, f"{key}.msgs")
