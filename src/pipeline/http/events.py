"""Server-sent event streams: one document's transitions, and a tenant's outcomes.

Each event's ``id`` is its feed position: a client that reconnects with
``Last-Event-ID`` (browsers' ``EventSource`` does so by itself) gets every event after
it, from the table, then the live ones, without a gap or a repeat. A document's stream
ends after the document's outcome (succeeded, failed, deleted); asked again after
that, it answers ``204 No Content``, which tells ``EventSource`` to stop reconnecting.

Streams read only Postgres (through the API process's :class:`~pipeline.events.hub.EventHub`),
so they keep working while Redis is down.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Collection
from typing import Annotated, Final, Literal

import msgspec
from litestar import Response, get
from litestar.di import NamedDependency
from litestar.params import HeaderParameter, PathParameter, QueryParameter
from litestar.response import ServerSentEvent, ServerSentEventMessage

from pipeline.access.keys import Principal
from pipeline.events import feed
from pipeline.events.feed import Cursor, FeedEvent, InvalidEventId, Routed
from pipeline.events.hub import EventHub, SubscriberTooSlow, Subscription, TooManyStreams
from pipeline.http.auth import access
from pipeline.http.contract import AUTH, documented
from pipeline.http.documents import parse_id
from pipeline.http.problems import Problem
from pipeline.http.state import ApiState
from pipeline.statuses import OUTCOME_EVENT_NAMES, STREAMED_EVENT_NAMES

OutcomeStatus = Literal["succeeded", "failed", "deleted"]
EVENT_ID: Final = r"^[0-9]{1,20}-[0-9]{1,20}$"
"""What an event id looks like (``<transaction>-<event>``): the header's schema."""
RETRY_MS: Final = 2000
"""How long a client waits before it reconnects (the stream's ``retry`` field)."""
HISTORY_BATCH: Final = 500
STREAM_HEADERS: Final = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}
"""Tell proxies (nginx) not to buffer the stream."""


def _message(event: FeedEvent) -> ServerSentEventMessage:
    return ServerSentEventMessage(
        data=msgspec.json.encode(event).decode(), event=event.event, id=event.id
    )


def _cursor(raw: str | None) -> Cursor | None:
    if raw is None or not raw.strip():
        return None
    try:
        return Cursor.parse(raw)
    except InvalidEventId as error:
        raise Problem(422, str(error)) from None


def _check_room(hub: EventHub, principal: Principal) -> str:
    key = principal.label
    if hub.streams_by_key.get(key, 0) >= hub.max_streams_per_key:
        error = TooManyStreams(hub.max_streams_per_key)
        raise Problem(429, str(error), headers={"Retry-After": "5"}, retry_after=5)
    return key


async def _relay(
    api: ApiState,
    subscription: Subscription,
    after: Cursor,
    *,
    events: Collection[str],
    ends_at_outcome: bool,
    document_id: uuid.UUID | None = None,
    tenant: str,
) -> AsyncIterator[ServerSentEventMessage]:
    """History from the table after ``after``, then the live events, deduplicated."""
    yield ServerSentEventMessage(comment="stream open", retry=RETRY_MS)
    last = after
    while True:  # history: everything settled after the cursor
        async with api.engine.connect() as conn:
            batch = await feed.read(
                conn,
                last,
                events,
                document_id=document_id,
                tenant=tenant,
                limit=HISTORY_BATCH,
            )
        for routed in batch.events:
            last = routed.cursor
            yield _message(routed.event)
            if ends_at_outcome and routed.event.is_outcome:
                return
        if len(batch.events) < HISTORY_BATCH or batch.held:
            break
    keepalive = api.settings.events.keepalive_ms / 1000
    while True:  # live: what the hub routes here; anything at or before `last` was sent
        try:
            routed_live: Routed | None = await subscription.next(keepalive)
        except SubscriberTooSlow:
            return  # the client resumes with Last-Event-ID, from the table
        if routed_live is None:
            yield ServerSentEventMessage(comment="keep-alive")
            continue
        if routed_live.cursor <= last:
            continue
        last = routed_live.cursor
        yield _message(routed_live.event)
        if ends_at_outcome and routed_live.event.is_outcome:
            return


@get(
    "/documents/{document_id:str}/events",
    summary="A document's transitions, as server-sent events",
    description="Every transition of the document (stage queued, claimed, succeeded, "
    "retrying, dead; reruns and replays; the document's outcome), in order, each with an "
    "`id`: reconnect with `Last-Event-ID` to resume without a gap. Without it, the stream "
    "starts at the document's first event. It ends after the document's outcome; a "
    "stream asked for after that answers `204`.",
    tags=["events"],
    **access("read"),
    **documented(*AUTH, 404, 422, 429, 503),
)
async def document_events(
    api: NamedDependency[ApiState],
    principal: NamedDependency[Principal],
    document_id: Annotated[str, PathParameter()],
    last_event_id: Annotated[
        str | None, HeaderParameter(name="Last-Event-ID", required=False, pattern=EVENT_ID)
    ] = None,
) -> ServerSentEvent | Response[None]:
    parsed = parse_id(document_id)
    after = _cursor(last_event_id) or feed.START
    async with api.engine.connect() as conn:
        start = await feed.stream_start(conn, parsed, principal.tenant, after)
    if not start.found:
        raise Problem(404, f"no document with id {document_id!r}")
    if start.finished and not start.outcome_ahead:
        return Response(None, status_code=204)
    key = _check_room(api.events, principal)

    async def stream() -> AsyncIterator[ServerSentEventMessage]:
        async with api.events.subscribe(
            key=key, tenant=principal.tenant, events=STREAMED_EVENT_NAMES, document_id=parsed
        ) as subscription:
            async for message in _relay(
                api,
                subscription,
                after,
                events=STREAMED_EVENT_NAMES,
                ends_at_outcome=True,
                document_id=parsed,
                tenant=principal.tenant,
            ):
                yield message

    return ServerSentEvent(stream(), headers=STREAM_HEADERS)


@get(
    "/events",
    summary="The tenant's document outcomes, as server-sent events",
    description="Each document of the key's tenant that succeeds, fails or is deleted "
    "(`status` filters), from now on, or after `Last-Event-ID` when reconnecting. "
    "`transitions=true` streams every transition of every document as well (what "
    "`pipeline ingest --wait` follows; `status` still filters the outcomes). The stream "
    "stays open; comments keep it alive.",
    tags=["events"],
    **access("read"),
    **documented(*AUTH, 422, 429, 503),
)
async def tenant_events(
    api: NamedDependency[ApiState],
    principal: NamedDependency[Principal],
    status: Annotated[
        list[OutcomeStatus] | None, QueryParameter(name="status", required=False)
    ] = None,
    transitions: Annotated[bool, QueryParameter(name="transitions")] = False,
    last_event_id: Annotated[
        str | None, HeaderParameter(name="Last-Event-ID", required=False, pattern=EVENT_ID)
    ] = None,
) -> ServerSentEvent:
    outcomes = tuple(name for name in OUTCOME_EVENT_NAMES if not status or name[9:] in status)
    events: tuple[str, ...] = (
        tuple(name for name in STREAMED_EVENT_NAMES if name not in OUTCOME_EVENT_NAMES) + outcomes
        if transitions
        else outcomes
    )
    resume = _cursor(last_event_id)
    key = _check_room(api.events, principal)

    async def stream() -> AsyncIterator[ServerSentEventMessage]:
        async with api.events.subscribe(
            key=key, tenant=principal.tenant, events=events
        ) as subscription:
            after = resume if resume is not None else api.events.cursor or feed.START
            async for message in _relay(
                api,
                subscription,
                after,
                events=events,
                ends_at_outcome=False,
                tenant=principal.tenant,
            ):
                yield message

    return ServerSentEvent(stream(), headers=STREAM_HEADERS)
