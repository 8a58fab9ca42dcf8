"""``pipeline status``: the per-stage numbers of ``GET /stages`` as a terminal table."""

from __future__ import annotations

import time

import click

from pipeline.broker import make_broker
from pipeline.db.engine import make_engine
from pipeline.monitoring.stages import Overview, overview, queue_depths
from pipeline.settings import Settings
from pipeline.wiring import Wiring

COLUMNS = (
    "stage",
    "ready",
    "delayed",
    "dead",
    "queued",
    "running",
    "retrying",
    "ok/5m",
    "failed/5m",
    "p50 ms",
    "p95 ms",
    "oldest wait",
)


def render(view: Overview) -> str:
    rows = [COLUMNS]
    for s in view.stages:
        rows.append(
            (
                f"{s.stage} (PAUSED)" if s.paused else s.stage,
                str(s.queue.ready),
                str(s.queue.delayed),
                str(s.queue.dead),
                str(s.queued),
                str(s.in_flight),
                str(s.retrying),
                str(s.succeeded_5m),
                str(s.failed_5m),
                _number(s.p50_ms),
                _number(s.p95_ms),
                _age(s.oldest_waiting_s),
            )
        )
    widths = [max(len(row[i]) for row in rows) for i in range(len(COLUMNS))]
    lines = [
        "  ".join(
            cell.rjust(w) if i else cell.ljust(w)
            for i, (cell, w) in enumerate(zip(row, widths, strict=True))
        )
        for row in rows
    ]
    documents = ", ".join(f"{count} {status}" for status, count in view.documents.items())
    stamp = view.generated_at.strftime("%Y-%m-%d %H:%M:%S %Z")
    paused = [s.stage for s in view.stages if s.paused]
    notes = (
        [f"paused: {', '.join(paused)} (their rows wait; `pipeline stages resume NAME`)"]
        if paused
        else []
    )
    return "\n".join([f"pipeline status at {stamp}", *lines, *notes, f"documents: {documents}"])


def _number(value: float | None) -> str:
    return "-" if value is None else f"{value:.0f}"


def _age(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    if seconds < 120:
        return f"{seconds:.0f}s"
    if seconds < 7200:
        return f"{seconds / 60:.0f}m"
    return f"{seconds / 3600:.1f}h"


@click.command()
@click.option("--watch", is_flag=True, help="Refresh until interrupted.")
@click.option("--interval", default=2.0, show_default=True, type=click.FloatRange(min=0.2))
def status(watch: bool, interval: float) -> None:
    """Queue depth, work in flight, outcomes and latency of each stage."""
    settings = Settings.from_env()
    engine = make_engine(settings, application_name="pipeline-status")
    client = make_broker(settings).client
    names = Wiring(settings).definition.names
    try:
        while True:
            with engine.connect() as conn:
                depths = queue_depths(client, settings.broker.namespace, names)
                text = render(overview(conn, depths, names))
            if watch:
                click.clear()
            click.echo(text)
            if not watch:
                return
            time.sleep(interval)
    except KeyboardInterrupt:
        pass
    finally:
        engine.dispose()
