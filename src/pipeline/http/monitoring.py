"""/stages (JSON) and /metrics (Prometheus): what an operator scales on."""

from __future__ import annotations

import anyio.to_thread
from litestar import Response, get
from litestar.di import NamedDependency
from prometheus_client import REGISTRY, generate_latest

from pipeline.http.auth import access
from pipeline.http.contract import AUTH, documented
from pipeline.http.state import ApiState
from pipeline.lifecycle.retention import removed_totals
from pipeline.monitoring.metrics import render_overview, render_retention
from pipeline.monitoring.stages import Overview, overview, queue_depths

PROMETHEUS_TEXT = "text/plain; version=0.0.4"
"""Prometheus' text exposition format, as the schema documents it and the route serves it."""


async def _overview(api: ApiState) -> Overview:
    def read() -> Overview:
        names = api.definition.names
        depths = queue_depths(api.dispatcher.redis_client(), api.settings.broker.namespace, names)
        with api.sync_engine.connect() as conn:
            return overview(conn, depths, names)

    return await anyio.to_thread.run_sync(read)


@get(
    "/stages",
    tags=["operations"],
    summary="Per-stage queue depth, work in flight, outcomes",
    description="Counts over every tenant: they name no document.",
    **access("admin"),
    **documented(*AUTH, 503),
)
async def stages(api: NamedDependency[ApiState]) -> Overview:
    return await _overview(api)


@get(
    "/metrics",
    tags=["operations"],
    summary="Prometheus metrics",
    description="Needs the `admin` scope unless `PIPELINE_METRICS_PUBLIC=true`.",
    include_in_schema=True,
    media_type=PROMETHEUS_TEXT,
    **access("metrics"),
    **documented(
        *AUTH,
        503,
        described={
            401: "No API key, or a bad one (unless `PIPELINE_METRICS_PUBLIC=true`)",
            403: "The API key lacks the `admin` scope (unless `PIPELINE_METRICS_PUBLIC=true`)",
        },
    ),
)
async def metrics(api: NamedDependency[ApiState]) -> Response[bytes]:
    def totals() -> dict[str, int]:
        with api.sync_engine.connect() as conn:
            return removed_totals(conn)

    retention = render_retention(await anyio.to_thread.run_sync(totals))
    body = generate_latest(REGISTRY) + render_overview(await _overview(api)) + retention
    return Response(body, media_type=PROMETHEUS_TEXT)
