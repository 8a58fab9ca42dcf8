"""Forged messages on the stage queues: JSON only, and nothing outside the state machine.

Anyone who can write to Redis can put a message on a stage queue. Such a message is
written here byte for byte, the way Dramatiq's RedisBroker stores one (the body in the
queue's ``.msgs`` hash, its id pushed on the queue), and consumed by a real
``pipeline worker``. A pickle is never unpickled: it is set aside as poison. A JSON
message naming another tenant's document can at most be dropped by that document's own
state machine: every row the document owns stays byte for byte as it was.
"""

from __future__ import annotations

import pickle
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import msgspec
import pytest
import redis
from litestar.testing import TestClient
from sqlalchemy import Engine, text

from pipeline.broker import PipelineRedisBroker
from pipeline.settings import Settings
from pipeline.stages.builtin import PIPELINE
from tests.support.api import AsKey, make_key, upload
from tests.support.documents import wait_for_document
from tests.support.processes import Processes, stack_env, wait_until

STAGES = PIPELINE.names

pytestmark = pytest.mark.slow

OWNED_ROWS = {
    "documents": "id",
    "document_blobs": "document_id",
    "stage_runs": "document_id",
    "document_texts": "document_id",
    "artifacts": "document_id",
    "chunks": "document_id",
}
"""Every table that holds a document's state, and the column naming the document."""


class Unpickled:
    """Creates ``path`` when unpickled: proof that a payload was unpickled."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def __reduce__(self) -> tuple[Any, ...]:
        return (open, (str(self.path), "w"))


class Forger:
    """Writes messages straight into a Redis namespace's stage queues."""

    def __init__(self, client: redis.Redis[bytes], namespace: str) -> None:
        self.client = client
        self.namespace = namespace

    def raw(self, queue: str, data: bytes, redis_id: str | None = None) -> str:
        """Enqueue ``data`` as Dramatiq's enqueue script does; returns its Redis id."""
        redis_id = redis_id or str(uuid.uuid4())
        self.client.hset(f"{self.namespace}:{queue}.msgs", redis_id, data)
        self.client.rpush(f"{self.namespace}:{queue}", redis_id)
        return redis_id

    def message(self, queue: str, payload: dict[str, Any], **envelope: Any) -> str:
        """A well-formed Dramatiq JSON message whose one argument is ``payload``."""
        redis_id, message_id = str(uuid.uuid4()), str(uuid.uuid4())
        options = {"redis_message_id": redis_id, **envelope.pop("options", {})}
        fields = {
            "queue_name": queue,
            "actor_name": queue,
            "args": [payload],
            "kwargs": {},
            "options": options,
            "message_id": message_id,
            "message_timestamp": int(time.time() * 1000),
            **envelope,
        }
        self.raw(queue, msgspec.json.encode(fields), redis_id)
        return message_id

    def pending(self) -> int:
        """Messages still waiting or delayed for a retry, on every stage queue."""
        names = [
            f"{self.namespace}:{stage}{suffix}.msgs" for stage in STAGES for suffix in ("", ".DQ")
        ]
        return sum(int(self.client.hlen(name)) for name in names)


def snapshot(engine: Engine, document_id: str) -> dict[str, list[str]]:
    """Every row the document owns, as Postgres prints it."""
    with engine.connect() as conn:
        return {
            table: list(
                conn.execute(
                    text(f"SELECT t::text FROM {table} t WHERE {column} = :id ORDER BY 1"),
                    {"id": document_id},
                ).scalars()
            )
            for table, column in OWNED_ROWS.items()
        }


def letters(engine: Engine, message_ids: list[str]) -> dict[str, Any]:
    with engine.connect() as conn:
        rows = conn.execute(
            text(
                "SELECT message_id, error_type, error_message, document_id, message, attempts "
                "FROM dead_letters WHERE message_id = ANY(:ids)"
            ),
            {"ids": message_ids},
        ).all()
    return {row.message_id: row for row in rows}


def dropped(engine: Engine, message_ids: list[str]) -> dict[str, Any]:
    with engine.connect() as conn:
        rows = conn.execute(
            text(
                "SELECT message_id, document_id, event, detail FROM stage_events "
                "WHERE message_id = ANY(:ids)"
            ),
            {"ids": message_ids},
        ).all()
    return {row.message_id: row for row in rows}


@pytest.fixture
def forged_worker(settings: Settings, tmp_path: Path) -> Iterator[tuple[Forger, Processes]]:
    """A Redis namespace of its own and the means to start a real worker on it."""
    env = stack_env(settings)
    for stage in STAGES:
        env[f"PIPELINE_{stage.upper()}_MAX_RETRIES"] = "1"
    client: redis.Redis[bytes] = redis.Redis.from_url(settings.broker.url)
    processes = Processes(env, tmp_path)
    yield Forger(client, env["PIPELINE_REDIS_NAMESPACE"]), processes
    processes.stop_all()
    keys = list(client.scan_iter(f"{env['PIPELINE_REDIS_NAMESPACE']}:*", count=1000))
    if keys:
        client.delete(*keys)
    client.close()


def test_forged_messages_change_nothing_outside_the_documents_state_machine(
    client: TestClient[Any],
    worker: Any,
    engine: Engine,
    forged_worker: tuple[Forger, Processes],
    tmp_path: Path,
) -> None:
    forger, processes = forged_worker
    tenant_b = AsKey(client, make_key(engine, tenant=f"tenant-b-{uuid.uuid4().hex[:8]}"))
    victim = upload(tenant_b, b"Tenant B's document. It is private.\n\nSecond paragraph.")
    other = upload(client, b"Tenant default's document, which nobody names.")
    victim_id, other_id = victim.json()["id"], other.json()["id"]
    assert wait_for_document(tenant_b, victim_id)["status"] == "succeeded"
    assert wait_for_document(client, other_id)["status"] == "succeeded"
    before = {document: snapshot(engine, document) for document in (victim_id, other_id)}

    # A pickle of a Dramatiq message whose argument creates a file when unpickled.
    marker, control = tmp_path / "unpickled", tmp_path / "control"
    pickled = forger.raw(
        "validate",
        pickle.dumps(
            {"queue_name": "validate", "actor_name": "validate", "args": [Unpickled(marker)]}
        ),
    )
    pickle.loads(pickle.dumps(Unpickled(control)))
    assert control.exists()  # the payload is live: unpickling it would create the marker

    def naming_victim(stage: str, generation: Any = 1, **extra: Any) -> dict[str, Any]:
        return {"document_id": victim_id, "stage": stage, "generation": generation, **extra}

    duplicates = [forger.message(stage, naming_victim(stage)) for stage in STAGES]
    stale = [
        forger.message("chunk", naming_victim("chunk", 2)),
        forger.message("embed", naming_victim("embed", 7)),
    ]
    invalid = {
        forger.message("embed", naming_victim("index")): "arrived on the 'embed' queue",
        forger.message("extract", naming_victim("extract", tenant="default")): "tenant",
        forger.message("chunk", naming_victim("chunk", "1")): "generation",
        forger.message("index", naming_victim("index", 1.5)): "generation",
        forger.message("index", naming_victim("index", 0)): "generation",
        forger.message("chunk", naming_victim("chunk", -1)): "generation",
        forger.message("embed", naming_victim("embed", 2**40)): "generation",
        forger.message("validate", {"document_id": victim_id}): "stage",
        forger.message("validate", naming_victim("validate", document_id=f"{victim_id}\x00")): (
            "document_id"
        ),
    }
    unknown = forger.message("validate", naming_victim("validate", document_id=str(uuid.uuid4())))
    forged_retries = forger.message(
        "validate",
        naming_victim("validate", document_id=str(uuid.uuid4())),
        options={"retries": "lots"},
    )
    envelope_tampered = forger.raw(
        "extract",
        msgspec.json.encode(
            {
                "queue_name": "extract",
                "actor_name": "extract",
                "args": [naming_victim("extract")],
                "kwargs": {},
                "options": {},
                "message_id": str(uuid.uuid4()),
                "message_timestamp": 0,
                "tenant": "default",
            }
        ),
    )
    letter_ids = [*invalid, unknown, forged_retries, pickled, envelope_tampered]

    processes.worker()
    try:
        wait_until(
            lambda: (
                forger.pending() == 0
                and len(letters(engine, letter_ids)) == len(letter_ids)
                and len(dropped(engine, duplicates + stale)) == len(duplicates + stale)
            ),
            60,
            "the worker to deal with every forged message",
        )
    except AssertionError:
        print(processes.log("worker"))
        print("pending", forger.pending(), "letters", letters(engine, letter_ids).keys())
        raise

    assert not marker.exists()
    found = letters(engine, letter_ids)
    assert found[pickled].error_type == "UndecodableMessage"
    assert found[envelope_tampered].error_type == "UndecodableMessage"
    assert found[unknown].error_type == "UnknownDocument"
    assert found[forged_retries].error_type == "UnknownDocument"
    assert found[forged_retries].attempts == 1  # a forged retry count is not believed
    for message_id, reason in invalid.items():
        assert found[message_id].error_type == "InvalidMessage", found[message_id]
        assert reason in found[message_id].error_message
    assert all(letter.document_id is None for letter in found.values())
    events = dropped(engine, duplicates + stale)
    assert {str(event.document_id) for event in events.values()} == {victim_id}
    assert {event.event for event in events.values()} == {"dropped"}
    for message_id in duplicates:
        assert events[message_id].detail["reason"] == "duplicate: the stage is already succeeded"
    for message_id in stale:
        assert events[message_id].detail["reason"].startswith("stale message")
    assert {document: snapshot(engine, document) for document in before} == before


def test_a_poison_handler_that_fails_does_not_stop_the_consumer(settings: Settings) -> None:
    """The undecodable message is nacked either way; the decodable one behind it is served."""

    def unavailable(queue_name: str, message_id: str, data: bytes, reason: str) -> None:
        raise ConnectionError("Postgres is unavailable")

    namespace = f"{settings.broker.namespace}-poison-{uuid.uuid4().hex[:6]}"
    broker = PipelineRedisBroker(
        url=settings.broker.url, namespace=namespace, middleware=[], on_poison=unavailable
    )
    forger = Forger(broker.client, namespace)
    garbage = forger.raw("validate", b"\x80\x04\x95\x00\x00not json")
    decodable = forger.message("validate", {"document_id": str(uuid.uuid4()), "stage": "validate"})
    consumer = broker.consume("validate", prefetch=2, timeout=100)
    try:
        served = [next(consumer) for _ in range(20)]
        delivered = [message for message in served if message is not None]
        assert [message.message_id for message in delivered[:1]] == [decodable]
        consumer.ack(delivered[0])
        assert broker.client.hexists(f"{namespace}:validate.XQ.msgs", garbage)
    finally:
        consumer.close()
        keys = list(broker.client.scan_iter(f"{namespace}:*", count=1000))
        if keys:
            broker.client.delete(*keys)
