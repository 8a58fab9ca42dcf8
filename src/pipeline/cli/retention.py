"""``pipeline retention``: what the retention sweep removes, now or on its next run.

The reconciler's leader runs the sweep on every pass (``lifecycle.retention``); this
command shows, with ``--dry-run``, what the next one would remove (plain reads, no
locks), or runs one sweep now.
"""

from __future__ import annotations

import click

from pipeline.cli.output import database, load_settings, table, terminal_width
from pipeline.lifecycle.retention import MAX_BATCHES, RETENTION_KINDS
from pipeline.wiring import Wiring


@click.command()
@click.option(
    "--dry-run", is_flag=True, help="Count what the next sweep would remove; change nothing."
)
def retention(dry_run: bool) -> None:
    """Remove what is past its retention age (PIPELINE_RETENTION_*), or --dry-run to see
    what that would be. One run removes at most PIPELINE_RETENTION_BATCH_SIZE rows ten
    times per kind, as the reconciler's sweep does."""
    settings = load_settings()
    with database(settings, "retention") as engine:
        sweep = Wiring(settings, engine=engine).retention
        found = sweep.preview() if dry_run else dict(sweep.sweep())
    ages = sweep.ages
    rows = [
        [
            kind,
            "for ever" if not ages[kind] else _age(ages[kind]),
            "-" if found.get(kind) is None else str(found[kind]),
        ]
        for kind in RETENTION_KINDS
    ]
    headers = ["kind", "kept", "would remove" if dry_run else "removed"]
    for line in table(headers, rows, caps=[None, None, None], width=terminal_width()):
        click.echo(line)
    if dry_run:
        cap = settings.retention.batch_size * MAX_BATCHES
        click.echo(f"(dry run: nothing changed; a sweep removes at most {cap} of each kind)")


def _age(milliseconds: int) -> str:
    seconds = milliseconds / 1000
    for unit, size in (("d", 86400), ("h", 3600), ("min", 60)):
        if seconds >= size and seconds % size == 0:
            return f"{seconds / size:g} {unit}"
    return f"{seconds:g} s"
