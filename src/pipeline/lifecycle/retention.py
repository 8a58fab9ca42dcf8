"""Retention: what the reconciler's leader removes once it is past its age.

Five kinds, each with its age in ``settings.retention`` (0: kept for ever):

- ``blobs``: the uploaded bytes of documents that succeeded that long ago and have no
  ``dead`` letter (off by default: a rerun from a stage that reads the upload needs them);
- ``events``: stage events of finished documents (and of operator actions that name no
  document), never a document's outcome event (``transitions.old_events``);
- ``dead_letters``: letters ``replayed`` or ``discarded``, never a ``dead`` one;
- ``jobs``: finished operation jobs;
- ``webhook_deliveries``: deliveries ``delivered`` or ``cancelled`` (their attempts go with
  them by cascade), never an unfinished or ``dead`` one.

Nothing of an unfinished document is ever removed. Each kind goes in bounded batches
(``batch_size`` rows a statement, at most ``MAX_BATCHES`` a sweep), each batch one
transaction that takes its rows ``SKIP LOCKED`` (a sweep never waits for live work) and
adds what it removed to ``retention_totals``, the counter ``/metrics`` serves. A blob
batch locks the documents first (``FOR NO KEY UPDATE SKIP LOCKED``, step 1 of the lock
order), so a rerun or replace that reopens a document meanwhile is never robbed of its bytes.

:meth:`RetentionSweep.preview` counts what the next sweep would remove with plain reads.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from datetime import timedelta
from typing import Any, Final, Literal, get_args

from sqlalchemy import Connection, Delete, Engine, Select, delete, exists, func, select
from sqlalchemy.dialects.postgresql import insert as upsert

from pipeline.db.models import (
    DeadLetter,
    Document,
    DocumentBlob,
    OperationJob,
    RetentionTotal,
    WebhookDelivery,
)
from pipeline.engine import transitions
from pipeline.settings import RetentionSettings

logger = logging.getLogger(__name__)

RetentionKind = Literal["blobs", "events", "dead_letters", "jobs", "webhook_deliveries"]
RETENTION_KINDS: Final[tuple[RetentionKind, ...]] = get_args(RetentionKind)
MAX_BATCHES: Final = 10
"""Batches of one kind per sweep: a backlog is worked off over several sweeps, so one
sweep stays short (the reconciler's other work waits for it)."""

Chooser = Callable[[Any, int, bool], Select[Any]]
"""(cutoff, limit, lock) → the ids of the rows a batch would remove."""


def _blobs(cutoff: Any, limit: int, lock: bool) -> Select[Any]:
    dead_letter = exists().where(DeadLetter.document_id == Document.id, DeadLetter.status == "dead")
    has_blob = exists().where(DocumentBlob.document_id == Document.id)
    chosen = (
        select(Document.id)
        .where(
            Document.status == "succeeded",
            Document.finished_at < cutoff,
            has_blob,
            ~dead_letter,
        )
        .order_by(Document.finished_at)
        .limit(limit)
    )
    return chosen.with_for_update(key_share=True, skip_locked=True) if lock else chosen


def _jobs(cutoff: Any, limit: int, lock: bool) -> Select[Any]:
    chosen = (
        select(OperationJob.id)
        .where(OperationJob.status.in_(("succeeded", "failed")), OperationJob.finished_at < cutoff)
        .order_by(OperationJob.finished_at)
        .limit(limit)
    )
    return chosen.with_for_update(skip_locked=True) if lock else chosen


def _deliveries(cutoff: Any, limit: int, lock: bool) -> Select[Any]:
    chosen = (
        select(WebhookDelivery.id)
        .where(
            WebhookDelivery.status.in_(("delivered", "cancelled")),
            WebhookDelivery.created_at < cutoff,
        )
        .order_by(WebhookDelivery.created_at)
        .limit(limit)
    )
    return chosen.with_for_update(skip_locked=True) if lock else chosen


def _events(cutoff: Any, limit: int, lock: bool) -> Select[Any]:
    return transitions.old_events(cutoff, limit, lock=lock)


def _letters(cutoff: Any, limit: int, lock: bool) -> Select[Any]:
    return transitions.old_letters(cutoff, limit, lock=lock)


CHOOSERS: Final[Mapping[RetentionKind, Chooser]] = {
    "blobs": _blobs,
    "events": _events,
    "dead_letters": _letters,
    "jobs": _jobs,
    "webhook_deliveries": _deliveries,
}


def _remove(kind: RetentionKind, ids: list[Any]) -> Delete:
    """The rows a batch chose and locked, by id: a ``DELETE … WHERE id IN (subquery)``
    was planned as a sequential scan of the table (measured on 100k events)."""
    if kind == "blobs":
        return delete(DocumentBlob).where(DocumentBlob.document_id.in_(ids))
    if kind == "events":
        return transitions.remove_events(ids)
    if kind == "dead_letters":
        return transitions.remove_letters(ids)
    if kind == "jobs":
        return delete(OperationJob).where(OperationJob.id.in_(ids))
    return delete(WebhookDelivery).where(WebhookDelivery.id.in_(ids))


def _counted(conn: Connection, kind: RetentionKind, removed: int) -> None:
    statement = upsert(RetentionTotal).values(kind=kind, removed=removed)
    conn.execute(
        statement.on_conflict_do_update(
            index_elements=[RetentionTotal.kind],
            set_={"removed": RetentionTotal.removed + removed, "updated_at": func.now()},
        )
    )


class RetentionSweep:
    """One of the reconciler's further sweeps (``Wiring.reconciler``), also run by hand
    with ``pipeline retention``."""

    def __init__(self, engine: Engine, settings: RetentionSettings) -> None:
        self.engine = engine
        self.batch_size = settings.batch_size
        self.ages: dict[RetentionKind, int] = {
            "blobs": settings.blobs_ms,
            "events": settings.events_ms,
            "dead_letters": settings.dead_letters_ms,
            "jobs": settings.jobs_ms,
            "webhook_deliveries": settings.webhook_deliveries_ms,
        }

    def __call__(self) -> Mapping[str, int]:
        return {f"retention_{kind}": count for kind, count in self.sweep().items()}

    def _cutoff(self, kind: RetentionKind) -> Any:
        return func.now() - timedelta(milliseconds=self.ages[kind])

    def sweep(self) -> dict[RetentionKind, int]:
        """Remove what is past its age, in bounded batches; returns the counts by kind."""
        removed: dict[RetentionKind, int] = {}
        for kind in RETENTION_KINDS:
            if not self.ages[kind]:
                continue
            total = 0
            for _ in range(MAX_BATCHES):
                with self.engine.begin() as conn:
                    chosen = CHOOSERS[kind](self._cutoff(kind), self.batch_size, True)
                    ids = list(conn.execute(chosen).scalars())
                    count = conn.execute(_remove(kind, ids)).rowcount if ids else 0
                    if count:
                        _counted(conn, kind, count)
                total += count
                if count < self.batch_size:
                    break
            removed[kind] = total
        if any(removed.values()):
            logger.info("retention removed %s", removed)
        return removed

    def preview(self) -> dict[RetentionKind, int | None]:
        """What the next sweep would remove, by kind (``None``: kept for ever); plain
        reads, no locks."""
        counts: dict[RetentionKind, int | None] = {}
        with self.engine.connect() as conn:
            for kind in RETENTION_KINDS:
                if not self.ages[kind]:
                    counts[kind] = None
                    continue
                chosen = CHOOSERS[kind](
                    self._cutoff(kind), self.batch_size * MAX_BATCHES, False
                ).subquery()
                counts[kind] = conn.execute(select(func.count()).select_from(chosen)).scalar_one()
        return counts


def removed_totals(conn: Connection) -> dict[str, int]:
    """What the retention sweeps removed, ever, by kind (for ``/metrics``)."""
    rows = conn.execute(select(RetentionTotal.kind, RetentionTotal.removed)).all()
    return {row.kind: int(row.removed) for row in rows}
