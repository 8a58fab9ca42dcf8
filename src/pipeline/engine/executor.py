"""The stage executor: claim → work → complete → send next, or fail.

Each delivery of a stage message runs through :meth:`StageExecutor.execute`:

1. **Claim** the stage row (``transitions.CLAIM_SQL``): only if the message's generation
   matches and the row is waiting (``queued``, or ``retrying`` and due), or its running
   attempt is past its deadline. Otherwise the message is a duplicate, stale or early:
   it is acked with a ``dropped`` event that says why, and nothing else happens.
2. **Work**: load the input from Postgres, run the stage's pure function.
3. **Complete** in one transaction: the row ``succeeded`` and the next row ``queued``
   (fenced: only while this attempt holds the row), then the stage's output (replacing
   any earlier output); after commit, send the next message. A lost send is repaired
   by the reconciler.
4. **Fail**: a transient error with budget left moves the row to ``retrying`` with the
   time it is due, and the executor itself sends the retry as a new delayed message;
   permanent errors, and transient ones on the last attempt, go to ``dead`` with a
   dead letter and a failed document.

**Short stages** (``StagePolicy.claim_first`` false: validate, chunk, index) fold 1 and
3 into one statement after the work (``transitions.CLAIM_AND_SUCCEED_SQL``): it takes
the row only if it still waits for its first attempt, so a copy, a stale or paused
message changes nothing, and anything else (a failure, a retry, a message old enough
to be a redelivery after a crash) goes the claim-first way above. Half the writes of a
stage, for stages too short to show as ``running`` (``docs/benchmarks.md`` §11).

The row is the one record of attempts. Retries are the executor's, not Dramatiq's:
Dramatiq's Retries middleware only re-delivers errors that escape the executor (no
database to claim from), and its giving up never makes a dead letter: the row is left
to the reconciler (:meth:`StageExecutor.given_up`).

**Stages with nothing to do** are skipped at the previous stage's completion, in its
transaction (:meth:`StageExecutor._skip_ahead`): while the stage just queued has a
skip predicate (``StageSpec.skip``: OCR for a document with a text layer) that holds
for its inputs, it is claimed and completed there by ``CLAIM_AND_SUCCEED_SQL`` (fenced
as always, refused while the stage is paused; its ``claimed`` and ``succeeded`` events
say ``skipped``), and the message goes to the stage after it. Its queued message id is
recorded but never sent.

Every transition appends to ``stage_events``, and follows the lock order written in
``engine.transitions``.

Round trips and connection checkouts are the cost of a stage (``docs/benchmarks.md``),
so a delivery checks out one autocommit connection for its claim, load, progress and
completion: the claim, the loads and each progress report are single statements that
need no ``BEGIN``/``COMMIT`` of their own, and the completion is the one explicit
transaction. A delivery never waits for a second connection while it holds one (only
failure paths, after it let go of its own, take another), so a pool as large as the
worker's threads suffices.
"""

from __future__ import annotations

import enum
import logging
import os
import socket
import threading
import time
import traceback
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, Final, Protocol, TypeVar

import dramatiq
import msgspec
import psycopg
from dramatiq.common import compute_backoff
from dramatiq.middleware.time_limit import TimeLimitExceeded
from sqlalchemy import Connection, Engine, func, select
from sqlalchemy.exc import SQLAlchemyError

from pipeline.db.models import Document
from pipeline.db.retry import retry_database
from pipeline.engine import transitions
from pipeline.engine.artifacts import Artifacts
from pipeline.engine.dispatch import Dispatcher
from pipeline.engine.failures import Failure, classify
from pipeline.engine.transitions import Attempt
from pipeline.errors import StageError
from pipeline.faults import Faults
from pipeline.logs import log_context, update_log_context
from pipeline.messages import Delivery, StageMessage
from pipeline.progress import reporting_to
from pipeline.settings import Settings
from pipeline.stages.spec import Compute, Inputs, Outputs, Skip, StagePolicy, StageSpec
from pipeline.statuses import StageEventName, StageStatus

logger = logging.getLogger(__name__)


T = TypeVar("T")

FUSED_MAX_AGE_MS: Final = 30_000
"""A short stage works before it claims only on a message younger than this: half of
Dramatiq's Redis heartbeat timeout (60 s), after which a dead worker's messages are
delivered again (half, for clocks that disagree between sender and worker)."""

RETRY_OPTION: Final = "pipeline_retry"
"""Set on the retry messages the executor sends: they claim first (a retry finds its row
``retrying``, which the fused statement never takes, so working first would be wasted)."""

TRANSITION_TRIES: Final = 4
"""A failure transition is tried this often on fresh connections before it gives up."""


class Outcome(enum.Enum):
    SUCCEEDED = "succeeded"
    RETRYING = "retrying"
    DEAD = "dead"
    DROPPED = "dropped"


@dataclass(frozen=True)
class RunnableStage:
    """A stage of the active definition, built and ready: its spec, work and policy."""

    spec: StageSpec
    compute: Compute
    policy: StagePolicy
    skip: Skip | None = None
    """True when the stage has nothing to do for a document (``StageSpec.skip``)."""


class Observer(Protocol):
    """Told the outcome and duration of every delivery (metrics)."""

    def observe(self, stage: str, outcome: str, seconds: float) -> None: ...


class StageExecutor:
    """Runs one delivery of one stage message against Postgres."""

    def __init__(
        self,
        engine: Engine,
        dispatcher: Dispatcher,
        stages: Mapping[str, RunnableStage],
        artifacts: Artifacts,
        settings: Settings,
        faults: Faults,
        *,
        worker_id: str | None = None,
        observer: Observer | None = None,
    ) -> None:
        self.engine = engine
        self.dispatcher = dispatcher
        self.stages = stages
        self.artifacts = artifacts
        self.policies = {name: stage.policy for name, stage in stages.items()}
        self.grace = timedelta(milliseconds=settings.stages.queued_grace_ms)
        self.slack = timedelta(milliseconds=settings.stages.running_slack_ms)
        self.faults = faults
        # Single statements (the claim, loading inputs) need no transaction of their own.
        self.autocommit = engine.execution_options(isolation_level="AUTOCOMMIT")
        self.worker_id = worker_id or f"{socket.gethostname()}:{os.getpid()}"
        self.observer = observer
        self._claimed_detail = _JSON.encode({"worker": self.worker_id}).decode()
        self._skipped_detail = _JSON.encode({"worker": self.worker_id, "skipped": True}).decode()
        self._skips = any(stage.skip is not None for stage in stages.values())
        self._live: set[tuple[Any, str, int]] = set()
        """(document, stage, fence) of the attempts running in this process right now."""
        self._live_lock = threading.Lock()

    def execute(self, stage: str, payload: object, delivery: Delivery) -> Outcome:
        started = time.monotonic()
        outcome = "error"
        try:
            with log_context(stage=stage, message_id=delivery.message_id):
                result = self._execute(stage, payload, delivery)
            outcome = result.value
            return result
        finally:
            if self.observer is not None:
                self.observer.observe(stage, outcome, time.monotonic() - started)

    def _execute(self, stage: str, payload: object, delivery: Delivery) -> Outcome:
        try:
            message = StageMessage.from_args(payload)
        except msgspec.ValidationError as error:
            self.poison(delivery, "InvalidMessage", f"malformed stage message: {error}", stage)
            return Outcome.DEAD
        if message.stage != stage:
            reason = f"message for stage {message.stage!r} arrived on the {stage!r} queue"
            self.poison(delivery, "InvalidMessage", reason, stage)
            return Outcome.DEAD

        update_log_context(document_id=message.document_id)
        held: list[Attempt] = []
        try:
            with self.autocommit.connect() as conn:
                return self._run(conn, message, delivery, held)
        except _UnknownDocument:
            reason = f"document {message.document_id} does not exist"
            self.poison(delivery, "UnknownDocument", reason, message.stage, message=message)
            return Outcome.DEAD
        except _Failed as failed:
            # Outside the delivery's connection: it may be the thing that broke.
            try:
                policy = self.policies[stage]
                failure = classify(failed.error, policy)
                return self._fail(failed.attempt, failure, failed.error, failed.started)
            except _LostHold:
                return self._superseded(failed.attempt)
        except _LostHold as lost:
            return self._superseded(lost.attempt)
        except _FusedFailed as failed:
            return self._fused_failed(failed, delivery, held)
        finally:
            # Only now, once its outcome is recorded (or could not be), is the attempt
            # no longer live: a later delivery may then take over what is left of it.
            with self._live_lock:
                for attempt in held:
                    self._live.discard(_key(attempt))

    def _run(
        self, conn: Connection, message: StageMessage, delivery: Delivery, held: list[Attempt]
    ) -> Outcome:
        """Claim, work and complete on one connection; failures leave as ``_Failed``."""
        if self._fusable(conn, message, delivery) and self._fused(conn, message, delivery):
            return Outcome.SUCCEEDED
        attempt = self._claim(conn, message, delivery) or self._not_claimed(conn, message, delivery)
        if attempt is None:
            return Outcome.DROPPED
        with self._live_lock:
            self._live.add(_key(attempt))
        held.append(attempt)
        update_log_context(attempt=attempt.number)
        started = time.monotonic()
        try:
            if attempt.number > self.policies[message.stage].max_attempts:
                raise _CrashLoop(attempt.number - 1)
            inputs, outputs = self._work(
                conn,
                message,
                attempt.number,
                lambda done, total: self._progress(conn, attempt, done, total),
            )
            return self._complete(conn, attempt, inputs, outputs, started)
        except _LostHold:
            raise
        except (Exception, TimeLimitExceeded) as error:
            if isinstance(error, psycopg.OperationalError):
                # Raised by psycopg's own transaction block, so SQLAlchemy has not seen
                # it: do not let a broken connection go back to the pool.
                conn.invalidate()
            raise _Failed(attempt, error, started) from error

    def _superseded(self, attempt: Attempt) -> Outcome:
        self._record(
            attempt.message,
            "superseded",
            attempt.number,
            attempt.message_id,
            {"reason": "the attempt no longer held the stage when it finished"},
        )
        return Outcome.DROPPED

    # -- claim ---------------------------------------------------------------------------

    def _claim(
        self,
        conn: Connection,
        message: StageMessage,
        delivery: Delivery,
        *,
        abandoned: int | None = None,
    ) -> Attempt | None:
        """Take the stage row for this delivery, or ``None`` for a duplicate or stale one.

        ``abandoned``: also take the row if it is ``running`` under this fence for this
        very worker (an attempt of ours whose outcome could not be recorded).
        """
        deadline = timedelta(milliseconds=self.policies[message.stage].time_limit_ms) + self.slack
        params = {
            "document_id": message.document_id,
            "stage": message.stage,
            "generation": message.generation,
            "deadline": deadline,
            "message_id": delivery.message_id,
            "worker": self.worker_id,
            "detail": self._claimed_detail,
            "abandoned": abandoned,
        }
        row = conn.exec_driver_sql(transitions.CLAIM_SQL, params).first()
        if row is None:
            return None
        return Attempt(
            message=message,
            number=int(row[0]),
            fence=int(row[1]),
            message_id=delivery.message_id,
            delivery=delivery,
            next_stage=row[2],
        )

    def _not_claimed(
        self, conn: Connection, message: StageMessage, delivery: Delivery
    ) -> Attempt | None:
        """Say why a delivery could not claim (autocommit: reads and one insert).

        Two cases are not drops: a ``running`` row held by an attempt of this worker
        that no longer runs (its completion could not be recorded) is taken over at
        once; the row's own retry message, arriving before the row is due (clocks
        disagree), is sent again to arrive when it is.
        """
        row = conn.execute(transitions.current(message)).one_or_none()
        if row is None:
            status = _status(conn, message)
            if status is None:
                raise _UnknownDocument
            if status == "deleted":
                reason = "the document was deleted"
            else:
                reason = "the document has no row for this stage"
        elif row.generation != message.generation:
            reason = (
                f"stale message: generation {message.generation}, "
                f"the document is at generation {row.generation}"
            )
        elif row.paused and row.status in ("queued", "retrying"):
            # The row waits in Postgres; the reconciler sends it a message on resume.
            reason = "the stage is paused: the row waits, and is sent again when it resumes"
        elif row.status == "running":
            if row.worker_id == self.worker_id and not self._is_live(message, row.fence):
                attempt = self._claim(conn, message, delivery, abandoned=row.fence)
                if attempt is not None:
                    logger.warning(
                        "took over attempt %d of %s: this worker could not record its outcome",
                        row.fence,
                        message.stage,
                    )
                    return attempt
            reason = "duplicate: another attempt holds this stage and is within its deadline"
        elif row.status == "retrying" and row.due_in_ms is not None and row.due_in_ms > 0:
            due_in = max(1, round(row.due_in_ms))
            reason = f"not due: the stage is retrying, due in {due_in} ms"
            if row.message_id == delivery.message_id:
                again = _as_retry(self.dispatcher.build(message, message_id=delivery.message_id))
                if self.dispatcher.send_after_commit(again, delay_ms=due_in):
                    reason += "; its retry message was sent again to arrive then"
        else:
            reason = f"duplicate: the stage is already {row.status}"
        conn.execute(
            transitions.event(message, "dropped", None, delivery.message_id, {"reason": reason})
        )
        logger.info("dropped %s message for %s: %s", message.stage, message.document_id, reason)
        return None

    def _is_live(self, message: StageMessage, fence: int) -> bool:
        with self._live_lock:
            return (message.document_id, message.stage, fence) in self._live

    # -- work ----------------------------------------------------------------------------

    def _work(
        self,
        conn: Connection,
        message: StageMessage,
        number: int,
        progress: Callable[[int, int], None],
    ) -> tuple[Inputs, Outputs]:
        stage = self.stages[message.stage]
        inputs = self.artifacts.load(conn, message.document_id, stage.spec)
        if self.faults:
            self.faults.before_compute(message.stage, _filename(conn, message), number)
        with reporting_to(progress):
            outputs = stage.compute(inputs)
        return inputs, self.artifacts.check(stage.spec, outputs)

    def _progress(self, conn: Connection, attempt: Attempt, current: int, total: int) -> None:
        """One autocommit statement on the delivery's own connection.

        Not on a second one from the pool: every worker thread holds its delivery's
        connection while it computes, so with as many threads as pooled connections a
        second checkout waited out the pool's 30 s timeout at every report.
        """
        try:
            conn.execute(transitions.progress(attempt, current, total))
        except Exception:  # progress is a courtesy: never fail a stage over it
            logger.warning("could not record progress", exc_info=True)

    # -- claim and complete at once (short stages) --------------------------------------

    def _fusable(self, conn: Connection, message: StageMessage, delivery: Delivery) -> bool:
        """Whether this delivery may work before it claims: its stage's policy says so, and
        the message is younger than Dramatiq's heartbeat timeout. A worker that dies
        mid-work leaves no trace in the row; its message comes back only after the
        broker has missed its heartbeats for that long, so such a redelivery (like any
        delivery after a backlog that long) claims first, and the crash-loop count
        sees every later crash."""
        if self.policies[message.stage].claim_first:
            return False
        options = delivery.message.get("options")
        if isinstance(options, dict) and options.get(RETRY_OPTION):
            return False  # a retry is never a row's first attempt
        sent = delivery.message.get("message_timestamp")
        if not isinstance(sent, int) or time.time() * 1000 - sent >= FUSED_MAX_AGE_MS:
            return False
        # Fault injection (tests only) that makes a stage sleep makes it a long one.
        return not (self.faults and self.faults.slows(message.stage, _filename(conn, message)))

    def _fused(self, conn: Connection, message: StageMessage, delivery: Delivery) -> bool:
        """Load, compute, then claim and succeed in one statement; ``False``: the row was
        not waiting for a first attempt (the caller then claims first, and says why if
        it cannot). A failing attempt leaves as ``_FusedFailed``: it is claimed then,
        so that the failure is recorded against a counted attempt as always."""
        started = time.monotonic()
        try:
            inputs, outputs = self._work(conn, message, 1, _no_progress)
        except (Exception, TimeLimitExceeded) as error:
            if isinstance(error, psycopg.OperationalError):
                conn.invalidate()
            raise _FusedFailed(message, error, started) from error
        spec = self.stages[message.stage].spec
        next_message_id = str(uuid.uuid4())
        duration_ms = _elapsed_ms(started)
        params = {
            "document_id": message.document_id,
            "stage": message.stage,
            "generation": message.generation,
            "duration_ms": duration_ms,
            "message_id": delivery.message_id,
            "worker": self.worker_id,
            "claimed": self._claimed_detail,
            "next_message_id": next_message_id,
            "grace": self.grace,
            "detail": _JSON.encode(
                {**spec.summarize(outputs), "duration_ms": duration_ms}
            ).decode(),
        }
        following: str | None
        try:
            if spec.writes or self._skips:
                # The claim comes first: it locks the document before the output's rows
                # reference it (the lock order), and finds out before anything is written.
                with _driver(conn).transaction():
                    row = conn.exec_driver_sql(transitions.CLAIM_AND_SUCCEED_SQL, params).first()
                    if row is None:
                        raise _NotTaken
                    self.artifacts.store(
                        conn, message.document_id, message.generation, spec, outputs, inputs
                    )
                    following, next_message_id, skipped = self._skip_ahead(
                        conn, message, row[1], next_message_id
                    )
            else:
                row = conn.exec_driver_sql(transitions.CLAIM_AND_SUCCEED_SQL, params).first()
                if row is None:
                    return False
                following, skipped = row[1], []
        except _NotTaken:
            return False
        except Exception as error:
            if isinstance(error, psycopg.OperationalError):
                conn.invalidate()
            raise _FusedFailed(message, error, started) from error
        self._observe_skipped(skipped)
        if following is not None:
            outgoing = StageMessage(message.document_id, following, message.generation)
            envelope = self.dispatcher.build(outgoing, message_id=next_message_id)
            if not (self.faults and self.faults.drop_send(message.stage, _filename(conn, message))):
                self.dispatcher.send_after_commit(envelope)
        return True

    def _fused_failed(
        self, failed: _FusedFailed, delivery: Delivery, held: list[Attempt]
    ) -> Outcome:
        """A short stage failed before it claimed: claim now (a fresh connection: the old
        one may be what broke), then record the failure as any attempt's."""
        message = failed.message
        try:
            with self.autocommit.connect() as conn:
                attempt = self._claim(conn, message, delivery) or self._not_claimed(
                    conn, message, delivery
                )
        except _UnknownDocument:
            reason = f"document {message.document_id} does not exist"
            self.poison(delivery, "UnknownDocument", reason, message.stage, message=message)
            return Outcome.DEAD
        if attempt is None:
            return Outcome.DROPPED
        with self._live_lock:
            self._live.add(_key(attempt))
        held.append(attempt)
        update_log_context(attempt=attempt.number)
        error = failed.error
        if attempt.number > self.policies[message.stage].max_attempts:
            error = _CrashLoop(attempt.number - 1)
        try:
            failure = classify(error, self.policies[message.stage])
            return self._fail(attempt, failure, error, failed.started)
        except _LostHold:
            return self._superseded(attempt)

    # -- complete ------------------------------------------------------------------------

    def _complete(
        self, conn: Connection, attempt: Attempt, inputs: Inputs, outputs: Outputs, started: float
    ) -> Outcome:
        message = attempt.message
        spec = self.stages[message.stage].spec
        following = attempt.next_stage
        outgoing = following and StageMessage(message.document_id, following, message.generation)
        envelope = self.dispatcher.build(outgoing) if outgoing else None
        drop = (
            envelope is not None
            and bool(self.faults)
            and self.faults.drop_send(message.stage, _filename(conn, message))
        )
        duration_ms = _elapsed_ms(started)
        summary = spec.summarize(outputs)
        params = {
            "document_id": message.document_id,
            "stage": message.stage,
            "generation": message.generation,
            "attempt": attempt.number,
            "fence": attempt.fence,
            "duration_ms": duration_ms,
            "message_id": attempt.message_id,
            "next_stage": following,
            "next_message_id": envelope.message_id if envelope else None,
            "grace": self.grace,
            "detail": _JSON.encode({**summary, "duration_ms": duration_ms}).decode(),
        }
        # The connection is in autocommit mode; psycopg's transaction block makes the
        # success and the output one transaction (SQLAlchemy's begin() cannot here).
        # The success statement goes first: it locks the document before the output's
        # rows reference it (the lock order in ``engine.transitions``), and an attempt that lost
        # its hold finds out before writing anything.
        skipped: list[str] = []
        with _driver(conn).transaction():
            if not conn.exec_driver_sql(transitions.SUCCEED_SQL, params).scalar():
                raise _LostHold(attempt)  # rolls back the transaction
            self.artifacts.store(
                conn, message.document_id, message.generation, spec, outputs, inputs
            )
            if envelope is not None:
                target, target_id, skipped = self._skip_ahead(
                    conn, message, following, envelope.message_id
                )
                if target != following:
                    envelope = None
                    if target is not None:
                        envelope = self.dispatcher.build(
                            StageMessage(message.document_id, target, message.generation),
                            message_id=target_id,
                        )
        self._observe_skipped(skipped)
        if envelope is not None and not drop:
            self.dispatcher.send_after_commit(envelope)
        return Outcome.SUCCEEDED

    def _observe_skipped(self, stages: list[str]) -> None:
        """Count each skipped stage (outcome ``skipped``, 0 s) once its skip is committed."""
        if self.observer is not None:
            for stage in stages:
                self.observer.observe(stage, "skipped", 0.0)

    def _skip_ahead(
        self, conn: Connection, message: StageMessage, stage: str | None, message_id: str
    ) -> tuple[str | None, str, list[str]]:
        """In a completion's transaction, the document locked: while the stage it just
        queued (``stage``, for ``message_id``) has nothing to do for the document (its
        skip predicate holds for its inputs), claim and complete that stage here too.

        Returns the stage to send the message to (``None``: the document is finished),
        the message's id, and the stages skipped. ``CLAIM_AND_SUCCEED_SQL`` is fenced
        as any claim, so a paused stage is not skipped (its row waits, as a sent message
        would), and a stage that a test fault is aimed at always runs. A predicate that
        raises is logged and the stage runs; a database error fails the completion as any
        statement of it would.
        """
        skipped: list[str] = []
        while stage is not None:
            runnable = self.stages.get(stage)
            if runnable is None or runnable.skip is None:
                break
            if self.faults and self.faults.touches(stage, _filename(conn, message)):
                break
            inputs = self.artifacts.load(conn, message.document_id, runnable.spec)
            try:
                idle = runnable.skip(inputs)
            except (psycopg.Error, SQLAlchemyError):
                raise
            except Exception:
                logger.warning("skip predicate of %s failed: running it", stage, exc_info=True)
                break
            if not idle:
                break
            following_id = str(uuid.uuid4())
            params = {
                "document_id": message.document_id,
                "stage": stage,
                "generation": message.generation,
                "duration_ms": 0,
                "message_id": message_id,
                "worker": self.worker_id,
                "claimed": self._skipped_detail,
                "next_message_id": following_id,
                "grace": self.grace,
                "detail": _SKIPPED,
            }
            row = conn.exec_driver_sql(transitions.CLAIM_AND_SUCCEED_SQL, params).first()
            if row is None:
                break
            skipped.append(stage)
            stage, message_id = row[1], following_id
        return stage, message_id, skipped

    # -- fail ----------------------------------------------------------------------------

    def _fail(
        self, attempt: Attempt, failure: Failure, error: BaseException, started: float
    ) -> Outcome:
        message = attempt.message
        policy = self.policies[message.stage]
        duration_ms = _elapsed_ms(started)
        if failure.transient and attempt.number < policy.max_attempts:
            _, delay = compute_backoff(
                attempt.number - 1, factor=policy.min_backoff_ms, max_backoff=policy.max_backoff_ms
            )
            retry = _as_retry(self.dispatcher.build(message))
            self._transition(
                attempt,
                lambda conn: self._retrying(
                    conn, attempt, failure, duration_ms, delay, retry.message_id
                ),
            )
            # On a failed send the row keeps its deadline (due time + slack): the
            # reconciler sends the retry then.
            self.dispatcher.send_after_commit(retry, delay_ms=delay)
            logger.warning(
                "%s of %s failed (attempt %d), retrying in %d ms: %s",
                message.stage,
                message.document_id,
                attempt.number,
                delay,
                failure.reason,
            )
            return Outcome.RETRYING
        if failure.transient and not isinstance(error, _CrashLoop):
            failure = failure.exhausted(attempt.number)
        self._transition(
            attempt, lambda conn: self._dead(conn, attempt, failure, error, duration_ms)
        )
        logger.error(
            "%s of %s is dead after %d attempt(s): %s",
            message.stage,
            message.document_id,
            attempt.number,
            failure.reason,
        )
        return Outcome.DEAD

    def _transition(self, attempt: Attempt, write: Callable[[Connection], T]) -> T:
        """Run a failure transition in its own transaction, the document locked first.

        The failure may have been the connection itself (Postgres dropped it): then
        other pooled connections are likely stale too, so the transition is tried again
        on fresh ones (``db.retry``). Only if Postgres stays unreachable does the error
        escape: the row then waits for its deadline, and Dramatiq re-delivers the
        message to this worker, which takes the abandoned attempt over.
        """

        def transact() -> T:
            with self.engine.begin() as conn:
                conn.execute(transitions.lock_document(attempt.message.document_id))
                return write(conn)

        what = f"recording the outcome of {attempt.message.stage}"
        return retry_database(transact, tries=TRANSITION_TRIES, what=what, pause_s=0.2)

    def _retrying(
        self,
        conn: Connection,
        attempt: Attempt,
        failure: Failure,
        duration_ms: int,
        delay: int,
        retry_message_id: str,
    ) -> None:
        due = func.now() + timedelta(milliseconds=delay)
        self._release(
            conn,
            attempt,
            "retrying",
            duration_ms,
            deadline=due + self.slack,
            retry_at=due,
            message_id=retry_message_id,
            error=failure,
        )
        conn.execute(
            transitions.event(
                attempt.message,
                "retrying",
                attempt.number,
                attempt.message_id,
                {
                    **failure.detail(),
                    "delay_ms": delay,
                    "duration_ms": duration_ms,
                    "retry_message_id": retry_message_id,
                },
            )
        )

    def _dead(
        self,
        conn: Connection,
        attempt: Attempt,
        failure: Failure,
        error: BaseException,
        duration_ms: int,
    ) -> None:
        message = attempt.message
        self._release(conn, attempt, "dead", duration_ms, error=failure)
        trace = _format_traceback(error)
        reopened = conn.execute(
            transitions.reopen_letter(attempt.delivery, failure, attempt.number, message, trace)
        ).first()
        if reopened is None:
            conn.execute(
                transitions.dead_letter(
                    attempt.delivery,
                    failure=failure,
                    attempts=attempt.number,
                    stage_message=message,
                    trace=trace,
                )
            )
        conn.execute(
            transitions.document_finished(message, "failed", failure.document_reason(message.stage))
        )
        conn.execute(
            transitions.event(
                message,
                "dead",
                attempt.number,
                attempt.message_id,
                {**failure.detail(), "duration_ms": duration_ms},
            )
        )

    def _release(
        self,
        conn: Connection,
        attempt: Attempt,
        status: StageStatus,
        duration_ms: int,
        **changes: Any,
    ) -> None:
        if conn.execute(transitions.release(attempt, status, duration_ms, **changes)).rowcount != 1:
            raise _LostHold(attempt)

    # -- records -------------------------------------------------------------------------

    def _record(
        self,
        message: StageMessage,
        name: StageEventName,
        attempt: int | None,
        message_id: str | None,
        detail: dict[str, Any],
    ) -> None:
        with self.engine.begin() as conn:
            conn.execute(transitions.event(message, name, attempt, message_id, detail))

    def poison(
        self,
        delivery: Delivery,
        error_type: str,
        reason: str,
        stage: str | None,
        *,
        message: StageMessage | None = None,
    ) -> None:
        """Dead-letter a message that can never be processed, whatever its retries."""
        with self.engine.begin() as conn:
            known = message is not None and _exists(conn, message)
            conn.execute(
                transitions.dead_letter(
                    delivery,
                    failure=Failure(error_type=error_type, reason=reason, transient=False),
                    attempts=_delivered_times(delivery),
                    stage_message=message,
                    document_known=known,
                    stage=stage,
                )
            )
        logger.error("dead-lettered poison message %s: %s", delivery.message_id, reason)

    def given_up(self, delivery: Delivery, message: StageMessage, reason: str) -> None:
        """Dramatiq gave up re-delivering a stage message whose errors escaped us.

        That is no verdict on the document: no attempt failed, so no dead letter. The
        row is still unfinished and carries a deadline, so the reconciler sends it
        again; this records why the message went away. A message naming no document is
        poison, as anywhere else.
        """
        with self.engine.begin() as conn:
            if not _exists(conn, message):
                known = False
            else:
                known = True
                conn.execute(
                    transitions.event(
                        message,
                        "dropped",
                        None,
                        delivery.message_id,
                        {"reason": f"{reason}; the reconciler sends the stage again"},
                    )
                )
        if not known:
            reason = f"document {message.document_id} does not exist"
            self.poison(delivery, "UnknownDocument", reason, message.stage, message=message)
        else:
            logger.warning("%s message %s given up: %s", message.stage, delivery.message_id, reason)


_JSON = msgspec.json.Encoder()
_SKIPPED: Final = '{"skipped": true, "duration_ms": 0}'  # a skipped stage's success detail


class _LostHold(Exception):
    """The attempt no longer holds its row; the transaction that noticed rolls back."""

    def __init__(self, attempt: Attempt) -> None:
        super().__init__(attempt.message.stage)
        self.attempt = attempt


class _Failed(Exception):
    """An attempt's work or completion raised; carries what ``_fail`` needs."""

    def __init__(self, attempt: Attempt, error: BaseException, started: float) -> None:
        super().__init__(type(error).__name__)
        self.attempt = attempt
        self.error = error
        self.started = started


class _FusedFailed(Exception):
    """A short stage's work (or its one statement) raised before any attempt was claimed."""

    def __init__(self, message: StageMessage, error: BaseException, started: float) -> None:
        super().__init__(type(error).__name__)
        self.message = message
        self.error = error
        self.started = started


class _NotTaken(Exception):
    """The fused statement found the row not waiting; its transaction rolls back."""


class _UnknownDocument(Exception):
    """The message names a document that does not exist."""


class _CrashLoop(StageError):
    """Earlier attempts started and never finished: the worker died each time."""

    transient = True

    def __init__(self, unfinished: int) -> None:
        super().__init__(
            f"the stage was started {unfinished} times and never finished "
            "(the worker crashed or was killed each time)"
        )


def _as_retry(message: dramatiq.Message[Any]) -> dramatiq.Message[Any]:
    return message.copy(options={**message.options, RETRY_OPTION: True})


def _no_progress(current: int, total: int) -> None:
    """A short stage holds no row while it works: there is nowhere to record progress."""


def _key(attempt: Attempt) -> tuple[Any, str, int]:
    return (attempt.message.document_id, attempt.message.stage, attempt.fence)


def _driver(conn: Connection) -> psycopg.Connection[Any]:
    """The psycopg connection under ``conn``, for a transaction on an autocommit connection."""
    driver = conn.connection.driver_connection
    assert isinstance(driver, psycopg.Connection)
    return driver


def _exists(conn: Connection, message: StageMessage) -> bool:
    found = conn.execute(select(Document.id).where(Document.id == message.document_id))
    return found.scalar_one_or_none() is not None


def _status(conn: Connection, message: StageMessage) -> str | None:
    """The document's status (``None``: no such document)."""
    found = conn.execute(select(Document.status).where(Document.id == message.document_id))
    return found.scalar_one_or_none()


def _filename(conn: Connection, message: StageMessage) -> str:
    return conn.execute(
        select(Document.filename).where(Document.id == message.document_id)
    ).scalar_one()


def _delivered_times(delivery: Delivery) -> int:
    """How often Dramatiq delivered this message, from its options (which may be forged)."""
    options = delivery.message.get("options")
    retries = options.get("retries") if isinstance(options, dict) else None
    if isinstance(retries, int) and not isinstance(retries, bool) and 0 <= retries < 2**31:
        return 1 + retries
    return 1


def _format_traceback(error: BaseException) -> str | None:
    if isinstance(error, StageError) and not error.transient:
        return None  # a permanent stage error is a verdict on the input, not a crash
    return "".join(traceback.format_exception(error, limit=30))


def _elapsed_ms(started: float) -> int:
    return round((time.monotonic() - started) * 1000)
