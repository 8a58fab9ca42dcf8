"""The overview: per stage what waits, runs, retries, is dead or paused; throughput,
latency, workers seen and recent dead letters; live.

Stage counts are the admin API's ``GET /stages`` (``monitoring.stages``: every tenant's,
they name no document); dead letters are the session's tenant's. The page is complete
without JavaScript; with it, ``console.js`` listens to :func:`overview_stream` (the
tenant's transitions, through the process's ``EventHub``) and refetches the fragment
at most once a second, plus every few seconds for other tenants' work.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from datetime import datetime, timedelta
from typing import Any, Final

import anyio.to_thread
import msgspec
from litestar import Request, get
from litestar.di import NamedDependency
from litestar.response import ServerSentEvent, ServerSentEventMessage, Template
from sqlalchemy import Connection, func, select

from pipeline.access.console import COOKIE, Session
from pipeline.db.models import DeadLetter, StageEvent
from pipeline.events.hub import SubscriberTooSlow, TooManyStreams
from pipeline.http.console.auth import SIGNED_IN, ConsoleRefused
from pipeline.http.console.pages import page
from pipeline.http.state import ApiState
from pipeline.monitoring.stages import WINDOW, Overview, overview, queue_depths
from pipeline.operations.dead_letters import of_tenant
from pipeline.statuses import STREAMED_EVENT_NAMES

DEBOUNCE_S: Final = 1.0
"""The overview refreshes at most this often, however busy the pipeline."""
RECHECK_S: Final = 15.0
"""How often an open stream checks that its session still holds."""


class StageRow(msgspec.Struct, frozen=True):
    stage: str
    queued: int
    running: int
    retrying: int
    dead: int
    """The tenant's dead letters of the stage waiting for an operator."""
    paused: bool
    paused_by: str | None
    reason: str | None
    """Why it was paused."""
    per_minute: float
    p50_ms: float | None
    p95_ms: float | None
    oldest_waiting_s: float | None


class ConsoleOverview(msgspec.Struct, frozen=True):
    generated_at: datetime
    window_minutes: int
    stages: list[StageRow]
    workers: list[str]
    dead_last_hour: int
    documents: dict[str, int]


def read_overview(api: ApiState, tenant: str) -> ConsoleOverview:
    names = api.definition.names
    depths = queue_depths(api.dispatcher.redis_client(), api.settings.broker.namespace, names)
    controls = {state.stage: state for state in api.stage_controls.states()}
    with api.sync_engine.connect() as conn:
        stats: Overview = overview(conn, depths, names)
        dead = _dead_by_stage(conn, tenant)
        workers = _workers_seen(conn)
        last_hour = conn.execute(
            select(func.count()).where(
                DeadLetter.failed_at > func.now() - timedelta(hours=1), *of_tenant(tenant)
            )
        ).scalar_one()
    minutes = stats.window_s / 60
    rows = [
        StageRow(
            stage=s.stage,
            queued=s.queued,
            running=s.in_flight,
            retrying=s.retrying,
            dead=dead.get(s.stage, 0),
            paused=s.paused,
            paused_by=controls[s.stage].paused_by if s.stage in controls else None,
            reason=controls[s.stage].reason if s.stage in controls else None,
            per_minute=round(s.succeeded_5m / minutes, 1),
            p50_ms=s.p50_ms,
            p95_ms=s.p95_ms,
            oldest_waiting_s=s.oldest_waiting_s,
        )
        for s in stats.stages
    ]
    return ConsoleOverview(
        generated_at=stats.generated_at,
        window_minutes=int(minutes),
        stages=rows,
        workers=workers,
        dead_last_hour=int(last_hour),
        documents={str(status): n for status, n in stats.documents.items()},
    )


def _dead_by_stage(conn: Connection, tenant: str) -> dict[str, int]:
    rows = conn.execute(
        select(DeadLetter.stage, func.count())
        .where(DeadLetter.status == "dead", *of_tenant(tenant))
        .group_by(DeadLetter.stage)
    ).all()
    return {stage: int(n) for stage, n in rows if stage is not None}


def _workers_seen(conn: Connection) -> list[str]:
    """Workers that claimed work in the window (each ``claimed`` event names its worker)."""
    worker = StageEvent.detail["worker"].astext
    rows = conn.execute(
        select(worker)
        .where(
            StageEvent.event == "claimed",
            StageEvent.created_at > func.now() - WINDOW,
            worker.is_not(None),
        )
        .distinct()
        .order_by(worker)
    ).scalars()
    return [str(name) for name in rows]


async def _context(api: ApiState, session: Session) -> dict[str, Any]:
    tenant = session.principal.tenant
    data = await anyio.to_thread.run_sync(read_overview, api, tenant)
    # Stages are every tenant's: only the operator tenant's admins may pause them.
    return {"overview": data, "controls": tenant == api.stage_controls.operator_tenant}


@get("/", **SIGNED_IN)
async def overview_page(
    api: NamedDependency[ApiState], console_session: NamedDependency[Session]
) -> Template:
    return page("overview.html", console_session, **await _context(api, console_session))


@get("/overview/fragment", **SIGNED_IN)
async def overview_fragment(
    api: NamedDependency[ApiState], console_session: NamedDependency[Session]
) -> Template:
    return page("_overview.html", console_session, **await _context(api, console_session))


@get("/overview/stream", **SIGNED_IN)
async def overview_stream(
    request: Request[Any, Any, Any],
    api: NamedDependency[ApiState],
    console_session: NamedDependency[Session],
) -> ServerSentEvent:
    """``changed`` whenever the tenant's documents move, at most once a second; the
    stream ends when the session does (checked every ``RECHECK_S``)."""
    key = f"console:{console_session.principal.label}"
    hub = api.events
    if hub.streams_by_key.get(key, 0) >= hub.max_streams_per_key:
        raise ConsoleRefused(str(TooManyStreams(hub.max_streams_per_key)))
    cookie = request.cookies.get(COOKIE)

    async def stream() -> AsyncIterator[ServerSentEventMessage]:
        yield ServerSentEventMessage(comment="stream open", retry=2000)
        async with hub.subscribe(
            key=key, tenant=console_session.principal.tenant, events=STREAMED_EVENT_NAMES
        ) as subscription:
            checked = time.monotonic()
            while True:
                try:
                    routed = await subscription.next(RECHECK_S)
                except SubscriberTooSlow:
                    return
                if time.monotonic() - checked >= RECHECK_S:
                    if await api.console.find(cookie) is None:
                        return
                    checked = time.monotonic()
                if routed is None:
                    yield ServerSentEventMessage(comment="keep-alive")
                    continue
                await asyncio.sleep(DEBOUNCE_S)  # let a burst gather into one refresh
                while not subscription.queue.empty():
                    subscription.queue.get_nowait()
                yield ServerSentEventMessage(data="", event="changed")

    return ServerSentEvent(stream(), headers={"Cache-Control": "no-cache"})


ROUTES = [overview_page, overview_fragment, overview_stream]
