"""The stage executor: claim → work → complete → send next, or fail.

This is the one place that writes ``stage_runs``. Every transition also appends to
``stage_events``, so the history of a document explains each of its states.

Claims are fenced: a row moves to ``running`` only when its generation matches the
message and it is waiting (``queued``/``retrying``) or its running attempt is past
its deadline; completion and failure only apply while the row is still held by the
same attempt. A duplicate or stale message therefore does nothing but leave an
event saying why it was dropped.
"""

from __future__ import annotations

import enum
import logging
import os
import socket
import time
import traceback
import uuid
from collections.abc import Mapping
from datetime import timedelta
from typing import Any

import dramatiq
import msgspec
from dramatiq.common import compute_backoff
from dramatiq.middleware.time_limit import TimeLimitExceeded
from sqlalchemy import Connection, Engine, func, insert, select, update

from pipeline.db.models import DeadLetter, Document, StageEvent, StageRun
from pipeline.errors import StageError
from pipeline.messages import StageMessage
from pipeline.services.dispatch import Dispatcher
from pipeline.services.failures import Failure, classify
from pipeline.services.handlers import AnyHandler
from pipeline.stages import StageName, StagePolicy, next_stage

logger = logging.getLogger(__name__)

RUNNING_SLACK = timedelta(seconds=30)
"""Added to a stage's time limit to get the deadline of a running attempt."""
QUEUED_GRACE = timedelta(minutes=2)
"""How long a queued row may wait for its message before it counts as stranded."""


class Outcome(enum.Enum):
    SUCCEEDED = "succeeded"
    RETRYING = "retrying"
    DEAD = "dead"
    DROPPED = "dropped"


class Delivery(msgspec.Struct, frozen=True):
    """What the broker told us about this delivery of a message."""

    message_id: str
    actor_name: str
    queue_name: str
    message: dict[str, Any]

    @classmethod
    def from_message(cls, message: dramatiq.Message[Any]) -> Delivery:
        return cls(
            message_id=message.message_id,
            actor_name=message.actor_name,
            queue_name=message.queue_name,
            message=dict(message.asdict()),
        )


class Claim(msgspec.Struct, frozen=True):
    message: StageMessage
    attempt: int
    delivery: Delivery


class StageExecutor:
    """Runs one delivery of one stage message against Postgres."""

    def __init__(
        self,
        engine: Engine,
        dispatcher: Dispatcher,
        handlers: Mapping[StageName, AnyHandler],
        policies: Mapping[StageName, StagePolicy],
        *,
        worker_id: str | None = None,
    ) -> None:
        self.engine = engine
        self.dispatcher = dispatcher
        self.handlers = handlers
        self.policies = policies
        self.worker_id = worker_id or f"{socket.gethostname()}:{os.getpid()}"

    def execute(self, stage: StageName, payload: object, delivery: Delivery) -> Outcome:
        try:
            message = StageMessage.from_args(payload)
        except msgspec.ValidationError as error:
            self._poison(stage, delivery, "InvalidMessage", f"malformed stage message: {error}")
            return Outcome.DEAD
        if message.stage != stage:
            reason = f"message for stage {message.stage!r} arrived on the {stage!r} queue"
            self._poison(stage, delivery, "InvalidMessage", reason)
            return Outcome.DEAD

        claim = self._claim(message, delivery)
        if isinstance(claim, Outcome):
            return claim
        started = time.monotonic()
        try:
            try:
                return self._complete(claim, self._work(claim), started)
            except _LostHold:
                raise
            except (Exception, TimeLimitExceeded) as error:
                return self._fail(claim, classify(error, self.policies[stage]), error, started)
        except _LostHold:
            self._superseded(claim)
            return Outcome.DROPPED

    # -- claim ---------------------------------------------------------------------------

    def _claim(self, message: StageMessage, delivery: Delivery) -> Claim | Outcome:
        try:
            with self.engine.begin() as conn:
                attempt = self._take(conn, message, delivery)
                if attempt is None:
                    self._drop(conn, message, delivery)
                    return Outcome.DROPPED
                conn.execute(
                    update(Document)
                    .where(Document.id == message.document_id, Document.status == "pending")
                    .values(status="processing", updated_at=func.now())
                )
                detail = {"worker": self.worker_id}
                _event(conn, message, "claimed", attempt, delivery.message_id, detail)
        except _UnknownDocument:
            reason = f"document {message.document_id} does not exist"
            self._poison(message.stage, delivery, "UnknownDocument", reason, message=message)
            return Outcome.DEAD
        return Claim(message=message, attempt=attempt, delivery=delivery)

    def _take(self, conn: Connection, message: StageMessage, delivery: Delivery) -> int | None:
        """Move the row to ``running`` if this message may run it; returns the attempt."""
        time_limit = timedelta(milliseconds=self.policies[message.stage].time_limit_ms)
        waiting = StageRun.status.in_(("queued", "retrying"))
        abandoned = (StageRun.status == "running") & (StageRun.deadline_at < func.now())
        return conn.execute(
            update(StageRun)
            .where(*_row(message), StageRun.generation == message.generation, waiting | abandoned)
            .values(
                status="running",
                attempts=StageRun.attempts + 1,
                started_at=func.now(),
                finished_at=None,
                duration_ms=None,
                deadline_at=func.now() + time_limit + RUNNING_SLACK,
                message_id=delivery.message_id,
                worker_id=self.worker_id,
                updated_at=func.now(),
            )
            .returning(StageRun.attempts)
        ).scalar_one_or_none()

    def _drop(self, conn: Connection, message: StageMessage, delivery: Delivery) -> None:
        """Record why a message was not claimed."""
        current = conn.execute(
            select(StageRun.status, StageRun.generation).where(*_row(message))
        ).one_or_none()
        if current is None:
            exists = conn.execute(
                select(Document.id).where(Document.id == message.document_id)
            ).scalar_one_or_none()
            if exists is None:
                raise _UnknownDocument
            reason = "the document has no row for this stage"
        elif current.generation != message.generation:
            reason = (
                f"stale message: generation {message.generation}, "
                f"the document is at generation {current.generation}"
            )
        elif current.status == "running":
            reason = "duplicate: another attempt holds this stage and is within its deadline"
        else:
            reason = f"duplicate: the stage is already {current.status}"
        _event(conn, message, "dropped", None, delivery.message_id, {"reason": reason})
        logger.info("dropped %s message for %s: %s", message.stage, message.document_id, reason)

    # -- work ----------------------------------------------------------------------------

    def _work(self, claim: Claim) -> object:
        handler = self.handlers[claim.message.stage]
        document_id = claim.message.document_id
        with self.engine.connect() as conn:
            data = handler.load(conn, document_id)
        return handler.compute(data)

    # -- complete ------------------------------------------------------------------------

    def _complete(self, claim: Claim, result: object, started: float) -> Outcome:
        message = claim.message
        handler = self.handlers[message.stage]
        following = next_stage(message.stage)
        outgoing = None
        if following is not None:
            outgoing = StageMessage(message.document_id, following, message.generation)
        dramatiq_message = self.dispatcher.build(outgoing) if outgoing else None
        duration_ms = _elapsed_ms(started)
        with self.engine.begin() as conn:
            summary = handler.store(conn, message.document_id, message.generation, result)
            _release(conn, claim, "succeeded", duration_ms, deadline=None, error=None)
            _event(
                conn,
                message,
                "succeeded",
                claim.attempt,
                claim.delivery.message_id,
                {**summary, "duration_ms": duration_ms},
            )
            if outgoing is not None and dramatiq_message is not None:
                self._queue(conn, outgoing, dramatiq_message.message_id)
            else:
                conn.execute(
                    update(Document)
                    .where(
                        Document.id == message.document_id,
                        Document.generation == message.generation,
                    )
                    .values(
                        status="succeeded",
                        failure_reason=None,
                        finished_at=func.now(),
                        updated_at=func.now(),
                    )
                )
        if dramatiq_message is not None:
            self._send(dramatiq_message)
        return Outcome.SUCCEEDED

    def _queue(self, conn: Connection, message: StageMessage, message_id: str) -> None:
        conn.execute(
            update(StageRun)
            .where(*_row(message))
            .values(
                status="queued",
                generation=message.generation,
                attempts=0,
                queued_at=func.now(),
                started_at=None,
                finished_at=None,
                duration_ms=None,
                deadline_at=func.now() + QUEUED_GRACE,
                message_id=message_id,
                updated_at=func.now(),
            )
        )
        _event(conn, message, "queued", None, message_id, {})

    def _send(self, message: dramatiq.Message[Any]) -> None:
        try:
            self.dispatcher.send(message)
        except Exception:
            # The row is committed as queued with a deadline: the reconciler re-sends it.
            logger.exception("could not send %s message %s", message.queue_name, message.message_id)

    # -- fail ----------------------------------------------------------------------------

    def _fail(
        self, claim: Claim, failure: Failure, error: BaseException, started: float
    ) -> Outcome:
        policy = self.policies[claim.message.stage]
        duration_ms = _elapsed_ms(started)
        if failure.transient and claim.attempt < policy.max_attempts:
            _, delay = compute_backoff(
                claim.attempt - 1,
                factor=policy.min_backoff_ms,
                max_backoff=policy.max_backoff_ms,
            )
            self._retrying(claim, failure, duration_ms, delay)
            raise dramatiq.Retry(failure.reason, delay=delay) from error
        if failure.transient:
            failure = failure.exhausted(claim.attempt)
        self._dead(claim, failure, error, duration_ms)
        return Outcome.DEAD

    def _retrying(self, claim: Claim, failure: Failure, duration_ms: int, delay: int) -> None:
        message = claim.message
        with self.engine.begin() as conn:
            due = func.now() + timedelta(milliseconds=delay) + RUNNING_SLACK
            _release(conn, claim, "retrying", duration_ms, deadline=due, error=failure)
            _event(
                conn,
                message,
                "retrying",
                claim.attempt,
                claim.delivery.message_id,
                {**failure.detail(), "delay_ms": delay, "duration_ms": duration_ms},
            )
        logger.warning(
            "%s of %s failed (attempt %d), retrying in %d ms: %s",
            message.stage,
            message.document_id,
            claim.attempt,
            delay,
            failure.reason,
        )

    def _dead(self, claim: Claim, failure: Failure, error: BaseException, duration_ms: int) -> None:
        message = claim.message
        with self.engine.begin() as conn:
            _release(conn, claim, "dead", duration_ms, deadline=None, error=failure)
            _dead_letter(
                conn,
                claim.delivery,
                failure,
                claim.attempt,
                message=message,
                trace=_format_traceback(error),
            )
            conn.execute(
                update(Document)
                .where(
                    Document.id == message.document_id, Document.generation == message.generation
                )
                .values(
                    status="failed",
                    failure_reason=failure.document_reason(message.stage),
                    finished_at=func.now(),
                    updated_at=func.now(),
                )
            )
            _event(
                conn,
                message,
                "dead",
                claim.attempt,
                claim.delivery.message_id,
                {**failure.detail(), "duration_ms": duration_ms},
            )
        logger.error(
            "%s of %s is dead after %d attempt(s): %s",
            message.stage,
            message.document_id,
            claim.attempt,
            failure.reason,
        )

    def _superseded(self, claim: Claim) -> None:
        """Our attempt lost its hold on the row (deadline passed, or a rerun bumped it)."""
        with self.engine.begin() as conn:
            _event(
                conn,
                claim.message,
                "superseded",
                claim.attempt,
                claim.delivery.message_id,
                {"reason": "the attempt no longer held the stage when it finished"},
            )

    def _poison(
        self,
        stage: str,
        delivery: Delivery,
        error_type: str,
        reason: str,
        *,
        message: StageMessage | None = None,
    ) -> None:
        """Dead-letter a message that can never be processed, whatever its retries."""
        failure = Failure(error_type=error_type, reason=reason, transient=False)
        with self.engine.begin() as conn:
            _dead_letter(
                conn,
                delivery,
                failure,
                1,
                message=message,
                stage=stage,
                trace=None,
                document_known=False,
            )
        logger.error("dead-lettered poison message %s: %s", delivery.message_id, reason)


class _LostHold(Exception):
    """The attempt no longer holds its row; the transaction that noticed rolls back."""


class _UnknownDocument(Exception):
    """The message names a document that does not exist."""


def _row(message: StageMessage) -> tuple[Any, ...]:
    return (StageRun.document_id == message.document_id, StageRun.stage == message.stage)


def _held(claim: Claim) -> tuple[Any, ...]:
    return (
        *_row(claim.message),
        StageRun.generation == claim.message.generation,
        StageRun.status == "running",
        StageRun.attempts == claim.attempt,
    )


def _release(
    conn: Connection,
    claim: Claim,
    status: str,
    duration_ms: int,
    *,
    deadline: Any,
    error: Failure | None,
) -> None:
    """End an attempt: move its row on, but only while this attempt still holds it."""
    errors = error.columns() if error else dict.fromkeys(Failure.COLUMNS)
    held = conn.execute(
        update(StageRun)
        .where(*_held(claim))
        .values(
            status=status,
            finished_at=func.now(),
            duration_ms=duration_ms,
            deadline_at=deadline,
            updated_at=func.now(),
            **errors,
        )
    ).rowcount
    if held != 1:
        raise _LostHold


def _event(
    conn: Connection,
    message: StageMessage,
    event: str,
    attempt: int | None,
    message_id: str | None,
    detail: dict[str, Any],
) -> None:
    conn.execute(
        insert(StageEvent).values(
            document_id=message.document_id,
            stage=message.stage,
            generation=message.generation,
            event=event,
            attempt=attempt,
            message_id=message_id,
            detail=detail,
        )
    )


def _dead_letter(
    conn: Connection,
    delivery: Delivery,
    failure: Failure,
    attempts: int,
    *,
    message: StageMessage | None,
    trace: str | None,
    stage: str | None = None,
    document_known: bool = True,
) -> None:
    conn.execute(
        insert(DeadLetter).values(
            id=uuid.uuid4(),
            document_id=message.document_id if message and document_known else None,
            stage=message.stage if message else stage,
            generation=message.generation if message else None,
            actor_name=delivery.actor_name,
            queue_name=delivery.queue_name,
            message_id=delivery.message_id,
            message=delivery.message,
            error_type=failure.error_type,
            error_message=failure.reason,
            traceback=trace,
            attempts=attempts,
        )
    )


def _format_traceback(error: BaseException) -> str | None:
    if isinstance(error, StageError) and not error.transient:
        return None  # a permanent stage error is a verdict on the input, not a crash
    return "".join(traceback.format_exception(error, limit=30))


def _elapsed_ms(started: float) -> int:
    return round((time.monotonic() - started) * 1000)
