"""The operator console: server-rendered pages under ``/console``, on the admin API's
services (see ``auth`` for sessions and CSRF; one module per page)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Final

import jinja2
from litestar import Router
from litestar.contrib.jinja import JinjaTemplateEngine
from litestar.datastructures import ResponseHeader
from litestar.di import Provide
from litestar.static_files import create_static_files_router
from litestar.template import TemplateConfig

from pipeline.http.console import auth, dead_letters, documents, jobs, overview, stages
from pipeline.http.console.auth import (
    ConsoleNotFound,
    ConsoleRefused,
    make_console_guard,
    on_not_found,
    on_refused,
    provide_session,
)
from pipeline.http.console.format import FILTERS
from pipeline.http.state import ApiState

HERE: Final = Path(__file__).parent
SECURITY_HEADERS: Final = [
    # Our own stylesheet and script only; nothing inline, no frames, no other origin.
    ResponseHeader(
        name="Content-Security-Policy",
        value="default-src 'self'; frame-ancestors 'none'; form-action 'self'; base-uri 'none'",
    ),
    ResponseHeader(name="X-Frame-Options", value="DENY"),
    # Not no-referrer: with it, Chromium sends "Origin: null" on our own forms.
    ResponseHeader(name="Referrer-Policy", value="same-origin"),
    ResponseHeader(name="X-Content-Type-Options", value="nosniff"),
    ResponseHeader(name="Cache-Control", value="no-store"),
]


def console_templates() -> TemplateConfig[JinjaTemplateEngine]:
    environment = jinja2.Environment(
        loader=jinja2.FileSystemLoader(HERE / "templates"),
        autoescape=True,  # every value is escaped unless a template says otherwise
        trim_blocks=True,
        lstrip_blocks=True,
    )
    environment.filters.update(FILTERS)
    return TemplateConfig(instance=JinjaTemplateEngine.from_environment(environment))


def console_router(state: Callable[[], ApiState]) -> Router:
    static = create_static_files_router(
        path="/static",
        directories=[HERE / "static"],
        opt={"access": "public", "console": "anonymous"},
        include_in_schema=False,
        name="console-static",
    )
    return Router(
        "/console",
        route_handlers=[
            *auth.ROUTES,
            *overview.ROUTES,
            *documents.ROUTES,
            *dead_letters.ROUTES,
            *jobs.ROUTES,
            *stages.ROUTES,
            static,
        ],
        guards=[make_console_guard(state)],
        dependencies={"console_session": Provide(provide_session, sync_to_thread=False)},
        exception_handlers={ConsoleRefused: on_refused, ConsoleNotFound: on_not_found},
        include_in_schema=False,
        response_headers=SECURITY_HEADERS,
    )
