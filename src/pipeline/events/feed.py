"""Reading ``stage_events`` as a stream: what committed after a cursor, in a stable order.

An event's ``id`` comes from a sequence when it is inserted, not when its transaction
commits: event 105 may become visible after event 106. A reader that remembered "106"
would then never see 105. So the feed orders events by ``(xact, id)`` (``xact``: the
id of the transaction that wrote the event) and reads only events whose transaction
is older than every transaction still running (``pg_snapshot_xmin``): every such
transaction has ended, so no event can ever appear *below* the cursor afterwards, and
the cursor can move past everything read. An event waits at most as long as the
oldest writing transaction in the cluster runs: milliseconds for the pipeline's own;
the readers poll again shortly while something is held back.

Events of one document keep their causal order: each transition locks the document
first and gets its transaction id no later than that, so a later transition of the
same document has a later ``xact``. (Two transactions that queue on the same
document at once could be read in the order they started rather than committed; the
pipeline's transitions of one document follow one another, so this does not arise
in its flow.)

Events written before migration 0009 have no ``xact``; they sort first (as 0).
"""

from __future__ import annotations

import uuid
from collections.abc import Collection
from datetime import datetime
from typing import Any, Final

import msgspec
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection

from pipeline.errors import PipelineError
from pipeline.statuses import OUTCOME_EVENT_NAMES, StreamedEventName


class InvalidEventId(PipelineError):
    """A ``Last-Event-ID`` this API did not issue."""

    def __init__(self, raw: str) -> None:
        self.raw = raw
        super().__init__(
            f"Last-Event-ID {raw[:80]!r} is not an event id of this API "
            "(ids look like '123456-789'; omit the header to start from the beginning)"
        )


class Cursor(msgspec.Struct, frozen=True, order=True):
    """A position in the feed: after the event ``id`` of transaction ``xact``."""

    xact: int
    id: int

    def encode(self) -> str:
        return f"{self.xact}-{self.id}"

    @classmethod
    def parse(cls, raw: str) -> Cursor:
        xact, sep, event = raw.strip().partition("-")
        if not sep or not xact.isdigit() or not event.isdigit() or len(raw) > 41:
            raise InvalidEventId(raw)
        return cls(int(xact), int(event))


START: Final = Cursor(0, 0)
"""Before every event."""


class FeedEvent(msgspec.Struct, frozen=True):
    """One event as a stream carries it (the ``data`` of a server-sent event)."""

    id: str
    """Its position, as the stream's event ``id`` (resume with ``Last-Event-ID``)."""
    event: StreamedEventName
    document_id: uuid.UUID
    stage: str | None
    generation: int
    attempt: int | None
    at: datetime
    detail: dict[str, Any]

    @property
    def cursor(self) -> Cursor:
        return Cursor.parse(self.id)

    @property
    def is_outcome(self) -> bool:
        return self.event in OUTCOME_EVENT_NAMES


class Routed(msgspec.Struct, frozen=True):
    """An event with what the hub routes it by."""

    cursor: Cursor
    tenant: str
    event: FeedEvent


class Batch(msgspec.Struct, frozen=True):
    events: list[Routed]
    held: bool
    """Whether a later event exists that is not settled yet (read again soon)."""
    horizon: int
    """The oldest transaction still running when this was read."""


_SELECT = """
SELECT coalesce(e.xact, 0) AS xact, e.id, e.document_id, d.tenant, e.stage, e.generation,
       e.event, e.attempt, e.created_at, e.detail, h.xmin
FROM stage_events AS e
JOIN documents AS d ON d.id = e.document_id
CROSS JOIN (SELECT pg_snapshot_xmin(pg_current_snapshot())::text::bigint AS xmin) AS h
WHERE e.event = ANY(:events) AND {where}
ORDER BY coalesce(e.xact, 0), e.id
LIMIT :limit
"""

_AFTER_LIVE = "e.xact >= :xact AND (e.xact > :xact OR e.id > :id)"
"""After a cursor, for readers that start at the present (``xact`` is set): the BRIN
index on ``xact`` finds the recent pages."""
_AFTER_ANY = "(coalesce(e.xact, 0), e.id) > (:xact, :id)"
"""After a cursor that may be before migration 0009 (one document's events: its index)."""


async def read(
    conn: AsyncConnection,
    after: Cursor,
    events: Collection[str],
    *,
    document_id: uuid.UUID | None = None,
    tenant: str | None = None,
    limit: int = 500,
) -> Batch:
    """The settled events after ``after`` (of one document, or one tenant), in order.

    Reading stops at the first event whose transaction is not older than every running
    one (``held``): what comes after it is read once it is.
    """
    where = [_AFTER_ANY if document_id is not None or after.xact == 0 else _AFTER_LIVE]
    params: dict[str, Any] = {
        "events": list(events),
        "xact": after.xact,
        "id": after.id,
        "limit": limit,
    }
    if document_id is not None:
        where.append("e.document_id = :document_id")
        params["document_id"] = document_id
    if tenant is not None:
        where.append("d.tenant = :tenant")
        params["tenant"] = tenant
    rows = (await conn.execute(text(_SELECT.format(where=" AND ".join(where))), params)).all()
    settled: list[Routed] = []
    held = False
    horizon = rows[0].xmin if rows else await _horizon(conn)
    for row in rows:
        if row.xact >= row.xmin:
            held = True
            break
        cursor = Cursor(row.xact, row.id)
        settled.append(
            Routed(
                cursor=cursor,
                tenant=row.tenant,
                event=FeedEvent(
                    id=cursor.encode(),
                    event=row.event,
                    document_id=row.document_id,
                    stage=row.stage,
                    generation=row.generation,
                    attempt=row.attempt,
                    at=row.created_at,
                    detail=row.detail,
                ),
            )
        )
    return Batch(settled, held, horizon)


async def _horizon(conn: AsyncConnection) -> int:
    value = await conn.scalar(text("SELECT pg_snapshot_xmin(pg_current_snapshot())::text::bigint"))
    return int(value or 0)


async def present(conn: AsyncConnection) -> Cursor:
    """A cursor at the present: every event after it is settled later than now or is
    among those of transactions still running (a reader from here misses nothing new)."""
    return Cursor(await _horizon(conn), 0)


class StreamStart(msgspec.Struct, frozen=True):
    """What a document's stream needs to know before it opens."""

    found: bool
    """The tenant has the document (and it is not deleted)."""
    finished: bool
    outcome_ahead: bool
    """An outcome event after the client's cursor exists (committed) already."""


async def stream_start(
    conn: AsyncConnection, document_id: uuid.UUID, tenant: str, after: Cursor
) -> StreamStart:
    row = (
        await conn.execute(
            text(
                """
                SELECT d.status,
                       EXISTS (SELECT 1 FROM stage_events AS e
                               WHERE e.document_id = d.id AND e.event = ANY(:outcomes)
                                 AND (coalesce(e.xact, 0), e.id) > (:xact, :id)) AS ahead
                FROM documents AS d
                WHERE d.id = :document_id AND d.tenant = :tenant AND d.status <> 'deleted'
                """
            ),
            {
                "document_id": document_id,
                "tenant": tenant,
                "outcomes": list(OUTCOME_EVENT_NAMES),
                "xact": after.xact,
                "id": after.id,
            },
        )
    ).first()
    if row is None:
        return StreamStart(found=False, finished=False, outcome_ahead=False)
    return StreamStart(
        found=True,
        finished=row.status in ("succeeded", "failed"),
        outcome_ahead=bool(row.ahead),
    )
