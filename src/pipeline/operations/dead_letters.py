"""Reading dead letters: filtered, cursor-paginated lists and the whole of one letter.

A letter belongs to the tenant of its document. ``tenant=None`` (the trusted CLI)
sees every letter; a tenant sees only its documents' letters, never those that name
no document (poison messages), which only the CLI shows.
"""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

import msgspec
from sqlalchemy import Connection, Select, select, tuple_

from pipeline.db.models import DeadLetter, Document, StageEvent
from pipeline.operations.common import TimeFilter
from pipeline.queries.cursors import CursorCodec
from pipeline.stages import StageName
from pipeline.statuses import DeadLetterStatus, StageEventName
from pipeline.text import PlainText


class LetterFilter(TimeFilter, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """Which dead letters an operator means; every field narrows the selection."""

    stage: StageName | None = None
    error_type: PlainText | None = None
    document_id: uuid.UUID | None = None
    status: DeadLetterStatus | None = None

    def where(self) -> list[Any]:
        conditions: list[Any] = []
        if self.stage is not None:
            conditions.append(DeadLetter.stage == self.stage)
        if self.error_type is not None:
            conditions.append(DeadLetter.error_type == self.error_type)
        if self.since is not None:
            conditions.append(DeadLetter.failed_at >= self.since)
        if self.until is not None:
            conditions.append(DeadLetter.failed_at < self.until)
        if self.document_id is not None:
            conditions.append(DeadLetter.document_id == self.document_id)
        if self.status is not None:
            conditions.append(DeadLetter.status == self.status)
        return conditions


class LetterSummary(msgspec.Struct, frozen=True):
    id: uuid.UUID
    stage: str | None
    document_id: uuid.UUID | None
    generation: int | None
    error_type: str
    error_message: str
    attempts: int
    failed_at: datetime
    status: DeadLetterStatus
    replay_count: int
    replayed_at: datetime | None
    queue_name: str
    actor_name: str


class EventView(msgspec.Struct, frozen=True):
    at: datetime
    stage: str | None
    generation: int
    event: StageEventName
    attempt: int | None
    message_id: str | None
    detail: dict[str, Any]


class LetterDetail(msgspec.Struct, frozen=True):
    letter: LetterSummary
    message: dict[str, Any]
    traceback: str | None
    replayed_message_id: str | None
    history: list[EventView]
    """The document's whole stage history, oldest first."""


class LetterPage(msgspec.Struct, frozen=True):
    items: list[LetterSummary]
    next_cursor: str | None


SUMMARY_COLUMNS = (
    DeadLetter.id,
    DeadLetter.stage,
    DeadLetter.document_id,
    DeadLetter.generation,
    DeadLetter.error_type,
    DeadLetter.error_message,
    DeadLetter.attempts,
    DeadLetter.failed_at,
    DeadLetter.status,
    DeadLetter.replay_count,
    DeadLetter.replayed_at,
    DeadLetter.queue_name,
    DeadLetter.actor_name,
)


def of_tenant(tenant: str | None) -> list[Any]:
    """The condition that keeps a tenant's letters (none: every letter)."""
    if tenant is None:
        return []
    return [DeadLetter.document_id.in_(select(Document.id).where(Document.tenant == tenant))]


def matching(
    selection: LetterFilter, limit: int | None = None, *, tenant: str | None = None
) -> Select[Any]:
    """Ids of the letters a filter selects, oldest first (the order bulk actions use)."""
    query = (
        select(DeadLetter.id)
        .where(*selection.where(), *of_tenant(tenant))
        .order_by(DeadLetter.failed_at, DeadLetter.id)
    )
    return query.limit(limit) if limit is not None else query


def list_letters(
    conn: Connection,
    selection: LetterFilter,
    *,
    limit: int,
    cursors: CursorCodec,
    cursor: str | None = None,
    tenant: str | None = None,
) -> LetterPage:
    """Newest first, keyset-paginated on (failed_at, id)."""
    query = select(*SUMMARY_COLUMNS).where(*selection.where(), *of_tenant(tenant))
    if cursor is not None:
        failed_at, last_id = cursors.decode("dead-letters", tenant, cursor)
        query = query.where(tuple_(DeadLetter.failed_at, DeadLetter.id) < (failed_at, last_id))
    query = query.order_by(DeadLetter.failed_at.desc(), DeadLetter.id.desc()).limit(limit + 1)
    rows = conn.execute(query).all()
    items = [LetterSummary(**row._asdict()) for row in rows[:limit]]
    next_cursor = None
    if len(rows) > limit:
        next_cursor = cursors.encode("dead-letters", tenant, items[-1].failed_at, items[-1].id)
    return LetterPage(items=items, next_cursor=next_cursor)


def get_letter(
    conn: Connection, letter_id: uuid.UUID, *, tenant: str | None = None
) -> LetterDetail | None:
    row = conn.execute(
        select(
            *SUMMARY_COLUMNS,
            DeadLetter.message,
            DeadLetter.traceback,
            DeadLetter.replayed_message_id,
        ).where(DeadLetter.id == letter_id, *of_tenant(tenant))
    ).one_or_none()
    if row is None:
        return None
    values = row._asdict()
    extra = {key: values.pop(key) for key in ("message", "traceback", "replayed_message_id")}
    summary = LetterSummary(**values)
    history = document_history(conn, summary.document_id) if summary.document_id else []
    return LetterDetail(letter=summary, history=history, **extra)


def document_history(conn: Connection, document_id: uuid.UUID) -> list[EventView]:
    """A document's whole stage history, oldest first (the caller checked its tenant)."""
    events = conn.execute(
        select(
            StageEvent.created_at,
            StageEvent.stage,
            StageEvent.generation,
            StageEvent.event,
            StageEvent.attempt,
            StageEvent.message_id,
            StageEvent.detail,
        )
        .where(StageEvent.document_id == document_id)
        .order_by(StageEvent.id)
    ).all()
    return [EventView(*event) for event in events]
