"""A stateful model of the stage engine: random interleavings, invariants after every step.

Hypothesis drives the real ``StageExecutor`` from several simulated workers against the
real Postgres database. Messages travel on an in-memory bus (a ``Dispatcher`` that keeps
what it is given), so a step can deliver any message on it, deliver again a copy of one
sent before (Redis delivers at least once; a copy may be of an older generation), or lose
one (a Redis flush). A delivery runs ``execute`` in a thread of its own, which claims the
stage and then parks in the handler's ``compute`` until a later step finishes it (with
the real result, a transient or a permanent failure), or returns at once (dropped).
Between those steps the clock jumps (deadlines and due times an hour earlier), the
reconciler sweeps, and an operator re-runs a document or replays or discards a dead
letter. Every step runs until its threads park or return before the next one starts, so
the interleaving is exactly the one Hypothesis chose, and a failing one replays.

Besides the single moves there are a few composite ones, each a sequence of the single
moves that is too unlikely at random for 40 examples to reach reliably: calm progress down
a document's stages (so that every stage sees races), a takeover (the clock jumps and a
parked attempt's own message is delivered again), a transient failure answered at once by
a copy of its message, and a takeover whose new attempt dies and is replayed at once while
the first attempt is still parked.

Checked after every step:

* at most one parked attempt per (document, stage) could still complete: its generation
  and fencing token (``fence``; ``attempts`` where there is none) match a ``running`` row,
  whatever takeovers, replays and reruns came before;
* a ``retrying`` row is not claimed before it is due (in the model: before the clock
  jumped since its transient failure; the backoffs here are a minute or more);
* every stage row is at its document's generation (a rerun carries the rows before the
  stage it started from over, succeeded); a ``succeeded`` document has every row
  succeeded; no chunk ordinal twice; at most one ``dead`` letter per death.

At the end of each example every parked attempt completes, and the pipeline is driven
(deliver everything, jump the clock, sweep) until every document is ``succeeded`` with the
chunks of a calm run, or ``failed`` with a dead letter for its dead stage; after which no
message ever sent claims anything.
"""

from __future__ import annotations

import functools
import threading
import uuid
from collections import defaultdict
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any, ClassVar, TypeVar

import dramatiq
import msgspec
import pytest
from anyio.from_thread import BlockingPortal, start_blocking_portal
from hypothesis import HealthCheck, Phase, note
from hypothesis import settings as hypothesis_settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    invariant,
    rule,
    run_state_machine_as_test,
)
from sqlalchemy import Engine, event, text

from pipeline.db.engine import make_async_engine, make_engine
from pipeline.engine.dispatch import Dispatcher
from pipeline.engine.executor import StageExecutor
from pipeline.errors import PermanentError, TransientError
from pipeline.faults import Faults
from pipeline.ingestion.uploads import Upload, UploadService
from pipeline.messages import Delivery, StageMessage
from pipeline.operations.common import OperationReport, Operator, RunContext
from pipeline.operations.replay import ReplayService
from pipeline.operations.requests import DiscardRequest, ReplayRequest, RerunRequest
from pipeline.operations.rerun import RerunService
from pipeline.settings import PolicyOverride, Settings
from pipeline.stages import Compute, Inputs, Outputs
from pipeline.stages.builtin import PIPELINE
from pipeline.wiring import Wiring
from tests.support.databases import own_database
from tests.support.faults import build_executor

STAGES = PIPELINE.names


def _body(topic: str, sentences: int) -> bytes:
    lines = [
        f"Sentence {i} of the {topic} notes says something new about {topic} number {i}."
        for i in range(sentences)
    ]
    paragraphs = [" ".join(lines[i : i + 6]) for i in range(0, len(lines), 6)]
    return "\n\n".join(paragraphs).encode()


BODIES = (_body("otter", 10), _body("glacier", 54))
"""One document of one chunk, one of several (so that ordinals and their order matter)."""
WORKERS = 3
MAX_PARKED = 3
"""Parked attempts at once: each holds a pooled connection while it waits."""
STEP_TIMEOUT_S = 20.0
"""How long a delivery may take to park or return, and a released attempt to return."""
MAX_ROUNDS = 20
MAX_DELIVERIES_PER_ROUND = 200
RUN = RunContext(operator=Operator(name="model", via="cli"))
MODEL_POLICY = PolicyOverride(
    max_retries=2,
    min_backoff_ms=900_000,
    max_backoff_ms=1_800_000,
    time_limit_ms=1_800_000,
    claim_first=True,
)
"""Backoffs and deadlines far longer than an example runs (a slow CI machine took over a
minute for some), yet shorter than the model's clock jump of an hour (with the slack and
grace below): only a jump makes a retry due or an attempt overdue, never the wall clock.
Otherwise a retry falls due while an example runs, a step behaves differently when
Hypothesis replays it, and Hypothesis reports the test flaky. Every stage claims first
here: the model parks an attempt in ``compute`` holding its row, and a short stage that
claims and completes in one statement (``StagePolicy.claim_first`` false) holds nothing
while it computes (its races are the real processes' of ``test_races`` and the torture
run, and ``test_fused_claims``)."""
INDEX = st.integers(min_value=0, max_value=7)
MODEL_SETTINGS = hypothesis_settings(
    max_examples=40,
    stateful_step_count=30,
    deadline=None,
    derandomize=True,
    database=None,
    print_blob=False,
    phases=(Phase.explicit, Phase.reuse, Phase.generate, Phase.shrink),
    suppress_health_check=[
        HealthCheck.too_slow,
        HealthCheck.filter_too_much,
        HealthCheck.data_too_large,
    ],
)

SNAPSHOT_SQL = """
SELECT
    (SELECT jsonb_agg(jsonb_build_object('id', id, 'status', status, 'generation', generation))
     FROM documents WHERE id = ANY(:ids)) AS documents,
    (SELECT jsonb_agg(jsonb_build_object(
                'document_id', document_id, 'stage', stage, 'position', position,
                'status', status, 'generation', generation, 'attempts', attempts,
                'fence', to_jsonb(r) -> 'fence'))
     FROM stage_runs AS r WHERE document_id = ANY(:ids)) AS rows,
    (SELECT jsonb_agg(jsonb_build_object(
                'id', id, 'document_id', document_id, 'stage', stage,
                'generation', generation, 'status', status) ORDER BY failed_at, id)
     FROM dead_letters WHERE document_id = ANY(:ids)) AS letters,
    (SELECT jsonb_agg(jsonb_build_object('document_id', document_id, 'ordinal', ordinal,
                                         'count', n))
     FROM (SELECT document_id, ordinal, count(*) AS n FROM chunks
           WHERE document_id = ANY(:ids) GROUP BY 1, 2 HAVING count(*) > 1) AS twice) AS duplicated
"""
"""What the invariants read after every step (``fence`` is null where there is none)."""
ROW_SQL = """
SELECT status, generation, attempts, (to_jsonb(r) ->> 'fence')::bigint AS fence, position
FROM stage_runs AS r WHERE document_id = :id AND stage = :stage
"""
"""One stage row (what an attempt holds, when read right after its claim)."""

_local = threading.local()
"""The attempt a worker thread runs (its handler wrapper reads it)."""


# -- messages ----------------------------------------------------------------------------


@dataclass(eq=False)
class Sent:
    """One message put on the bus (kept in the history for ever: it may come again)."""

    name: str
    message: dramatiq.Message[Any]
    target: StageMessage
    delay_ms: int | None


class Bus(Dispatcher):
    """A dispatcher whose sends go to a list instead of Redis."""

    def __init__(self, broker: dramatiq.Broker) -> None:
        super().__init__(broker)
        self.lock = threading.Lock()
        self.queue: list[Sent] = []
        self.history: list[Sent] = []

    def send(self, message: dramatiq.Message[Any], *args: Any, **kwargs: Any) -> None:
        self.put(message, kwargs.get("delay_ms", kwargs.get("delay")))

    def send_after_commit(  # type: ignore[override]
        self, message: dramatiq.Message[Any], *, delay_ms: int | None = None, **kwargs: Any
    ) -> bool:
        self.put(message, delay_ms)
        return True

    def put(self, message: dramatiq.Message[Any], delay_ms: int | None) -> None:
        try:
            target = StageMessage.from_args(message.args[0])
        except (IndexError, TypeError, msgspec.ValidationError):
            return  # not a stage message (an operations job): nothing the model runs
        with self.lock:
            sent = Sent(f"m{len(self.history)}", message, target, delay_ms)
            self.queue.append(sent)
            self.history.append(sent)


# -- attempts and handlers ---------------------------------------------------------------


@dataclass(frozen=True)
class Claim:
    """What an attempt held right after its claim."""

    generation: int
    attempts: int
    fence: int | None


@dataclass(eq=False)
class Attempt:
    """One delivery to one simulated worker: a thread that parks in ``compute``."""

    name: str
    sent: Sent
    worker: int
    gate: threading.Event = field(default_factory=threading.Event)
    settled: threading.Event = field(default_factory=threading.Event)
    """Set when the thread parks in ``compute`` or returns."""
    decision: str = "ok"
    claim: Claim | None = None
    parked: bool = False
    outcome: Any = None
    retry: dramatiq.Retry | None = None
    error: BaseException | None = None
    thread: threading.Thread | None = None


class GatedCompute:
    """A real stage's compute that waits for the model's decision.

    It runs right after the claim and the inputs' load, in the delivery's thread: it
    records what the attempt holds (the row, read afresh: the claim has committed and
    nothing else moves while the model waits for this thread), then parks until the
    model releases the attempt, and returns the real outputs or raises the failure the
    model chose.
    """

    def __init__(self, stage: str, inner: Compute, engine: Engine) -> None:
        self.stage = stage
        self.inner = inner
        self.engine = engine

    def __call__(self, inputs: Inputs) -> Outputs:
        attempt: Attempt | None = getattr(_local, "attempt", None)
        if attempt is not None:
            params = {"id": attempt.sent.target.document_id, "stage": self.stage}
            with self.engine.connect() as conn:
                found = conn.execute(text(ROW_SQL), params).one()
            attempt.claim = Claim(found.generation, found.attempts, found.fence)
            attempt.parked = True
            attempt.settled.set()
            if not attempt.gate.wait(STEP_TIMEOUT_S * 6):
                raise TransientError("the model never released this attempt")
            if attempt.decision == "transient":
                raise TransientError("the model chose a transient failure")
            if attempt.decision == "permanent":
                raise PermanentError("the model chose a permanent failure")
        return self.inner(inputs)


# -- the database as the model sees it ---------------------------------------------------


@dataclass(frozen=True)
class RowState:
    status: str
    generation: int
    attempts: int
    fence: int | None
    position: int


@dataclass(frozen=True)
class Letter:
    id: uuid.UUID
    document_id: uuid.UUID
    stage: str
    generation: int
    status: str


@dataclass(frozen=True)
class Snapshot:
    documents: dict[uuid.UUID, tuple[str, int]]
    rows: dict[tuple[uuid.UUID, str], RowState]
    letters: list[Letter]
    duplicated_ordinals: list[tuple[uuid.UUID, int, int]]


@dataclass
class Harness:
    """What every example shares: the engine, settings and wrapped handlers."""

    engine: Engine
    settings: Settings
    broker: dramatiq.Broker
    has_fence: bool
    has_retry_at: bool
    uploader: Uploader
    executor: Callable[[str, Dispatcher], StageExecutor] | None = None
    """Builds one simulated worker's executor (its worker id and bus given), stages gated."""
    expected: dict[int, list[str]] = field(default_factory=dict)
    """Body index → the chunk texts of a calm run."""


def _no_commit_wait(dbapi_connection: Any, _record: Any) -> None:
    """Commits without waiting for the WAL flush: the model commits thousands of times, and
    what other sessions see of a commit does not change (only what a crash would lose)."""
    with dbapi_connection.cursor() as cursor:
        cursor.execute("SET synchronous_commit = off")
    dbapi_connection.commit()


class Uploader:
    """The real upload service, on an event loop of its own with one async engine."""

    def __init__(self, portal: BlockingPortal, settings: Settings) -> None:
        self.portal = portal
        self.settings = settings
        self.engine = make_async_engine(settings)
        event.listen(self.engine.sync_engine, "connect", _no_commit_wait)

    def upload(self, bus: Bus, files: list[tuple[str, bytes]]) -> list[uuid.UUID]:
        """Accept the files (each one's validate message goes to ``bus``)."""

        async def accept_all() -> list[uuid.UUID]:
            service = UploadService(self.engine, bus, self.settings, PIPELINE, Faults())
            ids = []
            for name, data in files:
                upload = Upload(filename=name, declared_type="text/plain", data=data)
                ids.append((await service.accept(upload)).id)
            return ids

        return self.portal.call(accept_all)

    def close(self) -> None:
        self.portal.call(self.engine.dispose)


class Run:
    """One example's documents, bus, workers and parked attempts."""

    def __init__(self, harness: Harness, log: Callable[[str], None], label: str) -> None:
        self.h = harness
        self.log = log
        self.bus = Bus(harness.broker)
        assert harness.executor is not None
        self.executors = [harness.executor(f"model-w{i}", self.bus) for i in range(WORKERS)]
        self.parked: list[Attempt] = []
        self.count = 0
        files = [(f"{label}-doc{i}.txt", body) for i, body in enumerate(BODIES)]
        self.documents = harness.uploader.upload(self.bus, files)
        self.index = {document_id: i for i, document_id in enumerate(self.documents)}

    # -- descriptions --------------------------------------------------------------------

    def doc(self, document_id: uuid.UUID) -> str:
        return f"doc{self.index.get(document_id, '?')}"

    def describe(self, sent: Sent) -> str:
        target = sent.target
        delay = f" delay {sent.delay_ms} ms" if sent.delay_ms else ""
        where = f"{self.doc(target.document_id)} {target.stage} g{target.generation}"
        return f"{sent.name}({where}{delay})"

    def holds(self, attempt: Attempt) -> str:
        claim = attempt.claim
        if claim is None:
            return "nothing"
        fence = "" if claim.fence is None else f" fence {claim.fence}"
        return f"g{claim.generation} attempts {claim.attempts}{fence}"

    # -- deliveries ----------------------------------------------------------------------

    def deliver(self, sent: Sent, worker: int) -> Attempt:
        """Run a delivery until it parks in ``compute`` or returns."""
        attempt = Attempt(f"a{self.count}", sent, worker)
        self.count += 1
        attempt.thread = threading.Thread(
            target=self._execute, args=(attempt,), name=f"model-{attempt.name}", daemon=True
        )
        attempt.thread.start()
        if not attempt.settled.wait(STEP_TIMEOUT_S):
            raise AssertionError(
                f"{attempt.name} ({self.describe(sent)}) neither parked nor returned "
                f"within {STEP_TIMEOUT_S} s: blocked on a lock?"
            )
        where = f"{attempt.name} = {self.describe(sent)} on w{worker}"
        if attempt.parked:
            self.parked.append(attempt)
            self.log(f"{where}: claimed, parked holding {self.holds(attempt)}")
            return attempt
        self._join(attempt)
        self.log(f"{where}: {self.result(attempt)}")
        return attempt

    def finish(self, attempt: Attempt, decision: str) -> None:
        self.parked.remove(attempt)
        attempt.decision = decision
        attempt.gate.set()
        self._join(attempt)
        self.log(f"{attempt.name} finishes {decision}: {self.result(attempt)}")

    def release_all(self, *, quietly: bool = False) -> None:
        for attempt in list(self.parked):
            try:
                self.finish(attempt, "ok")
            except Exception:
                if not quietly:
                    raise

    def result(self, attempt: Attempt) -> str:
        if attempt.retry is not None:
            return f"dramatiq.Retry(delay={attempt.retry.delay}): the same message back on the bus"
        value = getattr(attempt.outcome, "value", attempt.outcome)
        return f"{value}"

    def _execute(self, attempt: Attempt) -> None:
        _local.attempt = attempt
        message = attempt.sent.message
        executor = self.executors[attempt.worker]
        try:
            attempt.outcome = executor.execute(
                message.actor_name,  # type: ignore[arg-type]
                message.args[0],
                Delivery.from_message(message),
            )
        except dramatiq.Retry as retry:
            attempt.retry = retry
        except BaseException as error:
            attempt.error = error
        finally:
            _local.attempt = None
            attempt.settled.set()

    def _join(self, attempt: Attempt) -> None:
        assert attempt.thread is not None
        attempt.thread.join(STEP_TIMEOUT_S)
        if attempt.thread.is_alive():
            raise AssertionError(f"{attempt.name} did not return within {STEP_TIMEOUT_S} s")
        if attempt.retry is not None:
            # What Dramatiq's Retries middleware does: the same message, once more retried.
            message = attempt.sent.message
            retries = int(message.options.get("retries", 0)) + 1
            self.bus.put(message.copy(options={"retries": retries}), attempt.retry.delay)
        if attempt.error is not None:
            raise AssertionError(
                f"an error escaped the executor in {attempt.name}: {attempt.error!r}"
            ) from attempt.error

    # -- the world around the workers ----------------------------------------------------

    def time_passes(self) -> None:
        retry_at = ", retry_at = retry_at - interval '1 hour'" if self.h.has_retry_at else ""
        with self.h.engine.begin() as conn:
            conn.execute(
                text(
                    f"UPDATE stage_runs SET deadline_at = deadline_at - interval '1 hour'"
                    f"{retry_at} WHERE document_id = ANY(:ids)"
                ),
                {"ids": self.documents},
            )

    def sweep(self) -> str:
        report = Wiring(
            self.h.settings, engine=self.h.engine, dispatcher=self.bus
        ).reconciler.sweep()
        return f"re-sent {report.resent}, finished {report.finished}"

    def rerun(self, document_id: uuid.UUID, stage: str) -> OperationReport:
        service = RerunService(self.h.engine, self.bus, self.h.settings, PIPELINE)
        request = RerunRequest(ids=[document_id], from_stage=stage)  # type: ignore[arg-type]
        return service.rerun(request, RUN)

    def replay(self, letter_id: uuid.UUID) -> OperationReport:
        service = ReplayService(self.h.engine, self.bus, self.h.settings, PIPELINE)
        return service.replay(ReplayRequest(ids=[letter_id]), RUN)

    def discard(self, letter_id: uuid.UUID) -> OperationReport:
        service = ReplayService(self.h.engine, self.bus, self.h.settings, PIPELINE)
        return service.discard(DiscardRequest(ids=[letter_id]), RUN)

    # -- reading the database ------------------------------------------------------------

    def snapshot(self) -> Snapshot:
        """Documents, stage rows, dead letters and duplicated chunk ordinals: one round trip."""
        with self.h.engine.connect() as conn:
            found = conn.execute(text(SNAPSHOT_SQL), {"ids": self.documents}).one()
        documents = {
            uuid.UUID(d["id"]): (d["status"], d["generation"]) for d in found.documents or []
        }
        rows = {
            (uuid.UUID(r["document_id"]), r["stage"]): RowState(
                r["status"], r["generation"], r["attempts"], r["fence"], r["position"]
            )
            for r in found.rows or []
        }
        letters = [
            Letter(
                uuid.UUID(e["id"]),
                uuid.UUID(e["document_id"]),
                e["stage"],
                e["generation"],
                e["status"],
            )
            for e in found.letters or []
        ]
        duplicated = [
            (uuid.UUID(c["document_id"]), c["ordinal"], c["count"]) for c in found.duplicated or []
        ]
        return Snapshot(documents, rows, letters, duplicated)

    def row(self, target: StageMessage) -> RowState:
        with self.h.engine.connect() as conn:
            found = conn.execute(
                text(ROW_SQL), {"id": target.document_id, "stage": target.stage}
            ).one()
        return RowState(found.status, found.generation, found.attempts, found.fence, found.position)

    def claims(self, target: StageMessage) -> tuple[str, tuple[int, int, int | None]]:
        """The row's status, and what changes at every claim of it (its ``claimed``
        events, its attempts and its fence)."""
        with self.h.engine.connect() as conn:
            found = conn.execute(
                text(
                    "SELECT r.status, r.attempts, (to_jsonb(r) ->> 'fence')::bigint AS fence, "
                    "(SELECT count(*) FROM stage_events e WHERE e.document_id = r.document_id "
                    "AND e.stage = r.stage AND e.event = 'claimed') AS claimed "
                    "FROM stage_runs AS r WHERE r.document_id = :id AND r.stage = :stage"
                ),
                {"id": target.document_id, "stage": target.stage},
            ).one()
        return str(found.status), (int(found.claimed), int(found.attempts), found.fence)

    def chunks(self, document_id: uuid.UUID) -> list[str]:
        with self.h.engine.connect() as conn:
            return list(
                conn.execute(
                    text("SELECT text FROM chunks WHERE document_id = :id ORDER BY ordinal"),
                    {"id": document_id},
                ).scalars()
            )

    def accepts(self, row: RowState, claim: Claim) -> bool:
        """Would the row take this attempt's completion (its fence check)?"""
        if row.status != "running" or row.generation != claim.generation:
            return False
        if self.h.has_fence:
            return row.fence == claim.fence
        return row.attempts == claim.attempts

    # -- the end of an example -----------------------------------------------------------

    def terminal(self) -> bool:
        statuses = {status for status, _ in self.snapshot().documents.values()}
        return statuses <= {"succeeded", "failed"}

    def drive(self) -> None:
        """Finish everything: deliver every message, jump the clock, sweep, until quiet."""
        for round_number in range(MAX_ROUNDS):
            self.release_all()
            if self.terminal():
                break
            self.time_passes()
            if round_number:  # the first round delivers what is on the bus; then repairs
                self.sweep()
            # Everything on the bus is due now; what the deliveries send is delivered too.
            for _ in range(MAX_DELIVERIES_PER_ROUND):
                if not self.bus.queue:
                    break
                attempt = self.deliver(self.bus.queue.pop(0), round_number % WORKERS)
                if attempt.parked:
                    self.finish(attempt, "ok")
        else:
            documents = self.snapshot().documents
            raise AssertionError(f"not finished after {MAX_ROUNDS} rounds: {documents}")
        # Every message ever sent, once more: a finished document takes none of them.
        for sent in [*self.bus.queue, *self.bus.history]:
            attempt = self.deliver(sent, 0)
            if attempt.parked:
                self.finish(attempt, "ok")
                raise AssertionError(
                    f"{self.describe(sent)} claimed a stage of a finished document"
                )

    def cleanup(self) -> None:
        self.release_all(quietly=True)
        with self.h.engine.begin() as conn:
            conn.execute(text("SET LOCAL lock_timeout = '10s'"))
            ids = {"ids": self.documents}
            conn.execute(text("DELETE FROM dead_letters WHERE document_id = ANY(:ids)"), ids)
            conn.execute(text("DELETE FROM documents WHERE id = ANY(:ids)"), ids)


def _comment(line: str) -> None:
    """Printed with a failing example, above the step that did it."""
    note(f"# {line}")


def _key(sent: Sent) -> tuple[uuid.UUID, str]:
    return (sent.target.document_id, sent.target.stage)


# -- the state machine -------------------------------------------------------------------

F = TypeVar("F", bound=Callable[..., Any])


def when(condition: Callable[[Any], Any]) -> Callable[[F], F]:
    """Run the step only where ``condition`` holds; elsewhere it does nothing.

    Not Hypothesis's ``precondition``: a precondition decides which rules may be drawn,
    so the draws depend on the state, and any state that is not a pure function of the
    draws (the order of random document ids in a sweep, a thread's timing) makes
    Hypothesis see one example draw two ways and fail the test as flaky (it did in
    CI). Every rule is always drawn, with its arguments, and a step that does not apply
    is a no-op.
    """

    def decorate(method: F) -> F:
        @functools.wraps(method)
        def wrapper(self: StageEngineModel, *args: Any, **kwargs: Any) -> Any:
            if not condition(self):
                return None
            return method(self, *args, **kwargs)

        return wrapper  # type: ignore[return-value]

    return decorate


def guarded(method: F) -> F:
    """Mark the example broken when a step fails, so that teardown only cleans up."""

    @functools.wraps(method)
    def wrapper(self: StageEngineModel, *args: Any, **kwargs: Any) -> Any:
        try:
            return method(self, *args, **kwargs)
        except BaseException:
            self.broken = True
            raise

    return wrapper  # type: ignore[return-value]


class StageEngineModel(RuleBasedStateMachine):
    harness: ClassVar[Harness]
    examples: ClassVar[int] = 0

    def __init__(self) -> None:
        super().__init__()
        self.broken = False
        StageEngineModel.examples += 1
        self.run = Run(self.harness, _comment, f"model{StageEngineModel.examples}")
        self.not_due: set[tuple[uuid.UUID, str]] = set()
        """Rows made ``retrying`` since the clock last jumped: no claim may take them."""
        self.floor = dict.fromkeys(self.run.documents, 0)
        """Per document, the position of the stage its latest rerun started from."""
        self.discarded: set[uuid.UUID] = set()
        self.letters: list[Letter] = []

    # -- deliveries ----------------------------------------------------------------------

    def _deliver(self, sent: Sent, worker: int) -> Attempt:
        target = sent.target
        key = (target.document_id, target.stage)
        watch = key in self.not_due
        if watch:
            status, claims = self.run.claims(target)
            watch = status == "retrying"
            if not watch:
                self.not_due.discard(key)
        attempt = self.run.deliver(sent, worker)
        if watch:
            _, claims_after = self.run.claims(target)
            assert claims_after == claims, (
                f"{self.run.describe(sent)} claimed the retrying row {self.run.doc(key[0])} "
                f"{key[1]} before it was due (no time passed since its transient failure): "
                f"(claimed events, attempts, fence) went from {claims} to {claims_after}"
            )
        return attempt

    @rule(index=INDEX, worker=st.integers(0, WORKERS - 1))
    @when(lambda self: self.run.bus.queue and len(self.run.parked) < MAX_PARKED)
    @guarded
    def deliver(self, index: int, worker: int) -> None:
        """Redis hands the next message (any on the bus) to a worker."""
        self._deliver(self.run.bus.queue.pop(index % len(self.run.bus.queue)), worker)

    @rule(index=INDEX, worker=st.integers(0, WORKERS - 1))
    @when(lambda self: self.run.bus.history and len(self.run.parked) < MAX_PARKED)
    @guarded
    def redeliver(self, index: int, worker: int) -> None:
        """A message already sent (and perhaps delivered) arrives again (newest first)."""
        history = self.run.bus.history
        self._deliver(history[-1 - index % len(history)], worker)

    @rule(index=INDEX, worker=st.integers(0, WORKERS - 1))
    @when(lambda self: self.run.parked and len(self.run.parked) < MAX_PARKED)
    @guarded
    def take_over(self, index: int, worker: int) -> None:
        """A parked attempt stalls past its deadline, and Redis hands its message to a
        worker again (as it does when the first one's heartbeat stops)."""
        attempt = self.run.parked[index % len(self.run.parked)]
        self._clock()
        self._deliver(attempt.sent, worker)

    @rule(index=INDEX, how=st.sampled_from(("ok", "transient", "permanent")))
    @when(lambda self: self.run.parked)
    @guarded
    def finish(self, index: int, how: str) -> None:
        """A parked attempt's work ends (newest first): the real result, or a failure."""
        self._finish(self.run.parked[-1 - index % len(self.run.parked)], how)

    def _finish(self, attempt: Attempt, how: str) -> None:
        target = attempt.sent.target
        held = attempt.claim is not None and self.run.accepts(self.run.row(target), attempt.claim)
        self.run.finish(attempt, how)
        if how == "transient" and held and self.run.row(target).status == "retrying":
            self.not_due.add((target.document_id, target.stage))  # its own retry, not yet due

    @rule(index=INDEX, worker=st.integers(0, WORKERS - 1))
    @when(lambda self: self.run.parked)
    @guarded
    def retry_then_duplicate(self, index: int, worker: int) -> None:
        """A parked attempt fails transiently, and a copy of its message arrives at once
        (at-least-once delivery). (Two ordinary steps, as one to make the pair likely.)"""
        attempt = self.run.parked[-1 - index % len(self.run.parked)]
        self._finish(attempt, "transient")
        self._deliver(attempt.sent, worker)

    @rule(index=INDEX, worker=st.integers(0, WORKERS - 1))
    @when(lambda self: self.run.parked and len(self.run.parked) < MAX_PARKED)
    @guarded
    def replay_after_takeover(self, index: int, worker: int) -> None:
        """A stalled attempt is taken over; the new attempt fails for good, an operator
        replays its letter at once, and the replayed message reaches a worker, all while
        the stalled attempt is still parked. (Each part is an ordinary step; as one step
        the sequence is likely enough for 40 examples to reach it.)"""
        stalled = self.run.parked[index % len(self.run.parked)]
        key = (stalled.sent.target.document_id, stalled.sent.target.stage)
        self._clock()
        taker = self._deliver(stalled.sent, worker)
        if not taker.parked:
            return
        self._finish(taker, "permanent")
        for letter in self.run.snapshot().letters:
            if (letter.document_id, letter.stage) == key and letter.status == "dead":
                item = self.run.replay(letter.id).items[0]
                _comment(f"replay the letter of {self.run.doc(key[0])} {key[1]}: {item.action}")
        queue = self.run.bus.queue
        sent = next((s for s in reversed(queue) if _key(s) == key), None)
        if sent is not None:
            queue.remove(sent)
            self._deliver(sent, (worker + 1) % WORKERS)

    @rule(index=INDEX, worker=st.integers(0, WORKERS - 1), stages=st.integers(1, len(STAGES)))
    @when(lambda self: self.run.bus.queue and len(self.run.parked) < MAX_PARKED)
    @guarded
    def advance(self, index: int, worker: int, stages: int) -> None:
        """Calm going: a message on the bus reaches a worker, which finishes at once, and so
        on down the document's next ``stages`` - 1 messages (so that every stage races)."""
        queue = self.run.bus.queue
        sent: Sent | None = queue[index % len(queue)]
        for _ in range(stages):
            if sent is None:
                return
            queue.remove(sent)
            attempt = self._deliver(sent, worker)
            if not attempt.parked:
                return
            self._finish(attempt, "ok")
            document_id = sent.target.document_id
            sent = next((s for s in reversed(queue) if s.target.document_id == document_id), None)

    # -- the world -----------------------------------------------------------------------

    def _clock(self) -> None:
        self.run.time_passes()
        self.not_due.clear()
        _comment("an hour passes")

    @rule(lose=st.sampled_from(("nothing", "newest", "everything")), sweep=st.booleans())
    @guarded
    def time_passes(self, lose: str, sweep: bool) -> None:
        """Redis perhaps loses messages (one, or all in a flush); an hour passes (every
        deadline and retry is due); the reconciler perhaps sweeps."""
        queue = self.run.bus.queue
        lost = queue[-1:] if lose == "newest" else list(queue) if lose == "everything" else []
        for sent in lost:
            queue.remove(sent)
            _comment(f"lost {self.run.describe(sent)}")
        self._clock()
        if sweep:
            _comment(f"reconciler sweep: {self.run.sweep()}")

    @rule(document=st.integers(0, len(BODIES) - 1), stage=st.sampled_from(STAGES))
    @when(lambda self: self.run.count)
    @guarded
    def rerun(self, document: int, stage: str) -> None:
        """An operator re-runs a document from a stage (at most the first one not yet
        succeeded: a rerun needs the outputs of the stages before it)."""
        document_id = self.run.documents[document]
        rows = self.run.snapshot().rows
        done = [rows[(document_id, name)].status == "succeeded" for name in STAGES]
        allowed = done.index(False) if False in done else len(STAGES) - 1
        stage = STAGES[min(STAGES.index(stage), allowed)]  # type: ignore[arg-type]
        report = self.run.rerun(document_id, stage)
        item = report.items[0]
        if item.action == "rerun":
            self.floor[document_id] = STAGES.index(stage)  # type: ignore[arg-type]
        _comment(f"rerun doc{document} from {stage}: {item.action} ({item.detail})")

    def _dead_letters(self) -> list[Letter]:
        return [letter for letter in self.letters if letter.status == "dead"]

    @rule(index=INDEX)
    @when(lambda self: self._dead_letters())
    @guarded
    def replay(self, index: int) -> None:
        """An operator replays a dead letter."""
        letters = self._dead_letters()
        letter = letters[index % len(letters)]
        item = self.run.replay(letter.id).items[0]
        name = f"{self.run.doc(letter.document_id)} {letter.stage} g{letter.generation}"
        _comment(f"replay the letter of {name}: {item.action} ({item.detail})")

    @rule(index=INDEX)
    @when(lambda self: self._dead_letters())
    @guarded
    def discard(self, index: int) -> None:
        """An operator discards a dead letter."""
        letters = self._dead_letters()
        letter = letters[index % len(letters)]
        item = self.run.discard(letter.id).items[0]
        if item.action == "discarded":
            self.discarded.add(letter.id)
        name = f"{self.run.doc(letter.document_id)} {letter.stage} g{letter.generation}"
        _comment(f"discard the letter of {name}: {item.action} ({item.detail})")

    # -- invariants ----------------------------------------------------------------------

    @invariant()
    @guarded
    def engine_invariants(self) -> None:
        snap = self.run.snapshot()
        self.letters = snap.letters
        live: dict[tuple[uuid.UUID, str], list[Attempt]] = defaultdict(list)
        for attempt in self.run.parked:
            key = (attempt.sent.target.document_id, attempt.sent.target.stage)
            if attempt.claim is not None and self.run.accepts(snap.rows[key], attempt.claim):
                live[key].append(attempt)
        for (document_id, stage), attempts in live.items():
            row = snap.rows[(document_id, stage)]
            count = len(attempts)
            assert count <= 1, (
                f"{count} parked attempts of {self.run.doc(document_id)} {stage} "
                f"would all be accepted: "
                + ", ".join(f"{a.name} holding {self.run.holds(a)}" for a in attempts)
                + f"; the row: {row}"
            )

        for (document_id, stage), row in snap.rows.items():
            status, generation = snap.documents[document_id]
            name = f"{self.run.doc(document_id)} {stage}"
            assert row.generation == generation, (
                f"{name} is at generation {row.generation}, its document at {generation}"
            )
            if row.position < self.floor[document_id]:
                kept = f"{name}, carried over by a rerun, is {row.status}"
                assert row.status == "succeeded", kept
            if status == "succeeded":
                assert row.status == "succeeded", f"{name} is {row.status} in a succeeded document"

        assert not snap.duplicated_ordinals, f"chunk ordinals twice: {snap.duplicated_ordinals}"

        deaths: dict[tuple[uuid.UUID, str, int], int] = defaultdict(int)
        for letter in snap.letters:
            if letter.status == "dead":
                deaths[(letter.document_id, letter.stage, letter.generation)] += 1
        twice = {key: count for key, count in deaths.items() if count > 1}
        assert not twice, f"more than one dead letter for one death: {twice}"

    # -- the end -------------------------------------------------------------------------

    def teardown(self) -> None:
        try:
            if self.broken:
                return
            self.run.release_all()
            self.run.drive()
            self.check_final()
        finally:
            self.run.cleanup()

    def check_final(self) -> None:
        snap = self.run.snapshot()
        for document_id, (status, generation) in snap.documents.items():
            name = self.run.doc(document_id)
            rows = {stage: row for (d, stage), row in snap.rows.items() if d == document_id}
            unfinished = {s: r.status for s, r in rows.items() if r.status in UNFINISHED}
            assert not unfinished, f"{name} is {status} with unfinished stages {unfinished}"
            if status == "succeeded":
                assert {r.status for r in rows.values()} == {"succeeded"}, (name, rows)
                expected = self.harness.expected[self.run.index[document_id]]
                assert self.run.chunks(document_id) == expected, (
                    f"{name}'s chunks differ from a calm run's"
                )
                continue
            assert status == "failed", f"{name} ended {status}"
            dead = [s for s, r in rows.items() if r.status == "dead" and r.generation == generation]
            assert dead, f"{name} failed without a dead stage at generation {generation}: {rows}"
            for stage in dead:
                letters = [
                    letter
                    for letter in snap.letters
                    if (letter.document_id, letter.stage, letter.generation)
                    == (document_id, stage, generation)
                    and (letter.status == "dead" or letter.id in self.discarded)
                ]
                assert letters, f"{name} {stage} is dead without a dead letter: {snap.letters}"


UNFINISHED = ("queued", "running", "retrying")


# -- fixtures and the test ---------------------------------------------------------------


@pytest.fixture(scope="module")
def harness(settings: Settings, broker: dramatiq.Broker) -> Iterator[Harness]:
    """A database of the model's own with the model's policies, and the chunks of a calm
    run. (In the run's shared database the reconciler's sweeps would also pick up what
    other tests left unfinished, as it falls due in wall-clock time: the model's bus would
    differ between two runs of one example.)"""
    with own_database(settings, "model") as own:
        yield from _harness(own, broker)


def _harness(settings: Settings, broker: dramatiq.Broker) -> Iterator[Harness]:
    model_settings = settings.replace(
        stages={
            "policy_overrides": dict.fromkeys(STAGES, MODEL_POLICY),
            "queued_grace_ms": 600_000,
            "running_slack_ms": 600_000,
        },
        # Each parked attempt holds a connection; the reconciler and operators need more.
        database={"pool_size": MAX_PARKED + 8},
    )
    engine = make_engine(model_settings, application_name="model-test")
    event.listen(engine, "connect", _no_commit_wait)
    with engine.connect() as conn:
        columns = set(
            conn.execute(
                text(
                    "SELECT column_name FROM information_schema.columns "
                    "WHERE table_name = 'stage_runs' AND table_schema = current_schema()"
                )
            ).scalars()
        )
    with start_blocking_portal() as portal:
        uploader = Uploader(portal, model_settings)
        harness = Harness(
            engine,
            model_settings,
            broker,
            has_fence="fence" in columns,
            has_retry_at="retry_at" in columns,
            uploader=uploader,
            executor=lambda worker_id, bus: build_executor(
                model_settings,
                bus,
                engine=engine,
                worker_id=worker_id,
                sandbox=False,
                wrap=lambda stage, compute: GatedCompute(stage, compute, engine),
            ),
        )
        try:
            calm = Run(harness, lambda _: None, "calm")
            try:
                calm.drive()
                for document_id, (status, _) in calm.snapshot().documents.items():
                    assert status == "succeeded", f"a calm run ended {status}"
                    harness.expected[calm.index[document_id]] = calm.chunks(document_id)
            finally:
                calm.cleanup()
            assert len(harness.expected[0]) == 1, harness.expected
            assert len(harness.expected[1]) > 2, harness.expected
            yield harness
        finally:
            uploader.close()
            engine.dispose()


@pytest.mark.filterwarnings(
    # The engine's own backoff jitter (dramatiq's compute_backoff) uses ``random``.
    "ignore:Do not use the `random` module inside strategies"
)
def test_stage_engine_under_random_interleavings(harness: Harness) -> None:
    """Takeovers, duplicates, lost messages, sweeps, reruns, replays and discards in any
    order: never two attempts that could both complete one stage, never a retry claimed
    before it is due, and every document ends as one calm run would leave it (or failed
    with its dead letter)."""
    StageEngineModel.harness = harness
    run_state_machine_as_test(StageEngineModel, settings=MODEL_SETTINGS)
