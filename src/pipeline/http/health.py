"""/health (the process is up) and /ready (its dependencies answer)."""

from __future__ import annotations

import logging

import anyio
import anyio.to_thread
import msgspec
from litestar import get
from litestar.di import NamedDependency
from sqlalchemy import text

from pipeline.http.auth import access
from pipeline.http.contract import documented
from pipeline.http.problems import Problem
from pipeline.http.state import ApiState

logger = logging.getLogger(__name__)
READY_TIMEOUT_S = 2.0


class Health(msgspec.Struct, frozen=True):
    status: str


@get("/health", tags=["health"], summary="Liveness", **access("public"))
async def health() -> Health:
    return Health(status="ok")


@get(
    "/ready",
    tags=["health"],
    summary="Readiness: Postgres and Redis reachable",
    **access("public"),
    **documented(503, described={503: "Postgres or Redis unreachable (`unavailable` says which)"}),
)
async def ready(api: NamedDependency[ApiState]) -> Health:
    failures = []
    if not await _postgres_ok(api):
        failures.append("Postgres")
    if not await _redis_ok(api):
        failures.append("Redis")
    if failures:
        raise Problem(503, f"{' and '.join(failures)} not reachable", unavailable=failures)
    return Health(status="ready")


async def _postgres_ok(api: ApiState) -> bool:
    try:
        with anyio.fail_after(READY_TIMEOUT_S):
            async with api.engine.connect() as conn:
                await conn.execute(text("SELECT 1"))
    except Exception:
        logger.warning("readiness: Postgres check failed", exc_info=True)
        return False
    return True


async def _redis_ok(api: ApiState) -> bool:
    try:
        with anyio.fail_after(READY_TIMEOUT_S):
            await anyio.to_thread.run_sync(api.dispatcher.ping, abandon_on_cancel=True)
    except Exception:
        logger.warning("readiness: Redis check failed", exc_info=True)
        return False
    return True
