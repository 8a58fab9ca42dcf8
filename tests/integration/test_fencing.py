"""Fencing and recovery bounds (issue 11): an attempt that lost its row changes nothing.

What this file proves, against real Postgres and Redis:

- **Fenced completion** (item 2). An attempt that hung past its deadline, was taken over
  by the reconciler, whose stage then died and was replayed, cannot complete over the
  replayed attempt, although both carry attempt number 1 (replay resets the budget): it
  ends ``superseded`` and leaves every row as it was. The same holds after a plain
  takeover and after a rerun, and messages of an earlier generation still in Redis
  after a rerun are dropped as stale.
- **Due retries** (item 3). A ``retrying`` row is not claimed before its retry is due,
  however many copies of its message arrive: they are dropped ("not due").
- **Disconnects during completion** (item 4). When Postgres drops a worker's
  connections mid stage, the failure is still recorded (``retrying``, a database
  error) and the stage is retried within its backoff, not after time limit + slack.
- **Retry counts** (item 6). Dramatiq's own retry count drifting from the row's
  attempts never produces a dead letter for a document that then succeeds.
- **Recovery bounds.** After the stack's Redis namespace is emptied while rows are
  ``running`` and ``retrying``, and after a delayed retry vanishes, every document
  succeeds once within the README's bounds (time limit + slack + a sweep for running
  rows; the retry delay + slack + a sweep for retrying ones), with a 2x margin.

The fencing tests drive a :class:`StageExecutor` by hand: its deliveries run in
threads, a handler's compute blocks on a ``threading.Event`` until the test releases
it, and the messages it, the reconciler and the operator services send for the test's
documents are kept (not sent) so that the test chooses what is delivered and when.
The other tests run real ``pipeline worker`` / ``pipeline reconciler`` subprocesses on a
Redis namespace of their own (the ``make_stack`` pattern of ``test_recovery.py``).
"""

from __future__ import annotations

import signal
import subprocess
import threading
import time
import uuid
from collections import deque
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import dramatiq
import msgspec
import pytest
import redis
from dramatiq.broker import MessageProxy
from litestar.testing import TestClient
from sqlalchemy import Engine, create_engine, text

from pipeline.actors.dead_letters import DeadLetterRecorder
from pipeline.broker import make_broker
from pipeline.db.engine import make_engine
from pipeline.engine.dispatch import Dispatcher
from pipeline.engine.executor import StageExecutor
from pipeline.errors import PermanentError, TransientError
from pipeline.faults import FaultSpec
from pipeline.http.app import create_app
from pipeline.messages import Delivery, StageMessage
from pipeline.operations.common import Operator, RunContext
from pipeline.operations.replay import ReplayService
from pipeline.operations.requests import ReplayRequest, RerunRequest
from pipeline.operations.rerun import RerunService
from pipeline.settings import PolicyOverride, Settings
from pipeline.stages import Compute, Inputs, Outputs, StagePolicy
from pipeline.stages.builtin import PIPELINE
from pipeline.wiring import Wiring
from tests.support.api import bearer, upload
from tests.support.documents import wait_for_document
from tests.support.faults import build_executor
from tests.support.processes import ProcessStack, stack_maker, wait_until

STAGES = PIPELINE.names

RUN = RunContext(operator=Operator(name="fence-tester@ci", via="cli"))
BODY = b"Fencing test document. It has a few sentences.\n\nAnd a second paragraph of text."
BOOT_S = 90.0
"""Longest a worker may take to boot (several test runs may share a small machine)."""
READY = "Worker process is ready for action"
HOLD_S = 30.0
"""Longest a held compute waits for its release: a failing test must not hang."""


# -- shared helpers ------------------------------------------------------------------------


def history(engine: Engine, document_id: str) -> list[dict[str, Any]]:
    """Every stage event of a document, oldest first, with message ids and times."""
    with engine.connect() as conn:
        rows = conn.execute(
            text(
                "SELECT stage, generation, event, attempt, message_id, detail, created_at "
                "FROM stage_events WHERE document_id = :id ORDER BY id"
            ),
            {"id": document_id},
        ).mappings()
        return [dict(row) for row in rows]


def scalar(engine: Engine, sql: str, **params: Any) -> Any:
    with engine.connect() as conn:
        return conn.execute(text(sql), params).scalar()


def stage_row(engine: Engine, document_id: str, stage: str) -> dict[str, Any]:
    with engine.connect() as conn:
        row = (
            conn.execute(
                text("SELECT * FROM stage_runs WHERE document_id = :id AND stage = :stage"),
                {"id": document_id, "stage": stage},
            )
            .mappings()
            .one()
        )
    return dict(row)


def snapshot(engine: Engine, document_id: str) -> dict[str, list[dict[str, Any]]]:
    """Every row a stage attempt could change (all but the append-only event log)."""
    tables = {
        "documents": "SELECT * FROM documents WHERE id = :id",
        "stage_runs": "SELECT * FROM stage_runs WHERE document_id = :id ORDER BY position",
        "dead_letters": "SELECT * FROM dead_letters WHERE document_id = :id ORDER BY id",
        "document_texts": "SELECT * FROM document_texts WHERE document_id = :id",
        "artifacts": "SELECT * FROM artifacts WHERE document_id = :id",
        "chunks": "SELECT id, ordinal, text FROM chunks WHERE document_id = :id ORDER BY ordinal",
    }
    with engine.connect() as conn:
        return {
            name: [dict(row) for row in conn.execute(text(sql), {"id": document_id}).mappings()]
            for name, sql in tables.items()
        }


def assert_applied_once(engine: Engine, document_id: str) -> None:
    """One set of chunks; every stage succeeded, and at most once in any generation."""
    with engine.connect() as conn:
        chunks = conn.execute(
            text(
                "SELECT count(*), count(DISTINCT ordinal), coalesce(max(ordinal) + 1, 0) "
                "FROM chunks WHERE document_id = :id"
            ),
            {"id": document_id},
        ).one()
        succeeded = conn.execute(
            text(
                "SELECT stage, generation, count(*) AS n FROM stage_events "
                "WHERE document_id = :id AND event = 'succeeded' GROUP BY stage, generation"
            ),
            {"id": document_id},
        ).all()
    assert chunks[0] == chunks[1] == chunks[2] > 0, chunks
    assert {row.stage for row in succeeded} == set(STAGES), succeeded
    assert all(row.n == 1 for row in succeeded), succeeded


def stage_message(document_id: str, stage: Any, generation: int, message_id: str) -> Any:
    """A Dramatiq message for a stage with a chosen message id (a copy of one already sent)."""
    args = StageMessage(uuid.UUID(document_id), stage, generation).to_args()
    return dramatiq.Message(
        queue_name=stage,
        actor_name=stage,
        args=(args,),
        kwargs={},
        options={},
        message_id=message_id,
    )


# -- in-process rig: a StageExecutor driven by hand ------------------------------------------


class Kept(msgspec.Struct):
    message: Any
    delay_ms: int | None


class KeepingDispatcher(Dispatcher):
    """Keeps the messages of the test's own documents instead of sending them.

    Messages for any other document (the reconciler sweeps the whole database) go to
    the broker as usual.
    """

    def __init__(self, broker: dramatiq.Broker) -> None:
        super().__init__(broker)
        self.documents: set[str] = set()
        self.kept: list[Kept] = []
        self._lock = threading.Lock()

    def _keep(self, message: Any, delay_ms: int | None) -> bool:
        try:
            document_id = str(message.args[0]["document_id"])
        except (AttributeError, IndexError, KeyError, TypeError):
            return False
        if document_id not in self.documents:
            return False
        with self._lock:
            self.kept.append(Kept(message, delay_ms))
        return True

    def send(self, message: Any, *args: Any, **kwargs: Any) -> None:
        if not self._keep(message, kwargs.get("delay_ms")):
            sender: Any = super().send
            sender(message, *args, **kwargs)

    def send_after_commit(self, message: Any, *, delay_ms: int | None = None) -> bool:
        if self._keep(message, delay_ms):
            return True
        sender: Any = super().send_after_commit
        return bool(sender(message) if delay_ms is None else sender(message, delay_ms=delay_ms))

    def take(self, document_id: str, stage: str) -> Any:
        """The oldest kept message for ``stage`` of the document, removed from the kept ones."""
        with self._lock:
            for index, kept in enumerate(self.kept):
                args = kept.message.args[0]
                if str(args["document_id"]) == document_id and args["stage"] == stage:
                    del self.kept[index]
                    return kept.message
        raise AssertionError(f"no {stage} message was sent for {document_id}: {self.kept}")

    def pending(self, document_id: str) -> list[Any]:
        with self._lock:
            return [
                kept.message
                for kept in self.kept
                if str(kept.message.args[0]["document_id"]) == document_id
            ]


class Hold:
    """One compute call parked until the test releases it."""

    def __init__(self) -> None:
        self.reached = threading.Event()
        self.released = threading.Event()

    def __call__(self) -> None:
        self.reached.set()
        if not self.released.wait(HOLD_S):
            raise TimeoutError("the test never released this attempt")

    def wait_reached(self) -> None:
        assert self.reached.wait(10), "the attempt never reached its compute"


class Scripted:
    """A stage's compute whose calls follow a script, in call order, then do the work."""

    def __init__(self) -> None:
        self.inner: Compute | None = None
        self.script: deque[Callable[[], None]] = deque()
        self._lock = threading.Lock()

    def around(self, inner: Compute) -> Compute:
        self.inner = inner
        return self

    def __call__(self, inputs: Inputs) -> Outputs:
        with self._lock:
            step = self.script.popleft() if self.script else None
        if step is not None:
            step()
        assert self.inner is not None
        return self.inner(inputs)

    def hold(self) -> Hold:
        hold = Hold()
        self.script.append(hold)
        return hold

    def fail(self, error: BaseException) -> None:
        def raise_it() -> None:
            raise error

        self.script.append(raise_it)


class Delivering(threading.Thread):
    """One delivery of a message to the executor, in a thread of its own."""

    def __init__(self, executor: StageExecutor, message: Any) -> None:
        super().__init__(daemon=True)
        self.executor = executor
        self.message = message
        self.outcome: Any = None
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            self.outcome = self.executor.execute(
                self.message.actor_name, self.message.args[0], Delivery.from_message(self.message)
            )
        except BaseException as error:  # reported by the test, not lost in the thread
            self.error = error

    def finish(self) -> None:
        self.join(HOLD_S + 5)
        assert not self.is_alive(), "the delivery did not finish"


TINY = StagePolicy(max_retries=2, min_backoff_ms=100, max_backoff_ms=200, time_limit_ms=300)
"""validate's policy in the rig: a running attempt is overdue 0.3 s + slack after its claim."""


class Rig:
    def __init__(
        self,
        settings: Settings,
        broker: dramatiq.Broker,
        client: TestClient[Any],
        policy: StagePolicy = TINY,
    ):
        overrides = {
            **settings.stages.policy_overrides,
            "validate": PolicyOverride(**msgspec.structs.asdict(policy)),
        }
        self.settings = settings.replace(
            stages={"running_slack_ms": 200, "policy_overrides": overrides},
            database={"pool_size": 8},
        )
        self.client = client
        self.engine = make_engine(self.settings, application_name="fence-rig")
        self.dispatcher = KeepingDispatcher(broker)
        self.validate = Scripted()
        self.executor = build_executor(
            self.settings,
            self.dispatcher,
            engine=self.engine,
            worker_id="fence-rig",
            sandbox=False,
            wrap=lambda name, compute: (
                self.validate.around(compute) if name == "validate" else compute
            ),
        )
        self.reconciler = Wiring(
            self.settings, engine=self.engine, dispatcher=self.dispatcher
        ).reconciler
        self.replay = ReplayService(self.engine, self.dispatcher, self.settings, PIPELINE)
        self.rerun = RerunService(self.engine, self.dispatcher, self.settings, PIPELINE)
        self.threads: list[Delivering] = []
        self.holds: list[Hold] = []

    def upload(self, name: str) -> str:
        """A document whose validate row is queued and whose message was never sent."""
        response = upload(self.client, BODY, name)
        assert response.status_code == 202, response.text
        document_id = str(response.json()["id"])
        self.dispatcher.documents.add(document_id)
        return document_id

    def first_message(self, document_id: str) -> Any:
        row = stage_row(self.engine, document_id, "validate")
        assert row["status"] == "queued", row
        return stage_message(document_id, "validate", 1, row["message_id"])

    def hold(self) -> Hold:
        hold = self.validate.hold()
        self.holds.append(hold)
        return hold

    def start(self, message: Any) -> Delivering:
        delivering = Delivering(self.executor, message)
        self.threads.append(delivering)
        delivering.start()
        return delivering

    def deliver(self, message: Any) -> Delivering:
        delivering = self.start(message)
        delivering.finish()
        return delivering

    def take_over(self, document_id: str) -> Any:
        """Sweep until the reconciler re-sends the document's overdue validate row."""

        def resent() -> bool:
            self.reconciler.sweep()
            return any(
                m.args[0]["stage"] == "validate" for m in self.dispatcher.pending(document_id)
            )

        wait_until(resent, 10, "the reconciler to re-send the overdue running row", 0.1)
        return self.dispatcher.take(document_id, "validate")

    def drain(self, document_id: str) -> dict[str, Any]:
        """Deliver the document's kept messages, in order, until it is finished."""
        for _ in range(20):
            status = scalar(
                self.engine, "SELECT status FROM documents WHERE id = :id", id=document_id
            )
            if status in ("succeeded", "failed"):
                break
            pending = self.dispatcher.pending(document_id)
            assert pending, f"document {status} with no message left to deliver"
            message = self.dispatcher.take(document_id, pending[0].args[0]["stage"])
            delivering = self.deliver(message)
            assert delivering.error is None, delivering.error
        document = self.client.get(f"/documents/{document_id}").json()
        assert isinstance(document, dict)
        return document

    def close(self) -> None:
        for hold in self.holds:
            hold.released.set()
        for delivering in self.threads:
            delivering.join(HOLD_S + 5)
        self.engine.dispose()


@pytest.fixture(scope="module")
def quiet_client(settings: Settings, api_key: str) -> Iterator[TestClient[Any]]:
    """The API, except that it sends no message for ``fence-*`` uploads: the rig delivers."""
    quiet = msgspec.structs.replace(
        settings, faults=(FaultSpec(stage="upload", match="fence-*", drop_send=True),)
    )
    with TestClient(create_app(quiet)) as client:
        client.headers.update(bearer(api_key))
        yield client


@pytest.fixture
def rig(
    settings: Settings, broker: dramatiq.Broker, quiet_client: TestClient[Any]
) -> Iterator[Rig]:
    rig = Rig(settings, broker, quiet_client)
    try:
        yield rig
    finally:
        rig.close()


def brief(events: list[dict[str, Any]]) -> list[tuple[Any, ...]]:
    """A document's history, short enough for an assertion message."""
    return [
        (e["stage"], e["event"], e["attempt"], (e["detail"] or {}).get("reason")) for e in events
    ]


def superseded_by(events: list[dict[str, Any]], message_id: str) -> list[dict[str, Any]]:
    return [e for e in events if e["event"] == "superseded" and e["message_id"] == message_id]


# -- item 2: fenced completion -----------------------------------------------------------


def test_a_hung_attempt_cannot_complete_over_the_replay_of_its_stage(rig: Rig) -> None:
    """Attempt 1 hangs, is taken over, attempt 2 dies, the letter is replayed and the replay
    claims (as attempt 1 again); then the hung attempt 1 finishes: it must be superseded,
    not accepted in the replay's place."""
    document_id = rig.upload("fence-replay.txt")
    first = rig.first_message(document_id)
    hung = rig.hold()
    rig.validate.fail(PermanentError("the second attempt fails for good"))
    replay_held = rig.hold()

    attempt1 = rig.start(first)
    hung.wait_reached()
    resent = rig.take_over(document_id)
    attempt2 = rig.deliver(resent)
    assert attempt2.error is None, attempt2.error
    assert stage_row(rig.engine, document_id, "validate")["status"] == "dead"
    letter_id = scalar(
        rig.engine,
        "SELECT id FROM dead_letters WHERE document_id = :id AND status = 'dead'",
        id=document_id,
    )
    assert letter_id is not None, "the second attempt left no dead letter"

    replayed = rig.replay.replay(ReplayRequest(ids=[letter_id], reason="fixed"), RUN)
    assert [item.action for item in replayed.items] == ["replayed"], replayed
    replay_message = rig.dispatcher.take(document_id, "validate")
    attempt3 = rig.start(replay_message)
    replay_held.wait_reached()
    claims = [
        e
        for e in history(rig.engine, document_id)
        if e["event"] == "claimed" and e["message_id"] == replay_message.message_id
    ]
    assert len(claims) == 1, claims
    before = snapshot(rig.engine, document_id)

    hung.released.set()  # the hung attempt 1 finishes now, while the replay still works
    attempt1.finish()
    assert attempt1.error is None, attempt1.error
    events = history(rig.engine, document_id)
    assert superseded_by(events, first.message_id), (
        f"the hung attempt 1 ({first.message_id}) was not superseded: "
        f"{[(e['event'], e['attempt'], e['message_id']) for e in events if e['stage']]}"
    )
    assert not [
        e for e in events if e["event"] == "succeeded" and e["message_id"] == first.message_id
    ]
    assert snapshot(rig.engine, document_id) == before, "the superseded attempt changed rows"

    replay_held.released.set()
    attempt3.finish()
    assert attempt3.error is None, attempt3.error
    events = history(rig.engine, document_id)
    accepted = [e for e in events if e["stage"] == "validate" and e["event"] == "succeeded"]
    assert [e["message_id"] for e in accepted] == [replay_message.message_id]
    assert not superseded_by(events, replay_message.message_id)
    assert stage_row(rig.engine, document_id, "validate")["status"] == "succeeded"
    assert stage_row(rig.engine, document_id, "extract")["status"] == "queued"
    document = rig.drain(document_id)
    assert document["status"] == "succeeded", document
    assert_applied_once(rig.engine, document_id)


def _rerun(rig: Rig, document_id: str) -> Any:
    report = rig.rerun.rerun(RerunRequest(from_stage="validate", ids=[uuid.UUID(document_id)]), RUN)
    assert [item.action for item in report.items] == ["rerun"], report
    return rig.dispatcher.take(document_id, "validate")


@pytest.mark.parametrize("how", ["takeover", "rerun"])
def test_an_attempt_that_lost_its_row_is_superseded_and_changes_nothing(rig: Rig, how: str) -> None:
    """Attempt 1 hangs; its row is taken over (the reconciler re-sends the overdue running row)
    or the document is re-run; the new attempt claims; attempt 1 finishing then is
    superseded and changes nothing, and the new attempt's completion is the one kept."""
    document_id = rig.upload(f"fence-{how}.txt")
    first = rig.first_message(document_id)
    hung = rig.hold()
    newer_held = rig.hold()

    attempt1 = rig.start(first)
    hung.wait_reached()
    newer = rig.take_over(document_id) if how == "takeover" else _rerun(rig, document_id)
    attempt2 = rig.start(newer)
    newer_held.wait_reached()
    before = snapshot(rig.engine, document_id)

    hung.released.set()
    attempt1.finish()
    assert attempt1.error is None, attempt1.error
    assert superseded_by(history(rig.engine, document_id), first.message_id)
    assert snapshot(rig.engine, document_id) == before, "the superseded attempt changed rows"

    newer_held.released.set()
    attempt2.finish()
    assert attempt2.error is None, attempt2.error
    accepted = [
        e
        for e in history(rig.engine, document_id)
        if e["stage"] == "validate" and e["event"] == "succeeded"
    ]
    assert [e["message_id"] for e in accepted] == [newer.message_id]
    document = rig.drain(document_id)
    assert document["status"] == "succeeded", document
    assert_applied_once(rig.engine, document_id)


def test_messages_of_an_earlier_generation_still_in_redis_are_dropped_after_a_rerun(
    client: TestClient[Any],
    engine: Engine,
    broker: dramatiq.Broker,
    worker: Any,
    rerun_service: RerunService,
) -> None:
    """A rerun from chunk moves the document to generation 2 while generation-1 messages for
    chunk, embed and index are still in flight: each is dropped as stale, and the rerun's
    own run is applied once."""
    response = upload(client, BODY, "stale-after-rerun.txt")
    document_id = str(response.json()["id"])
    assert wait_for_document(client, document_id)["status"] == "succeeded"
    report = rerun_service.rerun(
        RerunRequest(from_stage="chunk", ids=[uuid.UUID(document_id)]), RUN
    )
    assert [item.action for item in report.items] == ["rerun"], report
    dispatcher = Dispatcher(broker)
    stale = [
        dispatcher.build(StageMessage(uuid.UUID(document_id), stage, 1))
        for stage in ("chunk", "embed", "index")
    ]
    for message in stale:
        dispatcher.send(message)
    stale_ids = {message.message_id for message in stale}

    def dropped() -> list[dict[str, Any]]:
        return [
            e
            for e in history(engine, document_id)
            if e["event"] == "dropped" and e["message_id"] in stale_ids
        ]

    wait_until(lambda: len(dropped()) == 3, 20, "the three stale messages to be dropped")
    for event in dropped():
        assert event["detail"]["reason"].startswith("stale message"), event
    document = wait_for_document(client, document_id)
    assert document["status"] == "succeeded"
    assert scalar(engine, "SELECT generation FROM documents WHERE id = :id", id=document_id) == 2
    assert_applied_once(engine, document_id)


# -- subprocess stacks ------------------------------------------------------------------------


def test_a_retry_that_arrives_before_it_is_due_is_sent_again_for_when_it_is(
    settings: Settings, broker: dramatiq.Broker, quiet_client: TestClient[Any]
) -> None:
    """The executor sends its own retry, delayed by the backoff; if that very message is
    delivered before the row is due (the worker's clock and Postgres's disagree), it
    claims nothing and burns no attempt: it is sent again, with the same id, to arrive
    when the row is due."""
    slow = StagePolicy(max_retries=2, min_backoff_ms=3_000, max_backoff_ms=4_000)
    rig = Rig(settings, broker, quiet_client, policy=slow)
    try:
        document_id = rig.upload("fence-early-retry.txt")
        rig.validate.fail(TransientError("a flaky dependency"))
        failed = rig.deliver(rig.first_message(document_id))
        assert failed.error is None
        assert failed.outcome.value == "retrying"
        retry = rig.dispatcher.take(document_id, "validate")
        row = stage_row(rig.engine, document_id, "validate")
        assert (row["status"], row["message_id"]) == ("retrying", retry.message_id)

        early = rig.deliver(retry)  # long before its 3-4 s backoff is over
        assert early.outcome.value == "dropped"
        row = stage_row(rig.engine, document_id, "validate")
        assert (row["status"], row["attempts"]) == ("retrying", 1)
        (dropped,) = [e for e in history(rig.engine, document_id) if e["event"] == "dropped"]
        assert dropped["detail"]["reason"].startswith("not due")
        (again,) = [k for k in rig.dispatcher.kept if k.message.message_id == retry.message_id]
        assert again.delay_ms is not None
        assert 1_000 < again.delay_ms <= 4_000

        wait_until(
            lambda: scalar(
                rig.engine,
                "SELECT retry_at <= now() FROM stage_runs WHERE document_id = :id "
                "AND stage = 'validate'",
                id=document_id,
            ),
            10,
            "the retry to be due",
        )
        assert rig.drain(document_id)["status"] == "succeeded"
        assert stage_row(rig.engine, document_id, "validate")["attempts"] == 2
    finally:
        rig.close()


@contextmanager
def refusing_connections(engine: Engine, application_name: str) -> Iterator[None]:
    """Postgres as if it went away for these connections: the database takes no new
    connection, and the open ones of ``application_name`` are terminated."""
    database = engine.url.database
    admin = create_engine(engine.url.set(database="postgres"), isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as conn:
            conn.execute(text(f'ALTER DATABASE "{database}" WITH ALLOW_CONNECTIONS false'))
            conn.execute(
                text(
                    "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                    "WHERE datname = :db AND application_name = :app"
                ),
                {"db": database, "app": application_name},
            )
        yield
    finally:
        with admin.connect() as conn:
            conn.execute(text(f'ALTER DATABASE "{database}" WITH ALLOW_CONNECTIONS true'))
        admin.dispose()


def test_an_attempt_whose_outcome_could_not_be_recorded_is_taken_over_by_its_worker(
    settings: Settings, broker: dramatiq.Broker, quiet_client: TestClient[Any]
) -> None:
    """Postgres refuses connections while an attempt completes: its outcome cannot be
    recorded, the row stays ``running`` and the error escapes to Dramatiq. When Dramatiq
    re-delivers the message to the same worker, the worker knows the attempt is no longer
    running and takes it over at once (a new fence), instead of waiting out the row's
    deadline (a minute here); another worker still sees a live holder and drops it."""
    long = StagePolicy(max_retries=2, min_backoff_ms=100, max_backoff_ms=200, time_limit_ms=60_000)
    rig = Rig(settings, broker, quiet_client, policy=long)
    other = StageExecutor(
        rig.engine,
        rig.dispatcher,
        rig.executor.stages,
        rig.executor.artifacts,
        rig.settings,
        rig.executor.faults,
        worker_id="other-worker",
    )
    try:
        document_id = rig.upload("fence-abandoned.txt")
        message = rig.first_message(document_id)
        hold = rig.hold()
        first = rig.start(message)
        hold.wait_reached()
        with refusing_connections(rig.engine, "fence-rig"):
            hold.released.set()
            first.finish()
        assert isinstance(first.error, Exception), first.outcome  # escaped: nothing recorded
        row = stage_row(rig.engine, document_id, "validate")
        assert (row["status"], row["worker_id"], row["fence"]) == ("running", "fence-rig", 1)

        elsewhere = Delivering(other, message)
        elsewhere.start()
        elsewhere.finish()
        assert elsewhere.error is None
        assert elsewhere.outcome.value == "dropped"

        again = rig.deliver(message)  # Dramatiq's re-delivery, to the same worker
        assert again.error is None, again.error
        assert again.outcome.value == "succeeded"
        row = stage_row(rig.engine, document_id, "validate")
        assert (row["status"], row["attempts"], row["fence"]) == ("succeeded", 2, 2)
        claims = [
            e
            for e in history(rig.engine, document_id)
            if e["stage"] == "validate" and e["event"] == "claimed"
        ]
        assert [c["detail"]["fence"] for c in claims] == [1, 2]
        assert rig.drain(document_id)["status"] == "succeeded"
        assert_applied_once(rig.engine, document_id)
    finally:
        rig.close()


class Stack(ProcessStack):
    body = BODY

    def stage(self, document_id: str, stage: str) -> dict[str, Any]:
        return stage_row(self.engine, document_id, stage)

    def events(self, document_id: str) -> list[dict[str, Any]]:
        return history(self.engine, document_id)

    def logs(self) -> str:
        return "\n".join(
            f"--- {path.stem} ---\n{path.read_text(errors='replace')[-6000:]}"
            for path in sorted(self.processes.logs.glob("*.log"))
        )

    def wait_done(self, ids: list[str], timeout: float) -> None:
        def done() -> bool:
            return all(self.status(i) in ("succeeded", "failed") for i in ids)

        try:
            wait_until(done, timeout, f"{len(ids)} document(s) to finish")
        except AssertionError:
            print(self.logs())
            for document_id in ids:
                print(
                    document_id,
                    [(e["stage"], e["event"], e["attempt"]) for e in self.events(document_id)],
                )
            raise

    def worker(self, *extra: str, name: str = "worker") -> subprocess.Popen[bytes]:
        """A ``pipeline worker`` that is ready for action (booting is slow on a busy machine)."""
        process = self.processes.worker(*extra, name=name)
        self.wait_ready(process, name)
        return process

    def wait_ready(self, process: subprocess.Popen[bytes], name: str) -> None:
        wait_until(
            lambda: READY in self.processes.log(name) or process.poll() is not None,
            BOOT_S,
            f"{name} to boot",
            0.2,
        )
        assert process.poll() is None, self.processes.log(name)

    def reconciler(self) -> subprocess.Popen[bytes]:
        """A ``pipeline reconciler`` that is sweeping (it holds the advisory lock)."""
        process = self.processes.reconciler()
        wait_until(
            lambda: (
                "reconciler: active" in self.processes.log("reconciler")
                or process.poll() is not None
            ),
            BOOT_S,
            "the reconciler to start sweeping",
            0.2,
        )
        assert process.poll() is None, self.processes.log("reconciler")
        return process

    def sender(self) -> Dispatcher:
        """A dispatcher on the stack's namespace (leaving the process's global broker be)."""
        previous = dramatiq.broker.global_broker
        broker = make_broker(self.settings)
        dramatiq.broker.global_broker = previous
        return Dispatcher(broker)

    def redis(self) -> Any:
        return redis.Redis.from_url(self.settings.broker.url)

    def empty_namespace(self) -> int:
        """Delete every key of this stack's namespace (and only of this one)."""
        client = self.redis()
        keys = list(client.scan_iter(match=f"{self.namespace}:*", count=1000))
        if keys:
            client.delete(*keys)
        client.close()
        return len(keys)


@pytest.fixture
def make_stack(
    settings: Settings, engine: Engine, tmp_path: Path, api_key: str
) -> Iterator[Callable[..., Stack]]:
    with stack_maker(settings, engine, tmp_path, api_key, Stack) as make:
        yield make


def first_event(
    events: list[dict[str, Any]], stage: str, event: str, attempt: int | None = None
) -> dict[str, Any] | None:
    for e in events:
        if (
            e["stage"] == stage
            and e["event"] == event
            and (attempt is None or e["attempt"] == attempt)
        ):
            return e
    return None


# -- item 3: a retrying row waits until it is due ---------------------------------------------


@pytest.mark.slow
def test_a_retrying_row_is_not_claimed_before_its_retry_is_due(
    make_stack: Callable[..., Stack],
) -> None:
    """validate fails transiently on attempt 1 with a long backoff (5 to 10 s); then six
    copies of its original message arrive within ~100 ms (as a reconciler or a forger
    would send them). None may claim the row before it is due: the copies are dropped
    ("not due"), and the due retry is attempt 2."""
    stack = make_stack(
        [{"stage": "validate", "match": "due-*", "transient_attempts": 1}],
        PIPELINE_VALIDATE_MIN_BACKOFF_S="5",
        PIPELINE_VALIDATE_MAX_BACKOFF_S="10",
    )
    stack.worker()
    document_id = stack.upload("due-1.txt")
    wait_until(
        lambda: first_event(stack.events(document_id), "validate", "retrying", 1) is not None,
        30,
        "validate attempt 1 to fail",
    )
    queued = first_event(stack.events(document_id), "validate", "queued")
    assert queued is not None
    original = queued["message_id"]
    sender = stack.sender()
    for _ in range(6):
        sender.send(stage_message(document_id, "validate", 1, original))

    def handled() -> int:
        return sum(
            1
            for e in stack.events(document_id)
            if e["message_id"] == original and e["event"] in ("claimed", "dropped")
        )

    wait_until(lambda: handled() >= 7, 10, "the six copies to be handled")
    row = stack.stage(document_id, "validate")
    assert row["attempts"] == 1, (
        f"a copy claimed the retrying row before it was due: attempts {row['attempts']}, "
        f"{brief(stack.events(document_id))}"
    )
    copies = [
        e
        for e in stack.events(document_id)
        if e["message_id"] == original and e["event"] == "dropped"
    ]
    assert len(copies) == 6, copies
    for event in copies:
        assert event["detail"]["reason"].startswith("not due"), event

    def early() -> tuple[int, bool]:
        """The row's attempts, and whether its retry is not due yet (one snapshot)."""
        with stack.engine.connect() as conn:
            attempts, not_due = conn.execute(
                text(
                    "SELECT attempts, coalesce(retry_at > now(), false) FROM stage_runs "
                    "WHERE document_id = :id AND stage = 'validate'"
                ),
                {"id": document_id},
            ).one()
        return int(attempts), bool(not_due)

    until = time.monotonic() + 15  # retry_at is at most the 10 s backoff away
    while (state := early())[1] and time.monotonic() < until:
        assert state[0] == 1, "the row was claimed before its retry was due"
        time.sleep(0.1)
    stack.wait_done([document_id], timeout=30)
    assert stack.status(document_id) == "succeeded"
    assert stack.stage(document_id, "validate")["attempts"] == 2
    assert_applied_once(stack.engine, document_id)


# -- item 4: a dropped connection during completion ------------------------------------------


def descendants(pid: int) -> set[int]:
    """``pid`` and every process below it (a worker group's Dramatiq processes)."""
    found, pending = {pid}, [pid]
    while pending:
        for task in Path(f"/proc/{pending.pop()}/task").glob("*"):
            try:
                children = (task / "children").read_text().split()
            except OSError:
                continue
            for child in map(int, children):
                if child not in found:
                    found.add(child)
                    pending.append(child)
    return found


def backends_of(engine: Engine, worker: subprocess.Popen[bytes]) -> list[int]:
    """The Postgres sessions of a worker group, in this run's database only (other runs
    share the server): its connections are named ``pipeline-worker:<host>:<pid>``."""
    pids = descendants(worker.pid)
    with engine.connect() as conn:
        rows = conn.execute(
            text(
                "SELECT pid, application_name FROM pg_stat_activity "
                "WHERE application_name LIKE 'pipeline-worker:%' "
                "AND datname = current_database()"
            )
        ).all()
    return [pid for pid, name in rows if name.rsplit(":", 1)[1] in {str(p) for p in pids}]


@pytest.mark.slow
@pytest.mark.parametrize("stage", ["extract", "index"])
def test_a_connection_dropped_during_completion_is_retried_within_the_backoff(
    make_stack: Callable[..., Stack], stage: str
) -> None:
    """Postgres terminates the worker's connections (the delivery's and the idle pooled
    ones) while the stage's attempt 1 works (40 s time limit, 20 s slack); its completion
    then fails on a dead connection. The failure must still be written (a ``retrying``
    event with a database error) and the stage retried within its backoff, not left
    ``running`` until time limit + slack + a sweep.

    ``index`` is the case the old engine got wrong: with no next message to build, the
    completion's first statement fails inside psycopg's own transaction block, the pool
    still hands out its other dead connection, and the ``retrying`` write fails too.
    (For ``extract`` the old engine happened to survive: the fault hook's filename read
    goes through SQLAlchemy first, which refreshes the whole pool.)"""
    stack = make_stack(
        [{"stage": stage, "match": "drop-*", "sleep_s": 1.5}],
        **{f"PIPELINE_{stage.upper()}_TIME_LIMIT_S": "40"},
        PIPELINE_RUNNING_SLACK_S="20",
    )
    worker = stack.worker()
    stack.reconciler()
    # Both worker threads at work at once, so that the pool holds an idle connection too.
    for round_ in range(5):
        warm = [stack.upload(f"warm-{round_}-{i}.txt", BODY + f" {i}".encode()) for i in range(4)]
        stack.wait_done(warm, timeout=60)
        if len(backends_of(stack.engine, worker)) >= 2:
            break
    document_id = stack.upload("drop-1.txt")
    wait_until(
        lambda: stack.stage(document_id, stage)["status"] == "running", 30, f"{stage} to run"
    )
    with stack.engine.connect() as conn:
        terminated, dropped_at = conn.execute(
            text(
                "SELECT count(*) FILTER (WHERE pg_terminate_backend(pid)), clock_timestamp() "
                "FROM unnest(CAST(:pids AS integer[])) AS pid"
            ),
            {"pids": backends_of(stack.engine, worker)},
        ).one()
    assert terminated >= 2, f"{terminated} worker connection(s): the pool had no idle one"

    def retrying() -> dict[str, Any] | None:
        return first_event(stack.events(document_id), stage, "retrying", 1)

    try:
        wait_until(lambda: retrying() is not None, 12, f"a retrying event for {stage} attempt 1")
    except AssertionError:
        print(stack.logs())
        raise AssertionError(
            f"no retrying event after the disconnect; {stage} is "
            f"{stack.stage(document_id, stage)['status']}: {brief(stack.events(document_id))}"
        ) from None
    event = retrying()
    assert event is not None
    assert "database error" in event["detail"]["error"], event
    stack.wait_done([document_id], timeout=60)
    assert stack.status(document_id) == "succeeded"
    retried = first_event(stack.events(document_id), stage, "claimed", 2)
    assert retried is not None, brief(stack.events(document_id))
    took = (retried["created_at"] - dropped_at).total_seconds()
    assert took <= 15, f"{stage} was retried {took:.1f} s after the disconnect"
    assert_applied_once(stack.engine, document_id)


# -- item 6: Dramatiq's retry count is not the row's ------------------------------------------


@pytest.mark.slow
def test_a_drifted_dramatiq_retry_count_makes_no_dead_letter(
    make_stack: Callable[..., Stack],
) -> None:
    """The validate message arrives with Dramatiq's retry count already at the stage's
    max_retries (as if earlier escaped errors had advanced it) and attempt 1 fails
    transiently: the document must be retried and succeed, with no dead letter at all."""
    stack = make_stack(
        [
            {"stage": "upload", "match": "drift-*", "drop_send": True},
            {"stage": "validate", "match": "drift-*", "transient_attempts": 1},
        ],
        PIPELINE_VALIDATE_MAX_RETRIES="2",
    )
    document_id = stack.upload("drift-1.txt")
    sender = stack.sender()
    built = sender.build(StageMessage(uuid.UUID(document_id), "validate", 1))
    envelope = built.copy(options={"retries": 2})  # Dramatiq's count, already at max_retries
    with stack.engine.begin() as conn:  # point the row at our message, as the API would have
        conn.execute(
            text(
                "UPDATE stage_runs SET message_id = :m WHERE document_id = :id "
                "AND stage = 'validate'"
            ),
            {"m": envelope.message_id, "id": document_id},
        )
    sender.send(envelope)
    stack.worker()
    stack.reconciler()
    stack.wait_done([document_id], timeout=40)
    assert stack.status(document_id) == "succeeded"
    letters = scalar(
        stack.engine, "SELECT count(*) FROM dead_letters WHERE document_id = :id", id=document_id
    )
    assert letters == 0, (
        f"{letters} dead letter(s) for a document that succeeded: "
        f"{[(e['stage'], e['event'], e['attempt']) for e in stack.events(document_id)]}"
    )
    assert first_event(stack.events(document_id), "validate", "retrying", 1) is not None
    assert_applied_once(stack.engine, document_id)


# -- recovery bounds -----------------------------------------------------------------------


RECONCILER_INTERVAL_S = 0.5
RUNNING_SLACK_S = 1.0
CHUNK_TIME_LIMIT_S = 4.0
"""The stack's short settings (``stack_env``), which the bounds below are made of."""


def took_s(earlier: dict[str, Any] | None, later: dict[str, Any] | None) -> float:
    """Seconds between two events, by the database's clock."""
    assert earlier is not None
    assert later is not None
    return float((later["created_at"] - earlier["created_at"]).total_seconds())


@pytest.mark.slow
def test_emptying_redis_under_running_and_retrying_rows_recovers_within_the_bounds(
    make_stack: Callable[..., Stack],
) -> None:
    """Every key of the stack's namespace is deleted while one document's chunk is running
    (sleeping) and another's embed is retrying (transient fault, 4 s backoff): both
    succeed, once, each stage recovered within its README bound with a 2x margin
    (running: time limit + slack + a sweep from its claim; retrying: the delay + slack +
    a sweep from its ``retrying`` event)."""
    backoff_s = 4.0
    stack = make_stack(
        [
            {"stage": "chunk", "match": "flush-run-*", "sleep_s": 3},
            {"stage": "embed", "match": "flush-retry-*", "transient_attempts": 1},
        ],
        PIPELINE_EMBED_MIN_BACKOFF_S=str(backoff_s),
        PIPELINE_EMBED_MAX_BACKOFF_S=str(backoff_s),
    )
    stack.worker()
    stack.reconciler()
    running = stack.upload("flush-run-1.txt")
    retrying = stack.upload("flush-retry-1.txt", BODY + b" The retrying one.")

    def both_in_place() -> bool:
        return bool(
            stack.stage(running, "chunk")["status"] == "running"
            and stack.stage(retrying, "embed")["status"] == "retrying"
        )

    try:
        wait_until(both_in_place, 30, "chunk running and embed retrying", 0.05)
    except AssertionError:
        print(stack.logs())
        print(brief(stack.events(running)), brief(stack.events(retrying)))
        raise
    flushed_at = scalar(stack.engine, "SELECT clock_timestamp()")
    assert stack.empty_namespace() > 0
    stack.wait_done([running, retrying], timeout=60)

    chunk = stack.events(running)
    finished = first_event(chunk, "chunk", "succeeded")
    assert finished is not None
    assert finished["created_at"] > flushed_at, "chunk finished before the flush"
    bound = 2 * (CHUNK_TIME_LIMIT_S + RUNNING_SLACK_S + RECONCILER_INTERVAL_S)
    assert took_s(first_event(chunk, "chunk", "claimed", 1), finished) <= bound, brief(chunk)

    embed = stack.events(retrying)
    retried = first_event(embed, "embed", "claimed", 2)
    assert retried is not None, brief(embed)
    assert retried["created_at"] > flushed_at, "embed was retried before the flush"
    bound = 2 * (backoff_s + RUNNING_SLACK_S + RECONCILER_INTERVAL_S)
    assert took_s(first_event(embed, "embed", "retrying", 1), retried) <= bound, brief(embed)

    for document_id in (running, retrying):
        assert stack.status(document_id) == "succeeded"
        assert_applied_once(stack.engine, document_id)


@pytest.mark.slow
def test_a_delayed_retry_that_vanishes_is_recovered_within_delay_slack_and_a_sweep(
    make_stack: Callable[..., Stack],
) -> None:
    """embed fails transiently; after its ``retrying`` event the delayed retry is lost: the
    ``embed.DQ`` queue and its messages are deleted. (Dramatiq workers prefetch delayed
    messages and hold them in memory until due, so the worker that holds it is killed
    too; a standby worker, booted beforehand and frozen until then, takes over.) The
    reconciler must re-send it, and the retry must run within delay + slack + a sweep of
    the ``retrying`` event, with a 2x margin."""
    backoff_s = 4.0
    stack = make_stack(
        [{"stage": "embed", "match": "vanish-*", "transient_attempts": 1}],
        PIPELINE_EMBED_MIN_BACKOFF_S=str(backoff_s),
        PIPELINE_EMBED_MAX_BACKOFF_S=str(backoff_s),
    )
    standby = stack.processes.worker(name="standby")
    worker = stack.processes.worker()
    stack.wait_ready(standby, "standby")
    stack.wait_ready(worker, "worker")
    stack.processes.signal_group(standby, signal.SIGSTOP)  # before any message exists
    try:
        stack.reconciler()
        document_id = stack.upload("vanish-1.txt")
        wait_until(
            lambda: first_event(stack.events(document_id), "embed", "retrying", 1) is not None,
            30,
            "embed attempt 1 to fail",
        )
        client = stack.redis()
        delayed = f"{stack.namespace}:embed.DQ"
        wait_until(lambda: bool(client.exists(f"{delayed}.msgs")), 5, "the delayed retry")
        stack.processes.kill(worker)
        client.delete(delayed, f"{delayed}.msgs")
        client.close()
    finally:
        stack.processes.signal_group(standby, signal.SIGCONT)
    stack.wait_done([document_id], timeout=60)
    assert stack.status(document_id) == "succeeded"
    events = stack.events(document_id)
    assert first_event(events, "embed", "resent") is not None, "not re-sent by the reconciler"
    bound = 2 * (backoff_s + RUNNING_SLACK_S + RECONCILER_INTERVAL_S)
    took = took_s(
        first_event(events, "embed", "retrying", 1), first_event(events, "embed", "claimed", 2)
    )
    assert took <= bound, brief(events)
    assert_applied_once(stack.engine, document_id)


def test_dramatiq_giving_up_on_a_stage_message_makes_no_dead_letter(
    executor: StageExecutor, engine: Engine, broker: dramatiq.Broker, quiet_client: TestClient[Any]
) -> None:
    """Dramatiq nacks a stage message whose errors all happened outside any attempt (no
    database to claim from): no attempt failed, so no dead letter; a ``dropped`` event
    says why, and the unfinished row keeps its deadline for the reconciler. A message
    naming no document is still poison."""
    response = upload(quiet_client, BODY, "fence-gave-up.txt")
    assert response.status_code == 202, response.text
    document_id = str(response.json()["id"])
    recorder = DeadLetterRecorder(executor.poison, executor.given_up, STAGES)

    def nack(target: str) -> dramatiq.Message[Any]:
        message = stage_message(target, "validate", 1, str(uuid.uuid4()))
        proxy = MessageProxy(message.copy(options={"retries": 3}))
        proxy.stuff_exception(ConnectionError("Postgres did not answer"))
        recorder.after_nack(broker, proxy)
        return message

    given_up = nack(document_id)
    assert (
        scalar(engine, "SELECT count(*) FROM dead_letters WHERE document_id = :id", id=document_id)
        == 0
    )
    (dropped,) = [e for e in history(engine, document_id) if e["event"] == "dropped"]
    assert dropped["message_id"] == given_up.message_id
    assert "Dramatiq gave up" in dropped["detail"]["reason"]
    row = stage_row(engine, document_id, "validate")
    assert row["status"] == "queued"
    assert row["deadline_at"] is not None

    missing = str(uuid.uuid4())
    poison = nack(missing)
    letter = scalar(
        engine, "SELECT error_type FROM dead_letters WHERE message_id = :m", m=poison.message_id
    )
    assert letter == "UnknownDocument"
