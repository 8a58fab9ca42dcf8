"""The Litestar application."""

from __future__ import annotations

import gc
import logging
import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from litestar import Litestar, Router
from litestar.di import Provide
from litestar.openapi import OpenAPIConfig
from litestar.openapi.plugins import SwaggerRenderPlugin
from litestar.plugins.prometheus import PrometheusConfig

from pipeline.access.console import ConsoleSessions
from pipeline.access.keys import Authenticator
from pipeline.access.rate_limit import RateLimiter
from pipeline.db.engine import make_async_engine
from pipeline.engine.dispatch import AsyncSender, Dispatcher
from pipeline.events.hub import EventHub
from pipeline.http.admin import admin_router
from pipeline.http.auth import (
    SECURITY_COMPONENTS,
    make_guard,
    provide_principal,
    undeclared_routes,
)
from pipeline.http.console import console_router, console_templates
from pipeline.http.documents import DocumentController
from pipeline.http.events import document_events, tenant_events
from pipeline.http.health import health, ready
from pipeline.http.monitoring import metrics, stages
from pipeline.http.multipart import PipelineRequest
from pipeline.http.problems import problem_details_plugin
from pipeline.http.search import search
from pipeline.http.state import ApiState
from pipeline.http.struct_schema import ClosedStructSchemaPlugin
from pipeline.http.webhooks import WebhookController
from pipeline.ingestion.uploads import UploadService
from pipeline.queries.cursor_keys import CursorKeys
from pipeline.search.build import make_search
from pipeline.settings import Settings
from pipeline.stages import Pipeline
from pipeline.wiring import Wiring

logger = logging.getLogger(__name__)

MULTIPART_OVERHEAD = 64 * 1024
GC_GEN0_THRESHOLD = 20_000
HTTP_METRICS = PrometheusConfig(
    app_name="pipeline",
    prefix="pipeline_http",
    group_path=True,  # label by route template, not by document id
    exclude=["/metrics"],
)


def create_app(
    settings: Settings,
    *,
    dispatcher: Dispatcher | None = None,
    definition: Pipeline | None = None,
) -> Litestar:
    """Build the app; the engines are created on startup and disposed on shutdown.

    The pipeline definition is loaded (and checked) here, before anything is served.
    """
    wiring = Wiring(
        settings,
        dispatcher=dispatcher,
        definition=definition,
        application_name="pipeline-api-admin",
    )
    wiring.definition  # noqa: B018 - load and check it now: a bad one stops the start
    if settings.access.auth == "disabled":
        warn_auth_disabled()  # here, once per process, before anything is served
    holder: dict[str, ApiState] = {}

    @asynccontextmanager
    async def lifespan(_: Litestar) -> AsyncIterator[None]:
        engine = make_async_engine(settings)
        sync_engine = wiring.engine
        sender = wiring.dispatcher
        async_sender = AsyncSender(sender.broker, settings.broker.url)  # type: ignore[arg-type]
        events = EventHub(
            engine,
            settings.database.libpq_url,
            queue_size=settings.events.queue_size,
            max_streams_per_key=settings.events.max_streams_per_key,
            poll_s=settings.events.poll_ms / 1000,
        )
        await events.start()
        holder["state"] = ApiState(
            settings=settings,
            definition=wiring.definition,
            engine=engine,
            dispatcher=sender,
            uploads=UploadService(
                engine, sender, settings, wiring.definition, wiring.faults, async_sender
            ),
            sync_engine=sync_engine,
            replay=wiring.replay,
            rerun=wiring.rerun,
            auth=Authenticator(engine, settings.access.auth_cache_ms / 1000),
            search=make_search(settings, engine),
            limiter=RateLimiter(
                async_sender.client,
                settings.broker.namespace,
                rate=settings.access.ingest_rate_per_s,
                burst=settings.access.ingest_burst,
            ),
            cursors=CursorKeys(engine, settings.access.cursor_secret),
            events=events,
            webhooks=wiring.webhook_endpoints,
            deletion=wiring.deletion,
            console=ConsoleSessions(
                engine,
                settings.console.session_ms / 1000,
                settings.console.link_ms / 1000,
            ),
            stage_controls=wiring.stage_controls,
            cancel=wiring.cancel,
        )
        # Everything allocated so far lives as long as the process: keep it out of the
        # collector's way, and collect the young generation less often (request
        # handling allocates many short-lived objects; full passes showed up as p99 spikes).
        gc.collect()
        gc.freeze()
        gc.set_threshold(GC_GEN0_THRESHOLD, 20, 20)
        logger.info("api process %d: started (pools open)", os.getpid())
        try:
            yield
        finally:
            await events.stop()
            await async_sender.close()
            await engine.dispose()
            sync_engine.dispose()
            logger.info("api process %d: stopped (pools closed)", os.getpid())

    def provide_state() -> ApiState:
        return holder["state"]

    app = Litestar(
        route_handlers=[
            DocumentController,
            document_events,
            tenant_events,
            search,
            health,
            ready,
            admin_router,
            WebhookController,
            stages,
            metrics,
            console_router(provide_state),
        ],
        middleware=[HTTP_METRICS.middleware],
        guards=[make_guard(settings, lambda: holder["state"].auth)],
        dependencies={
            "api": Provide(provide_state, sync_to_thread=False),
            "principal": Provide(provide_principal, sync_to_thread=False),
        },
        lifespan=[lifespan],
        # Litestar's default logging config replaces the root handler with its own text
        # format behind a queue thread: the API's lines would lose pipeline.logs' JSON,
        # and a worker that ends without atexit (Granian's forked ones) its last lines.
        # Unhandled errors are logged by the problem-details plugin, not by Litestar.
        logging_config=None,
        template_config=console_templates(),
        plugins=[problem_details_plugin(), ClosedStructSchemaPlugin(wiring.definition.names)],
        request_max_body_size=settings.limits.max_upload_bytes + MULTIPART_OVERHEAD,
        request_class=PipelineRequest,  # multipart part headers long enough for long names
        openapi_config=OpenAPIConfig(
            title="pipeline",
            version="0.1.0",
            components=SECURITY_COMPONENTS,
            security=[{"bearer": []}, {"apiKey": []}],
            openapi_router=Router(
                "/schema", route_handlers=[], include_in_schema=False, opt={"access": "public"}
            ),
            render_plugins=[SwaggerRenderPlugin()],
        ),
    )
    _check_access_declared(app)
    return app


def _check_access_declared(app: Litestar) -> None:
    """Every route says who may call it: a route that forgot must not start open."""
    handlers = [handler for route in app.routes for handler in getattr(route, "route_handlers", [])]
    missing = undeclared_routes(handlers)
    if missing:
        raise RuntimeError(f"routes without an access declaration: {'; '.join(missing)}")


def warn_auth_disabled() -> None:
    logger.warning(
        "AUTHENTICATION IS DISABLED (PIPELINE_AUTH=disabled): every request acts as tenant "
        "'default' with every scope, without a key. Only for a laptop; never expose this "
        "API to a network."
    )


def create_app_from_env() -> Litestar:
    """The factory ``pipeline api`` hands to its server (one call per worker process;
    see :mod:`pipeline.http.servers`)."""
    return create_app(Settings.from_env())
