"""Failure handling: permanent errors dead-letter at once, transient ones retry."""

from __future__ import annotations

import uuid
from typing import Any

from litestar.testing import TestClient
from sqlalchemy import Engine, text

from pipeline.engine.executor import Outcome, StageExecutor
from pipeline.messages import Delivery
from pipeline.wiring import Wiring
from tests.support.api import upload
from tests.support.documents import events, stage_statuses, wait_for_document
from tests.support.faults import Fault, FaultPlan

STAGE_TEXT = b"Retry me please. This text is perfectly fine.\n\nIt has two paragraphs."


def dead_letters(engine: Engine, document_id: str) -> list[dict[str, Any]]:
    with engine.connect() as conn:
        rows = conn.execute(
            text("SELECT * FROM dead_letters WHERE document_id = :id"), {"id": document_id}
        ).mappings()
        return [dict(row) for row in rows]


def stage(document: dict[str, Any], name: str) -> dict[str, Any]:
    return next(row for row in document["stages"] if row["stage"] == name)


def test_corrupt_pdf_is_dead_after_one_attempt(
    client: TestClient[Any], engine: Engine, worker: Any
) -> None:
    corrupt = b"%PDF-1.4\n" + bytes(range(256)) * 8 + b"\n%%EOF\n"
    document_id = upload(client, corrupt, "broken.pdf", "application/pdf").json()["id"]
    document = wait_for_document(client, document_id)
    assert document["status"] == "failed"
    assert "corrupt" in document["failure_reason"].lower()
    assert "Traceback" not in document["failure_reason"]
    extract = stage(document, "extract")
    assert extract["status"] == "dead"
    assert extract["attempts"] == 1
    assert extract["last_error"]["transient"] is False
    assert stage_statuses(document)["chunk"] == "pending"
    (letter,) = dead_letters(engine, document_id)
    assert letter["stage"] == "extract"
    assert letter["attempts"] == 1
    assert letter["error_type"] == "CorruptContent"
    assert letter["status"] == "dead"
    assert letter["message"]["actor_name"] == "extract"
    assert letter["message"]["args"][0]["document_id"] == document_id


def test_unsupported_binary_is_dead_at_validate(
    client: TestClient[Any], engine: Engine, worker: Any
) -> None:
    gif = b"GIF89a" + bytes(200)
    # Declared as octet-stream so that only the sniffer can tell what it is.
    document_id = upload(client, gif, "photo.dat", "application/octet-stream").json()["id"]
    document = wait_for_document(client, document_id)
    assert document["status"] == "failed"
    assert "GIF" in document["failure_reason"]
    validate = stage(document, "validate")
    assert validate["status"] == "dead"
    assert validate["attempts"] == 1
    (letter,) = dead_letters(engine, document_id)
    assert letter["error_type"] == "UnsupportedContent"


def test_transient_error_retries_then_succeeds(
    client: TestClient[Any], engine: Engine, faults: FaultPlan, worker: Any
) -> None:
    faults.add("extract", "flaky.txt", Fault("transient", times=2))
    document_id = upload(client, STAGE_TEXT, "flaky.txt").json()["id"]
    document = wait_for_document(client, document_id)
    assert document["status"] == "succeeded"
    assert stage(document, "extract")["attempts"] == 3
    assert stage(document, "chunk")["attempts"] == 1
    history = [(e["stage"], e["event"], e["attempt"]) for e in events(engine, document_id)]
    assert ("extract", "retrying", 1) in history
    assert ("extract", "retrying", 2) in history
    assert ("extract", "succeeded", 3) in history
    retry = next(e for e in events(engine, document_id) if e["event"] == "retrying")
    assert retry["detail"]["error_type"] == "TransientError"
    assert 100 <= retry["detail"]["delay_ms"] <= 400


def test_transient_errors_exhaust_retries_then_dead_letter(
    client: TestClient[Any], engine: Engine, faults: FaultPlan, worker: Any
) -> None:
    faults.add("embed", "hopeless.txt", Fault("transient", times=10))
    document_id = upload(client, STAGE_TEXT, "hopeless.txt").json()["id"]
    document = wait_for_document(client, document_id)
    assert document["status"] == "failed"
    embed = stage(document, "embed")
    assert embed["status"] == "dead"
    assert embed["attempts"] == 3  # max_retries=2 in the test settings
    assert "gave up after 3 attempts" in document["failure_reason"]
    (letter,) = dead_letters(engine, document_id)
    assert letter["attempts"] == 3
    assert letter["traceback"]


def test_stage_past_its_time_limit_is_interrupted_and_retried(
    client: TestClient[Any], engine: Engine, faults: FaultPlan, worker: Any
) -> None:
    faults.add("chunk", "slow.txt", Fault("sleep", times=1, seconds=10))
    document_id = upload(client, STAGE_TEXT, "slow.txt").json()["id"]
    document = wait_for_document(client, document_id, timeout=40)
    assert document["status"] == "succeeded"
    chunk = stage(document, "chunk")
    assert chunk["attempts"] == 2
    retry = next(e for e in events(engine, document_id) if e["event"] == "retrying")
    assert retry["stage"] == "chunk"
    assert retry["detail"]["error_type"] == "TimeLimitExceeded"
    assert "timed out after 2 s" in retry["detail"]["error"]
    # interrupted near the limit, not after the 10 s sleep
    assert retry["detail"]["duration_ms"] < 6_000


def test_duplicate_and_stale_messages_are_dropped_with_a_reason(
    client: TestClient[Any], engine: Engine, executor: StageExecutor, worker: Any
) -> None:
    document_id = upload(client, STAGE_TEXT, "dupe.txt").json()["id"]
    assert wait_for_document(client, document_id)["status"] == "succeeded"
    delivery = Delivery(
        message_id=str(uuid.uuid4()), actor_name="chunk", queue_name="chunk", message={}
    )
    payload = {"document_id": document_id, "stage": "chunk", "generation": 1}
    assert executor.execute("chunk", payload, delivery) is Outcome.DROPPED
    stale = {**payload, "generation": 2}  # not the generation the document is at
    assert executor.execute("chunk", stale, delivery) is Outcome.DROPPED
    dropped = [
        e["detail"]["reason"] for e in events(engine, document_id) if e["event"] == "dropped"
    ]
    assert any("already succeeded" in reason for reason in dropped)
    assert any("stale message" in reason for reason in dropped)
    with engine.connect() as conn:
        chunks = conn.execute(
            text("SELECT count(*), count(DISTINCT ordinal) FROM chunks WHERE document_id = :id"),
            {"id": document_id},
        ).one()
    assert chunks[0] == chunks[1] > 0


def test_message_for_unknown_document_is_dead_lettered(
    engine: Engine, executor: StageExecutor
) -> None:
    missing = str(uuid.uuid4())
    delivery = Delivery(
        message_id=str(uuid.uuid4()),
        actor_name="validate",
        queue_name="validate",
        message={"args": [{"document_id": missing}]},
    )
    payload = {"document_id": missing, "stage": "validate", "generation": 1}
    assert executor.execute("validate", payload, delivery) is Outcome.DEAD
    malformed = {"document_id": "nope", "stage": "validate"}
    assert executor.execute("validate", malformed, delivery) is Outcome.DEAD
    with engine.connect() as conn:
        rows = conn.execute(
            text("SELECT error_type, error_message FROM dead_letters WHERE message_id = :m"),
            {"m": delivery.message_id},
        ).all()
    assert {row.error_type for row in rows} == {"UnknownDocument", "InvalidMessage"}


def test_a_stage_that_never_finishes_is_dead_after_its_attempts(
    client: TestClient[Any], engine: Engine, executor: StageExecutor, worker: Any
) -> None:
    document_id = upload(client, STAGE_TEXT, "crashloop.txt").json()["id"]
    assert wait_for_document(client, document_id)["status"] == "succeeded"
    # As if three workers in a row died mid-embed: running, past its deadline, 3 attempts.
    with engine.begin() as conn:
        conn.execute(
            text(
                "UPDATE stage_runs SET status = 'running', attempts = 3, "
                "deadline_at = now() - interval '1 second' "
                "WHERE document_id = :id AND stage = 'embed'"
            ),
            {"id": document_id},
        )
        conn.execute(
            text("UPDATE documents SET status = 'processing' WHERE id = :id"), {"id": document_id}
        )
    delivery = Delivery(
        message_id=str(uuid.uuid4()), actor_name="embed", queue_name="embed", message={}
    )
    payload = {"document_id": document_id, "stage": "embed", "generation": 1}
    assert executor.execute("embed", payload, delivery) is Outcome.DEAD
    document = client.get(f"/documents/{document_id}").json()
    assert document["status"] == "failed"
    assert "started 3 times and never finished" in document["failure_reason"]


def test_reconciler_finishes_documents_whose_rows_say_they_are_done(
    settings: Any, engine: Engine, client: TestClient[Any], broker: Any, worker: Any
) -> None:
    from pipeline.engine.dispatch import Dispatcher

    done = upload(client, STAGE_TEXT, "finish-me.txt").json()["id"]
    assert wait_for_document(client, done)["status"] == "succeeded"
    with engine.begin() as conn:
        conn.execute(
            text("UPDATE documents SET status = 'processing', finished_at = NULL WHERE id = :id"),
            {"id": done},
        )
    report = Wiring(settings, engine=engine, dispatcher=Dispatcher(broker)).reconciler.sweep()
    assert report.finished >= 1
    assert client.get(f"/documents/{done}").json()["status"] == "succeeded"
    assert any(e["event"] == "document_succeeded" for e in events(engine, done))
