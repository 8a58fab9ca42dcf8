"""``pipeline db``: schema migrations."""

from __future__ import annotations

from pathlib import Path

import click
from alembic import command
from alembic.config import Config

from pipeline.settings import Settings


def migrations_dir() -> Path:
    """The Alembic scripts: inside the wheel when installed, beside ``src/`` in a checkout."""
    package = Path(__file__).resolve().parent.parent
    for candidate in (package / "_migrations", package.parent.parent / "migrations"):
        if (candidate / "env.py").is_file():
            return candidate
    raise click.ClickException("cannot find the migrations folder")


def alembic_config(settings: Settings) -> Config:
    config = Config()
    config.set_main_option("script_location", str(migrations_dir()))
    config.attributes["sqlalchemy_url"] = settings.sqlalchemy_url
    return config


def upgrade(settings: Settings, revision: str = "head") -> None:
    command.upgrade(alembic_config(settings), revision)


@click.group()
def db() -> None:
    """Database schema commands."""


@db.command("upgrade")
@click.argument("revision", default="head")
def upgrade_command(revision: str) -> None:
    """Apply migrations up to REVISION (default: the newest)."""
    upgrade(Settings.from_env(), revision)
    click.echo(f"database upgraded to {revision}")
