"""``pipeline db``: schema migrations."""

from __future__ import annotations

import click

from pipeline.db.migrate import upgrade
from pipeline.settings import Settings


@click.group()
def db() -> None:
    """Database schema commands."""


@db.command("upgrade")
@click.argument("revision", default="head")
def upgrade_command(revision: str) -> None:
    """Apply migrations up to REVISION (default: the newest)."""
    upgrade(Settings.from_env(), revision)
    click.echo(f"database upgraded to {revision}")
