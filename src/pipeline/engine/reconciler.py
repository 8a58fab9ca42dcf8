"""The reconciler: repairs what Redis lost, using what Postgres knows.

Messages are hints; stage rows are the truth. A row that sits in ``queued``,
``running`` or ``retrying`` past its deadline has lost its message (Redis restarted,
a send failed after a commit, a delayed retry vanished) or its worker (killed mid
stage). Each sweep gives such rows a new message, in bounded batches, and records a
``resent`` event. An abandoned ``running`` row goes back to ``queued``: its old
attempt can no longer complete, because completion is fenced on the attempt's token.

The reconciler follows the lock order of ``engine.transitions`` (document, then stage rows)
and takes every lock with ``SKIP LOCKED``: a document that live work or an operator
holds is left for the next sweep, so a sweep never waits for anyone and nobody waits
for, or deadlocks with, a sweep.

Only one reconciler sweeps at a time: the active one holds a Postgres advisory lock
on a dedicated connection; the others stand by and take over when its session ends.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from datetime import timedelta
from typing import Any, Final

import dramatiq
import msgspec
from sqlalchemy import Connection, Engine, and_, exists, func, select, text, update
from sqlalchemy.orm import aliased

from pipeline.db.models import Document, StageRun
from pipeline.engine import transitions
from pipeline.engine.dispatch import Dispatcher
from pipeline.messages import StageMessage
from pipeline.settings import Settings
from pipeline.statuses import UNFINISHED_DOCUMENT_STATUSES, FinishedDocumentStatus

logger = logging.getLogger(__name__)

LOCK_KEY: Final = int.from_bytes(b"pipeline", "big")
"""The advisory lock that elects the active reconciler ("pipeline" as a bigint)."""
MAX_BATCHES_PER_SWEEP: Final = 20
FINISH_BATCH: Final = 1000
STAGES_CHANNEL: Final = "pipeline_stages"
"""Notified when an operator resumes a stage: the rows that waited are sent at once."""
WAKE_POLL_S: Final = 0.25
"""How often a reconciler waiting for notifications checks whether it should stop."""


Sweep = Callable[[], Mapping[str, int]]
"""A further sweep the active reconciler runs after its own (jobs, webhook deliveries,
retention), handed in by the composition root: it returns what it did, as counts by
name (``{"jobs_resent": 1}``), which the report and the log carry."""


class SweepReport(msgspec.Struct, frozen=True):
    resent: int
    finished: int
    counts: dict[str, int] = msgspec.field(default_factory=dict)
    """What the further sweeps did, by name."""

    def describe(self) -> str:
        parts = [f"re-sent {self.resent} message(s)", f"finished {self.finished} document(s)"]
        parts += [f"{name.replace('_', ' ')}: {count}" for name, count in self.counts.items()]
        return ", ".join(parts)


class Reconciler:
    def __init__(
        self,
        engine: Engine,
        dispatcher: Dispatcher,
        settings: Settings,
        sweeps: Sequence[Sweep] = (),
        *,
        wakers: Mapping[str, Sweep] | None = None,
    ) -> None:
        """``sweeps`` run after the stage rows' own, in order, each on its own: one that
        raises is logged and the others still run. ``wakers`` maps a ``NOTIFY`` channel
        to a sweep the active reconciler runs as soon as the channel is notified (it
        listens on its advisory-lock connection), between its regular sweeps."""
        self.engine = engine
        self.dispatcher = dispatcher
        self.sweeps = tuple(sweeps)
        self.wakers: dict[str, Sweep] = {
            STAGES_CHANNEL: lambda: {"resumed_resent": self.resend_waited()},
            **(wakers or {}),
        }
        self.grace = timedelta(milliseconds=settings.stages.queued_grace_ms)
        self.batch_size = settings.reconciler.batch_size
        self.interval = settings.reconciler.interval_s

    # -- one sweep -----------------------------------------------------------------------

    def sweep(self) -> SweepReport:
        resent = self.resend_waited()
        for _ in range(MAX_BATCHES_PER_SWEEP):
            count = self._resend_batch(transitions.lock_overdue_documents, transitions.overdue)
            resent += count
            if count < self.batch_size:
                break
        finished = self._finish_documents()
        counts: dict[str, int] = {}
        for further in self.sweeps:
            try:
                counts.update(further())
            except Exception:
                logger.exception("reconciler: a sweep failed (%r); the others go on", further)
        report = SweepReport(resent, finished, counts)
        if resent or finished or any(counts.values()):
            logger.info("sweep: %s", report.describe())
        return report

    def resend_waited(self) -> int:
        """Send a message to every row that waited while its stage was paused (once: the
        re-send moves the row past the resume); run by each sweep, and at once when a
        resume notifies ``pipeline_stages``."""
        resent = 0
        for _ in range(MAX_BATCHES_PER_SWEEP):
            count = self._resend_batch(
                transitions.lock_documents_that_waited, transitions.waited, why="resumed"
            )
            resent += count
            if count < self.batch_size:
                break
        if not resent:
            with self.engine.begin() as conn:
                conn.execute(transitions.drained_resumes())
        return resent

    def _resend_batch(
        self,
        lock: Callable[[int], Any],
        rows_of: Callable[[list[Any]], Any],
        *,
        why: str = "overdue",
    ) -> int:
        envelopes: list[dramatiq.Message[Any]] = []
        with self.engine.begin() as conn:
            locked = list(conn.execute(lock(self.batch_size)).scalars())
            rows = conn.execute(rows_of(locked)).all() if locked else []
            for row in rows:
                message = StageMessage(row.document_id, row.stage, row.generation)
                envelope = self.dispatcher.build(message)
                conn.execute(
                    transitions.resend(message, row.status, envelope.message_id, self.grace)
                )
                detail = {
                    "by": "reconciler",
                    "why": why,
                    "previous_status": row.status,
                    "attempts": row.attempts,
                }
                conn.execute(
                    transitions.event(message, "resent", None, envelope.message_id, detail)
                )
                envelopes.append(envelope)
        for envelope in envelopes:
            # On failure the row keeps its new deadline: the next sweep tries again.
            self.dispatcher.send_after_commit(envelope)
        return len(envelopes)

    def _finish_documents(self) -> int:
        """Close documents whose final state is in the stage rows but not on the document."""
        finished = 0
        with self.engine.begin() as conn:
            finished += _finish(conn, "succeeded", StageRun.status == "succeeded", _is_last())
            finished += _finish(conn, "failed", StageRun.status == "dead")
        return finished

    # -- leadership ----------------------------------------------------------------------

    def run(self, stop: threading.Event) -> None:
        """Sweep every ``interval`` while holding the lock; otherwise stand by."""
        while not stop.is_set():
            try:
                with self.engine.connect() as lock:
                    lock = lock.execution_options(isolation_level="AUTOCOMMIT")
                    if lock.execute(select(func.pg_try_advisory_lock(LOCK_KEY))).scalar():
                        logger.info("reconciler: active (holding the advisory lock)")
                        self._lead(lock, stop)
                    else:
                        logger.debug("reconciler: standing by")
                        stop.wait(self.interval)
            except Exception:
                logger.exception("reconciler: lost its connection; retrying")
                stop.wait(self.interval)

    def _lead(self, lock: Connection, stop: threading.Event) -> None:
        for channel in self.wakers:
            lock.execute(text(f'LISTEN "{channel}"'))
        try:
            while not stop.is_set():
                try:
                    self.sweep()
                except Exception:
                    logger.exception("reconciler: sweep failed")
                self._wait(lock, stop)
                lock.execute(text("SELECT 1"))  # raises if the lock's session is gone
        finally:
            if not lock.closed and not lock.invalidated:
                lock.execute(select(func.pg_advisory_unlock(LOCK_KEY)))

    def _wait(self, lock: Connection, stop: threading.Event) -> None:
        """Wait ``interval`` for the next sweep, running a waker's sweep whenever its
        channel is notified meanwhile (notifications that arrive together run it once)."""
        if not self.wakers:
            stop.wait(self.interval)
            return
        driver: Any = lock.connection.driver_connection
        deadline = time.monotonic() + self.interval
        while not stop.is_set():
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return
            notified = {
                notice.channel
                for notice in driver.notifies(timeout=min(remaining, WAKE_POLL_S), stop_after=1)
            }
            for channel in sorted(notified & self.wakers.keys()):
                try:
                    self.wakers[channel]()
                except Exception:
                    logger.exception("reconciler: the %s sweep failed", channel)


def _is_last() -> Any:
    """The row is the last of its document's plan (no row after it)."""
    later = aliased(StageRun)
    return ~exists().where(
        later.document_id == StageRun.document_id, later.position > StageRun.position
    )


def _finish(conn: Connection, status: FinishedDocumentStatus, *conditions: Any) -> int:
    """Finish the documents the evidence says are done: lock them first (skipping those
    locked), then update them with the evidence read afresh under the locks."""
    evidence = exists().where(
        StageRun.document_id == Document.id,
        StageRun.generation == Document.generation,
        and_(*conditions),
    )
    unfinished = Document.status.in_(UNFINISHED_DOCUMENT_STATUSES)
    locked = list(
        conn.execute(
            select(Document.id)
            .where(unfinished, evidence)
            .order_by(Document.id)
            .limit(FINISH_BATCH)
            .with_for_update(key_share=True, skip_locked=True)
        ).scalars()
    )
    if not locked:
        return 0
    values: dict[str, Any] = {"status": status, "finished_at": func.now(), "updated_at": func.now()}
    if status == "failed":
        values["failure_reason"] = func.coalesce(
            Document.failure_reason, "a stage is dead (recorded by the reconciler)"
        )
    # The document's outcome event is written by the trigger on ``documents.status``.
    ids = conn.execute(
        update(Document)
        .where(Document.id.in_(locked), unfinished, evidence)
        .values(**values)
        .returning(Document.id)
    ).all()
    return len(ids)
