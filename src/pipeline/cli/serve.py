"""``pipeline api`` and ``pipeline worker``: the long-running processes."""

from __future__ import annotations

import os
import sys
import tempfile
from typing import get_args

import click

from pipeline.operations.queue import OPERATIONS_QUEUE
from pipeline.settings import ApiServer, Settings
from pipeline.stages.pipeline import checked_definition
from pipeline.webhooks.messages import WEBHOOKS_QUEUE

SERVER_CHOICES: dict[str, ApiServer] = {name: name for name in get_args(ApiServer)}


@click.command()
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", default=8000, show_default=True, type=int)
@click.option("--workers", default=1, show_default=True, type=click.IntRange(min=1))
@click.option(
    "--access-log/--no-access-log",
    default=False,
    show_default=True,
    help="Log every request (the Prometheus metrics count them either way).",
)
@click.option(
    "--server",
    type=click.Choice(list(SERVER_CHOICES)),
    default=None,
    help="The ASGI server to run the app on  [default: PIPELINE_API_SERVER, else uvicorn]",
)
def api(host: str, port: int, workers: int, access_log: bool, server: str | None) -> None:
    """Serve the HTTP API."""
    settings = Settings.from_env()  # a bad setting (say PIPELINE_AUTH=bogus) stops it here
    if settings.access.auth == "disabled":
        click.secho(
            "api: WARNING: authentication is DISABLED (PIPELINE_AUTH=disabled): every "
            "request acts as tenant 'default' with every scope",
            fg="red",
            bold=True,
            err=True,
        )
    # Imported here, not above: no other command needs the app, Litestar or a server.
    from pipeline.http.servers import ServeOptions, serve

    options = ServeOptions(
        host=host,
        port=port,
        workers=workers,
        access_log=access_log,
        forwarded_allow_ips=settings.api.forwarded_allow_ips,
    )
    serve(SERVER_CHOICES[server] if server else settings.api.server, options)


@click.command()
@click.option(
    "--stage",
    "stages",
    multiple=True,
    help="Consume only this stage's queue (repeatable; default: every stage of the "
    "definition, see `pipeline stages`).",
)
@click.option(
    "--operations/--no-operations",
    default=None,
    help="Also consume the operations queue (bulk replays over HTTP); "
    "default: yes without --stage, no with it.",
)
@click.option(
    "--webhooks/--no-webhooks",
    default=None,
    help="Also consume the webhooks queue (webhook deliveries); "
    "default: yes without --stage, no with it.",
)
@click.option(
    "--metrics-port",
    default=9191,
    show_default=True,
    type=click.IntRange(min=0, max=65535),
    help="Port of the Prometheus exposition server (Dramatiq's and per-stage metrics); "
    "0 turns it off.",
)
@click.option("--processes", default=1, show_default=True, type=click.IntRange(min=1))
@click.option("--threads", default=4, show_default=True, type=click.IntRange(min=1))
@click.option(
    "--shutdown-timeout",
    default=30.0,
    show_default=True,
    type=click.FloatRange(min=0),
    help="Seconds in-flight stages get to finish on SIGTERM.",
)
def worker(
    stages: tuple[str, ...],
    operations: bool | None,
    webhooks: bool | None,
    metrics_port: int,
    processes: int,
    threads: int,
    shutdown_timeout: float,
) -> None:
    """Run Dramatiq workers for some or all stages.

    Runs ``dramatiq`` in place of this process, so signals reach it directly.
    """
    # Refuses an invalid definition, and a policy for a stage it does not have.
    definition = checked_definition(Settings.from_env())
    definition.check(stages)  # and a stage it does not have
    queues = list(stages or definition.names)
    if operations or (operations is None and not stages):
        queues.append(OPERATIONS_QUEUE)
    if webhooks or (webhooks is None and not stages):
        queues.append(WEBHOOKS_QUEUE)
    argv = [
        sys.executable,
        "-m",
        "dramatiq",
        "pipeline.actors.worker",
        "--processes",
        str(processes),
        "--threads",
        str(threads),
        "--worker-shutdown-timeout",
        str(int(shutdown_timeout * 1000)),
        "--queues",
        *queues,
    ]
    if metrics_port:
        # Dramatiq's Prometheus middleware reads these; a fresh directory per worker
        # group keeps its multiprocess files from mixing with another group's.
        os.environ["dramatiq_prom_port"] = str(metrics_port)  # noqa: SIM112 - Dramatiq's name
        metrics_db = tempfile.mkdtemp(prefix="pipeline-metrics-")
        os.environ["dramatiq_prom_db"] = metrics_db  # noqa: SIM112
        # Set before any worker process imports prometheus_client, which picks its
        # (multiprocess) value store at import time.
        os.environ["PROMETHEUS_MULTIPROC_DIR"] = metrics_db
    click.echo(f"worker: queues {', '.join(queues)}; {processes} process(es) x {threads} thread(s)")
    os.execv(sys.executable, argv)  # noqa: S606 - fixed argv, our own interpreter
