"""Retention sweeps: exactly what is past its age goes, nothing a live document or an
unreplayed dead letter needs; the dry run counts the same and changes nothing; the
counters in ``/metrics`` grow.

Rows are put on both sides of every age by setting their times back with SQL (the ages
are an hour here; nothing else in the test database is that old).
"""

from __future__ import annotations

import uuid
from typing import Any

from click.testing import CliRunner
from litestar.testing import TestClient
from sqlalchemy import Engine, text

from pipeline.cli import main
from pipeline.lifecycle.retention import RetentionSweep
from pipeline.operations.common import Operator, RunContext
from pipeline.operations.jobs import create_job
from pipeline.operations.requests import DiscardRequest, RerunRequest
from pipeline.operations.rerun import RerunService
from pipeline.settings import RetentionSettings, Settings
from tests.support.api import upload
from tests.support.documents import wait_for_document

HOUR_MS = 3_600_000
OLD = "now() - interval '2 hours'"
ME = Operator(name="retention@tests", via="cli")


def sql(engine: Engine, statement: str, **params: Any) -> Any:
    with engine.begin() as conn:
        return conn.execute(text(statement), params)


def scalar(engine: Engine, statement: str, **params: Any) -> Any:
    with engine.connect() as conn:
        return conn.execute(text(statement), params).scalar()


def document(client: TestClient[Any], body: bytes, name: str, kind: str = "text/plain") -> str:
    document_id = str(upload(client, body, name, kind).json()["id"])
    wait_for_document(client, document_id)
    return document_id


def age_document(engine: Engine, document_id: str) -> None:
    """Its finish and every event two hours back."""
    sql(engine, f"UPDATE documents SET finished_at = {OLD} WHERE id = :id", id=document_id)
    sql(
        engine,
        f"UPDATE stage_events SET created_at = {OLD} WHERE document_id = :id",
        id=document_id,
    )


def events_of(engine: Engine, document_id: str) -> list[str]:
    with engine.connect() as conn:
        return list(
            conn.execute(
                text("SELECT event FROM stage_events WHERE document_id = :id ORDER BY id"),
                {"id": document_id},
            ).scalars()
        )


def has_blob(engine: Engine, document_id: str) -> bool:
    found = scalar(
        engine, "SELECT count(*) FROM document_blobs WHERE document_id = :id", id=document_id
    )
    return bool(found)


def test_retention_removes_exactly_what_is_past_its_age(
    client: TestClient[Any],
    engine: Engine,
    settings: Settings,
    worker: Any,
    rerun_service: RerunService,
) -> None:
    tag = uuid.uuid4().hex[:8]
    text_body = f"Retention test {tag}. A sentence or two.\n\nAnother paragraph.".encode()
    gif = b"GIF89a" + uuid.uuid4().bytes + bytes(64)

    old_done = document(client, text_body + b" old", f"old-{tag}.txt")
    young_done = document(client, text_body + b" young", f"young-{tag}.txt")
    running = document(client, text_body + b" running", f"running-{tag}.txt")
    failed = document(client, gif, f"failed-{tag}.gif", "application/octet-stream")
    with_letter = document(client, text_body + b" letter", f"letter-{tag}.txt")
    for document_id in (old_done, running, failed, with_letter):
        age_document(engine, document_id)
    # "running": as if a rerun had reopened it (an unfinished document keeps everything).
    sql(engine, "UPDATE documents SET status = 'processing' WHERE id = :id", id=running)
    # A succeeded document that still has a dead letter waiting keeps its bytes.
    sql(
        engine,
        "INSERT INTO dead_letters (id, document_id, stage, generation, actor_name, queue_name, "
        "message_id, message, error_type, error_message, attempts, failed_at, status) VALUES "
        f"(:id, :doc, 'embed', 1, 'embed', 'embed', 'm', '{{}}', 'E', 'e', 1, {OLD}, 'dead')",
        id=uuid.uuid4(),
        doc=with_letter,
    )
    # The failed document's own letter stays dead (waiting); two settled letters, one old.
    settled_old, settled_young = uuid.uuid4(), uuid.uuid4()
    for letter, when in ((settled_old, OLD), (settled_young, "now()")):
        sql(
            engine,
            "INSERT INTO dead_letters (id, document_id, stage, generation, actor_name, "
            "queue_name, message_id, message, error_type, error_message, attempts, "
            f"failed_at, status) VALUES (:id, NULL, 'embed', 1, 'embed', 'embed', 'm', '{{}}', "
            f"'E', 'e', 1, {when}, 'discarded')",
            id=letter,
        )
    with engine.begin() as conn:
        request = DiscardRequest(ids=[settled_old])
        jobs = {name: create_job(conn, "discard", request, ME, "default") for name in "abc"}
    sql(
        engine,
        f"UPDATE operation_jobs SET status = 'succeeded', finished_at = {OLD} WHERE id = :id",
        id=jobs["a"],
    )
    sql(
        engine,
        "UPDATE operation_jobs SET status = 'succeeded', finished_at = now() WHERE id = :id",
        id=jobs["b"],
    )
    sql(
        engine,
        f"UPDATE operation_jobs SET status = 'running', created_at = {OLD} WHERE id = :id",
        id=jobs["c"],
    )
    endpoint = uuid.uuid4()
    sql(
        engine,
        "INSERT INTO webhook_endpoints (id, tenant, url, events, secret, created_by) "
        "VALUES (:id, 'default', 'https://example.invalid/hook', ARRAY['document.succeeded'], "
        "'whsec_x', 'tests')",
        id=endpoint,
    )
    deliveries = {}
    for n, (status, when) in enumerate(
        [
            ("delivered", OLD),
            ("delivered", "now()"),
            ("pending", OLD),
            ("dead", OLD),
            ("cancelled", OLD),
        ]
    ):
        deliveries[(status, when)] = delivery = uuid.uuid4()
        sql(
            engine,
            "INSERT INTO webhook_deliveries (id, endpoint_id, tenant, event_id, event_type, "
            f"payload, status, created_at) VALUES (:id, :endpoint, 'default', {n}, "
            f"'document.succeeded', '{{}}', :status, {when})",
            id=delivery,
            endpoint=endpoint,
            status=status,
        )
    sql(
        engine,
        "INSERT INTO webhook_attempts (delivery_id, attempt, latency_ms) VALUES (:id, 1, 5)",
        id=deliveries[("delivered", OLD)],
    )
    before = {d: events_of(engine, d) for d in (old_done, young_done, running, failed, with_letter)}
    totals_before = _metric_totals(client)

    retention = RetentionSettings(
        blobs_ms=HOUR_MS,
        events_ms=HOUR_MS,
        dead_letters_ms=HOUR_MS,
        jobs_ms=HOUR_MS,
        webhook_deliveries_ms=HOUR_MS,
        batch_size=5,
    )
    sweep = RetentionSweep(engine, retention)
    preview = sweep.preview()
    cli = CliRunner().invoke(
        main,
        ["retention", "--dry-run"],
        env={
            "DATABASE_URL": settings.database.url,
            "REDIS_URL": settings.broker.url,
            **{
                f"PIPELINE_RETENTION_{k}_S": "3600"
                for k in ("BLOBS", "EVENTS", "DEAD_LETTERS", "JOBS", "WEBHOOK_DELIVERIES")
            },
            "PIPELINE_RETENTION_BATCH_SIZE": "5",
        },
        catch_exceptions=False,
    )
    assert cli.exit_code == 0, cli.output
    shown = {
        words[0]: (" ".join(words[1:-1]), words[-1])
        for words in (line.split() for line in cli.output.splitlines())
        if words and words[0] in preview
    }
    assert shown == {kind: ("1 h", str(count)) for kind, count in preview.items()}
    # The dry runs changed nothing.
    assert {d: events_of(engine, d) for d in before} == before
    assert has_blob(engine, old_done)

    removed = sweep.sweep()
    assert removed == preview
    while any(sweep.sweep().values()):  # the rest of the backlog (batches are bounded)
        pass

    # Bytes: only the old succeeded document's, without a waiting letter.
    assert not has_blob(engine, old_done)
    assert all(has_blob(engine, d) for d in (young_done, running, failed, with_letter))
    # Events: of finished old documents, all but the outcome event.
    assert events_of(engine, old_done) == ["document_succeeded"]
    assert events_of(engine, failed) == ["document_failed"]
    assert events_of(engine, with_letter) == ["document_succeeded"]
    assert events_of(engine, young_done) == before[young_done]
    assert events_of(engine, running) == before[running]
    # Letters: the old settled one; never a dead one.
    letters = {
        row[0]: row[1]
        for row in sql(
            engine,
            "SELECT id, status FROM dead_letters WHERE id = ANY(:ids) OR document_id = ANY(:docs)",
            ids=[settled_old, settled_young],
            docs=[uuid.UUID(failed), uuid.UUID(with_letter)],
        )
    }
    assert settled_old not in letters
    assert letters[settled_young] == "discarded"
    assert sorted(letters.values()) == ["dead", "dead", "discarded"]
    # Jobs: the old finished one.
    kept_jobs = set(
        sql(
            engine, "SELECT id FROM operation_jobs WHERE id = ANY(:ids)", ids=list(jobs.values())
        ).scalars()
    )
    assert kept_jobs == {jobs["b"], jobs["c"]}
    # Deliveries: old delivered and cancelled ones (with their attempts).
    kept = set(
        sql(
            engine, "SELECT id FROM webhook_deliveries WHERE endpoint_id = :e", e=endpoint
        ).scalars()
    )
    assert kept == {
        deliveries[("delivered", "now()")],
        deliveries[("pending", OLD)],
        deliveries[("dead", OLD)],
    }
    assert (
        scalar(
            engine,
            "SELECT count(*) FROM webhook_attempts WHERE delivery_id = :id",
            id=deliveries[("delivered", OLD)],
        )
        == 0
    )

    # /metrics counts what went.
    totals = _metric_totals(client)
    assert totals["blobs"] - totals_before.get("blobs", 0) >= 1
    assert totals["events"] - totals_before.get("events", 0) >= removed["events"]
    assert totals["webhook_deliveries"] - totals_before.get("webhook_deliveries", 0) >= 2

    # A rerun that needs the removed bytes is refused, and says why.
    report = rerun_service.rerun(
        RerunRequest(from_stage="extract", ids=[uuid.UUID(old_done)]), RunContext(operator=ME)
    )
    assert report.items[0].action == "skipped"
    assert "removed by retention" in report.items[0].detail


def _metric_totals(client: TestClient[Any]) -> dict[str, float]:
    body = client.get("/metrics").text
    totals = {}
    for line in body.splitlines():
        if line.startswith("pipeline_retention_removed_total{"):
            labels, value = line.rsplit(" ", 1)
            totals[labels.split('kind="')[1].split('"')[0]] = float(value)
    return totals
