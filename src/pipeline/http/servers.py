"""The ASGI servers ``pipeline api`` runs the app on: uvicorn (the default) or Granian.

Both serve the same app, built by the same factory
(:func:`pipeline.http.app.create_app_from_env`) once in every worker process, and the
same way:

- **lifespan**: the app's startup (pools, event hub, the frozen collector) runs in each
  worker before it serves, its shutdown (pools closed) when the worker stops; Granian's
  ``asgi`` interface runs the ASGI lifespan protocol as uvicorn does, and a failed
  startup stops the worker;
- **signals**: SIGTERM or SIGINT stops accepting, lets requests in flight finish, runs
  the lifespan shutdown in every worker, then exits;
- **logs**: every record goes to stderr through :mod:`pipeline.logs`' formatters (JSON
  lines or text, ``PIPELINE_LOG_FORMAT``); the access log is off unless
  ``--access-log``;
- **proxies**: the client address (the audit trail's ``key@address``, the access log)
  is taken from ``X-Forwarded-For``, and the scheme from ``X-Forwarded-Proto``, only
  when the peer is one of ``FORWARDED_ALLOW_IPS``. uvicorn applies its
  ``ProxyHeadersMiddleware`` itself (``proxy_headers=True``); under Granian, which has
  no such option, the app is wrapped in that same middleware class, so the rule is the
  same code under both (Granian's own ``wrap_asgi_with_proxy_headers`` differs in
  details: it ignores ``X-Forwarded-Proto`` without ``X-Forwarded-For`` and keeps the
  first of several).
- **socket**: the same listen backlog (uvicorn's default, 2048).

The rate limit is per API key (:mod:`pipeline.access.rate_limit`), not per address, so
it does not depend on the server at all.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Final, get_args

import uvicorn
from granian import Granian
from granian.constants import Interfaces
from uvicorn.middleware.proxy_headers import ProxyHeadersMiddleware

from pipeline.http.app import create_app_from_env
from pipeline.logs import granian_log_config, uvicorn_log_config
from pipeline.settings import ApiServer, Settings

SERVERS: Final[tuple[ApiServer, ...]] = get_args(ApiServer)
APP_FACTORY: Final = "pipeline.http.app:create_app_from_env"
GRANIAN_APP_FACTORY: Final = "pipeline.http.servers:create_proxied_app_from_env"
BACKLOG: Final = 2048
"""Connections the kernel queues per listening socket: uvicorn's default (Granian's is
1024; on Linux each Granian worker listens on a socket of its own, SO_REUSEPORT)."""
GRANIAN_ACCESS_FORMAT: Final = '%(addr)s - "%(method)s %(path)s %(protocol)s" %(status)d'
"""uvicorn's access line, as near as Granian's atoms go (no client port, no query)."""


@dataclass(frozen=True)
class ServeOptions:
    """What ``pipeline api`` was asked for, whichever server runs it."""

    host: str
    port: int
    workers: int
    access_log: bool
    forwarded_allow_ips: str


def serve(server: ApiServer, options: ServeOptions) -> None:
    """Run the API on ``server`` until a signal stops it."""
    if server == "granian":
        run_granian(options)
    else:
        run_uvicorn(options)


def run_uvicorn(options: ServeOptions) -> None:
    uvicorn.run(
        APP_FACTORY,
        factory=True,
        host=options.host,
        port=options.port,
        workers=options.workers,
        backlog=BACKLOG,
        proxy_headers=True,
        forwarded_allow_ips=options.forwarded_allow_ips,
        access_log=options.access_log,
        log_config=uvicorn_log_config(),
    )


def create_proxied_app_from_env() -> Any:
    """What Granian serves: :func:`create_app_from_env`'s app behind the proxy-header
    middleware uvicorn puts in front of it (one call per worker process)."""
    app = create_app_from_env()
    trusted = Settings.from_env().api.forwarded_allow_ips
    return ProxyHeadersMiddleware(app, trusted_hosts=trusted)  # type: ignore[arg-type]


def run_granian(options: ServeOptions) -> None:
    server = Granian(
        GRANIAN_APP_FACTORY,
        factory=True,
        address=options.host,
        port=options.port,
        interface=Interfaces.ASGI,  # with the lifespan protocol (ASGINL has none)
        workers=options.workers,
        backlog=BACKLOG,
        log_dictconfig=granian_log_config(),
        log_access=options.access_log,
        log_access_format=GRANIAN_ACCESS_FORMAT,
    )
    server.serve()
