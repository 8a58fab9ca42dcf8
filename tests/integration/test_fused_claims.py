"""Short stages claim and complete in one statement (``CLAIM_AND_SUCCEED_SQL``).

A stage whose policy says ``claim_first=False`` (validate, chunk, index) loads its input
and computes before it touches its row, then takes the row only if it still waits for
its first attempt at the message's generation. These tests drive one executor of their
own (on a Redis namespace no worker reads) and check what the fused path must keep of
the claim-first one: the fence grows, a copy or a stale message changes nothing, a
paused stage's row waits, a failure is recorded against a counted attempt, and an old
message (possibly a redelivery after a crash) claims first.
"""

from __future__ import annotations

import threading
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import dramatiq
import pytest
import redis
from litestar.testing import TestClient
from sqlalchemy import Engine, event, text

from pipeline.broker import make_broker
from pipeline.db.engine import make_engine
from pipeline.engine import transitions
from pipeline.engine.dispatch import Dispatcher
from pipeline.engine.executor import FUSED_MAX_AGE_MS, RETRY_OPTION, Outcome, StageExecutor
from pipeline.http.app import create_app
from pipeline.messages import Delivery, StageMessage
from pipeline.settings import Settings
from pipeline.stages import Compute, Inputs, Outputs
from pipeline.wiring import Wiring
from tests.support.api import bearer, upload
from tests.support.faults import Fault, FaultPlan, PlannedFaults, build_executor

BODY = b"Fused claims. Otters hold hands while they sleep.\n\nA second paragraph to chunk."


@dataclass
class Private:
    client: TestClient[Any]
    engine: Engine
    executor: StageExecutor
    statements: list[str]
    redis: redis.Redis
    namespace: str

    def upload(self, filename: str) -> uuid.UUID:
        response = upload(self.client, BODY, filename)
        assert response.status_code == 202, response.text
        return uuid.UUID(response.json()["id"])


class Crash(BaseException):
    """Stands in for the worker dying mid-work: nothing in the executor catches it."""


class Barrier:
    """Makes two deliveries of validate meet inside ``compute`` (when armed), or makes
    the next one die there (``crash``)."""

    def __init__(self) -> None:
        self.armed: threading.Barrier | None = None
        self.crash = False

    def wrap(self, stage: str, compute: Compute) -> Compute:
        def gated(inputs: Inputs) -> Outputs:
            if stage == "validate" and self.crash:
                self.crash = False
                raise Crash
            if stage == "validate" and self.armed is not None:
                self.armed.wait(timeout=10)
            return compute(inputs)

        return gated


BARRIER = Barrier()


@pytest.fixture(scope="module")
def private(
    settings: Settings, broker: dramatiq.Broker, api_key: str, faults: FaultPlan
) -> Iterator[Private]:
    tag = uuid.uuid4().hex[:6]
    own = settings.replace(broker={"namespace": f"{settings.broker.namespace}-{tag}"})
    dispatcher = Dispatcher(make_broker(own))
    dramatiq.set_broker(broker)  # make_broker made its broker the global one: put it back
    engine = make_engine(own, application_name=f"fused-{tag}")
    statements: list[str] = []

    @event.listens_for(engine, "before_cursor_execute")
    def record(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        statements.append(statement)

    executor = build_executor(
        own,
        dispatcher,
        engine=engine,
        faults=PlannedFaults(faults),
        worker_id=f"fused-{tag}",
        wrap=BARRIER.wrap,
    )
    client = TestClient(create_app(own, dispatcher=dispatcher))
    client.__enter__()
    client.headers.update(bearer(api_key))
    dramatiq.set_broker(broker)
    try:
        yield Private(
            client,
            engine,
            executor,
            statements,
            redis.Redis.from_url(own.broker.url),
            own.broker.namespace,
        )
    finally:
        client.__exit__(None, None, None)
        engine.dispose()


def row(engine: Engine, document_id: uuid.UUID, stage: str) -> dict[str, Any]:
    with engine.connect() as conn:
        found = conn.execute(
            text("SELECT * FROM stage_runs WHERE document_id = :id AND stage = :stage"),
            {"id": document_id, "stage": stage},
        ).mappings()
        return dict(found.one())


def stage_events(engine: Engine, document_id: uuid.UUID, stage: str) -> list[dict[str, Any]]:
    with engine.connect() as conn:
        found = conn.execute(
            text(
                "SELECT event, attempt, message_id, detail FROM stage_events "
                "WHERE document_id = :id AND stage = :stage ORDER BY xact, id"
            ),
            {"id": document_id, "stage": stage},
        ).mappings()
        return [dict(r) for r in found]


def envelope(
    document_id: uuid.UUID, stage: str, generation: int, message_id: str, *, age_ms: int = 0
) -> dramatiq.Message[Any]:
    message = StageMessage(document_id, stage, generation)  # type: ignore[arg-type]
    built: dramatiq.Message[Any] = dramatiq.Message(
        queue_name=stage,
        actor_name=stage,
        args=(message.to_args(),),
        kwargs={},
        options={},
        message_id=message_id,
    )
    return built.copy(message_timestamp=built.message_timestamp - age_ms)


def deliver(private: Private, document_id: uuid.UUID, stage: str, *, age_ms: int = 0) -> Outcome:
    """Deliver the message the stage row waits for (its own id), as a worker would."""
    waiting = row(private.engine, document_id, stage)
    sent = envelope(document_id, stage, waiting["generation"], waiting["message_id"], age_ms=age_ms)
    return private.executor.execute(stage, sent.args[0], Delivery.from_message(sent))


def claims(private: Private, during: Callable[[], object]) -> int:
    """How many claim-first statements ``during`` ran."""
    private.statements.clear()
    during()
    return sum(1 for statement in private.statements if statement == transitions.CLAIM_SQL)


def test_a_short_stage_claims_and_completes_in_one_statement(private: Private) -> None:
    document_id = private.upload("fused-once.txt")
    assert claims(private, lambda: deliver(private, document_id, "validate")) == 0
    validate = row(private.engine, document_id, "validate")
    assert validate["status"] == "succeeded"
    assert (validate["attempts"], validate["fence"]) == (1, 1)
    assert validate["worker_id"].startswith("fused-")
    assert validate["started_at"] <= validate["finished_at"]
    assert validate["deadline_at"] is None
    extract = row(private.engine, document_id, "extract")
    assert extract["status"] == "queued"
    history = stage_events(private.engine, document_id, "validate")
    assert [(e["event"], e["attempt"]) for e in history] == [
        ("queued", None),
        ("claimed", 1),
        ("succeeded", 1),
    ]
    assert history[1]["detail"]["fence"] == 1
    assert history[1]["detail"]["fused"] is True
    assert history[2]["detail"]["kind"] == "text"
    queued = stage_events(private.engine, document_id, "extract")
    assert [(e["event"], e["message_id"]) for e in queued] == [("queued", extract["message_id"])]
    with private.engine.connect() as conn:
        status, kind = conn.execute(
            text("SELECT status, kind FROM documents WHERE id = :id"), {"id": document_id}
        ).one()
    assert (status, kind) == ("processing", "text")


def test_a_copy_of_the_message_is_dropped_after_its_work(private: Private) -> None:
    document_id = private.upload("fused-copy.txt")
    assert deliver(private, document_id, "validate") is Outcome.SUCCEEDED
    first = row(private.engine, document_id, "validate")
    assert deliver(private, document_id, "validate") is Outcome.DROPPED
    assert row(private.engine, document_id, "validate") == first
    history = stage_events(private.engine, document_id, "validate")
    assert [e["event"] for e in history] == ["queued", "claimed", "succeeded", "dropped"]
    assert history[-1]["detail"]["reason"] == "duplicate: the stage is already succeeded"


def test_two_copies_that_computed_at_once_take_the_row_once(private: Private) -> None:
    document_id = private.upload("fused-race.txt")
    BARRIER.armed = threading.Barrier(2)
    outcomes: list[Outcome] = []
    try:
        threads = [
            threading.Thread(target=lambda: outcomes.append(deliver_copy(private, document_id)))
            for _ in range(2)
        ]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=30)
    finally:
        BARRIER.armed = None
    assert sorted(o.value for o in outcomes) == ["dropped", "succeeded"]
    validate = row(private.engine, document_id, "validate")
    assert (validate["status"], validate["attempts"], validate["fence"]) == ("succeeded", 1, 1)
    events = [e["event"] for e in stage_events(private.engine, document_id, "validate")]
    assert events.count("claimed") == events.count("succeeded") == events.count("dropped") == 1


def deliver_copy(private: Private, document_id: uuid.UUID) -> Outcome:
    with private.engine.connect() as conn:
        generation, message_id = conn.execute(
            text(
                "SELECT generation, message_id FROM stage_runs "
                "WHERE document_id = :id AND stage = 'validate'"
            ),
            {"id": document_id},
        ).one()
    sent = envelope(document_id, "validate", generation, message_id)
    return private.executor.execute("validate", sent.args[0], Delivery.from_message(sent))


def test_a_paused_stage_keeps_its_row_waiting_and_stores_nothing(private: Private) -> None:
    document_id = private.upload("fused-paused.txt")
    with private.engine.begin() as conn:
        conn.execute(transitions.pause_stage("validate", "tests", "fused"))
    try:
        assert deliver(private, document_id, "validate") is Outcome.DROPPED
    finally:
        with private.engine.begin() as conn:
            conn.execute(transitions.resume_stage("validate", "tests"))
    validate = row(private.engine, document_id, "validate")
    assert (validate["status"], validate["attempts"], validate["fence"]) == ("queued", 0, 0)
    with private.engine.connect() as conn:
        kind = conn.execute(
            text("SELECT kind FROM documents WHERE id = :id"), {"id": document_id}
        ).scalar_one()
    assert kind is None
    (dropped,) = [
        e for e in stage_events(private.engine, document_id, "validate") if e["event"] == "dropped"
    ]
    assert "paused" in dropped["detail"]["reason"]


def test_a_message_of_an_older_generation_changes_nothing(private: Private) -> None:
    document_id = private.upload("fused-stale.txt")
    with private.engine.begin() as conn:
        conn.execute(transitions.lock_document(document_id))
        conn.execute(transitions.cancel_rows(document_id, 2, "tests"))
        conn.execute(transitions.document_cancelled(document_id, 2, "cancelled by tests"))
    waiting = row(private.engine, document_id, "validate")
    sent = envelope(document_id, "validate", 1, waiting["message_id"])
    outcome = private.executor.execute("validate", sent.args[0], Delivery.from_message(sent))
    assert outcome is Outcome.DROPPED
    assert row(private.engine, document_id, "validate") == waiting
    reason = stage_events(private.engine, document_id, "validate")[-1]["detail"]["reason"]
    assert reason.startswith("stale message: generation 1")


def test_a_failing_short_stage_is_claimed_and_its_failure_counted(
    private: Private, faults: FaultPlan
) -> None:
    faults.add("validate", "fused-flaky.txt", Fault("transient", times=1))
    document_id = private.upload("fused-flaky.txt")
    assert deliver(private, document_id, "validate") is Outcome.RETRYING
    validate = row(private.engine, document_id, "validate")
    assert (validate["status"], validate["attempts"], validate["fence"]) == ("retrying", 1, 1)
    history = stage_events(private.engine, document_id, "validate")
    assert [(e["event"], e["attempt"]) for e in history] == [
        ("queued", None),
        ("claimed", 1),
        ("retrying", 1),
    ]
    assert "fused" not in history[1]["detail"]  # claimed first, once the work had failed
    # The retry the executor sent (delayed) says it is one, so it claims first: the row
    # is ``retrying``, which the fused statement never takes.
    delayed = private.redis.hvals(f"{private.namespace}:validate.DQ.msgs")
    (retry,) = [
        m for m in map(dramatiq.Message.decode, delayed) if m.message_id == validate["message_id"]
    ]
    assert retry.options[RETRY_OPTION] is True
    with private.engine.begin() as conn:
        conn.execute(
            text(
                "UPDATE stage_runs SET retry_at = now() - interval '1 second' "
                "WHERE document_id = :id AND stage = 'validate'"
            ),
            {"id": document_id},
        )
    delivery = Delivery.from_message(retry)
    outcome: list[Outcome] = []
    ran = claims(
        private,
        lambda: outcome.append(private.executor.execute("validate", retry.args[0], delivery)),
    )
    assert (ran, outcome) == (1, [Outcome.SUCCEEDED])
    assert transitions.CLAIM_AND_SUCCEED_SQL not in private.statements  # no work first
    assert row(private.engine, document_id, "validate")["attempts"] == 2


def test_an_old_message_claims_first(private: Private) -> None:
    """A message older than the heartbeat window may be a redelivery after a worker died
    mid-work (which left no trace in the row): it claims first, so that the crash-loop
    count sees every later crash."""
    document_id = private.upload("fused-old.txt")
    old = FUSED_MAX_AGE_MS + 1_000
    assert claims(private, lambda: deliver(private, document_id, "validate", age_ms=old)) == 1
    validate = row(private.engine, document_id, "validate")
    assert (validate["status"], validate["attempts"], validate["fence"]) == ("succeeded", 1, 1)
    claimed = stage_events(private.engine, document_id, "validate")[1]
    assert claimed["event"] == "claimed"
    assert "fused" not in claimed["detail"]


def test_a_claim_first_stage_still_claims_first(private: Private) -> None:
    document_id = private.upload("fused-extract.txt")
    deliver(private, document_id, "validate")
    assert claims(private, lambda: deliver(private, document_id, "extract")) == 1
    assert row(private.engine, document_id, "extract")["status"] == "succeeded"


def test_the_builtin_policies_fuse_only_the_short_pure_stages(settings: Settings) -> None:
    policies = Wiring(settings).policies
    fused = {stage for stage, policy in policies.items() if not policy.claim_first}
    assert fused == {"validate", "chunk", "index"}


def test_a_worker_dying_mid_work_leaves_the_row_waiting_and_its_redelivery_claims_first(
    private: Private,
) -> None:
    document_id = private.upload("fused-crash.txt")
    waiting = row(private.engine, document_id, "validate")
    BARRIER.crash = True
    with pytest.raises(Crash):
        deliver(private, document_id, "validate")
    assert row(private.engine, document_id, "validate") == waiting
    assert [e["event"] for e in stage_events(private.engine, document_id, "validate")] == ["queued"]
    # Dramatiq delivers a dead worker's message again only after its heartbeat timeout.
    redelivered = FUSED_MAX_AGE_MS * 2
    assert claims(private, lambda: deliver(private, document_id, "validate", age_ms=redelivered))
    validate = row(private.engine, document_id, "validate")
    assert (validate["status"], validate["attempts"], validate["fence"]) == ("succeeded", 1, 1)
