"""``pipeline reconciler``: re-send stranded stage messages, one active instance."""

from __future__ import annotations

import os
import signal
import socket
import threading
from types import FrameType

import click

from pipeline.settings import Settings
from pipeline.wiring import Wiring


@click.command()
@click.option(
    "--interval",
    type=click.FloatRange(min=0.1),
    default=None,
    help="Seconds between sweeps (default: PIPELINE_RECONCILER_INTERVAL_S, 5).",
)
@click.option("--once", is_flag=True, help="Run one sweep now, without the lock, and exit.")
def reconciler(interval: float | None, once: bool) -> None:
    """Find stage rows past their deadline and send their messages again.

    Run one or more; only the instance holding the Postgres advisory lock sweeps,
    the others stand by and take over when it stops.
    """
    settings = Settings.from_env()
    if interval is not None:
        settings = settings.replace(reconciler={"interval_s": interval})
    name = f"pipeline-reconciler:{socket.gethostname()}:{os.getpid()}"
    wiring = Wiring(settings, application_name=name)
    engine, service = wiring.engine, wiring.reconciler
    if once:
        report = service.sweep()
        click.echo(report.describe())
        return
    stop = threading.Event()

    def request_stop(signum: int, frame: FrameType | None) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, request_stop)
    signal.signal(signal.SIGINT, request_stop)
    click.echo(f"reconciler {name}: sweeping every {settings.reconciler.interval_s:g} s")
    service.run(stop)
    engine.dispose()
