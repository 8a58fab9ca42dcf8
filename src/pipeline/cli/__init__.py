r"""The ``pipeline`` command.

Each subcommand's module is imported only when that subcommand runs (or ``--help``
lists them all): ``pipeline worker`` checks the definition and hands over to Dramatiq,
and should not first import the HTTP app, Alembic and every other command's
dependencies (2.7 s on a slow machine, for a process that ``exec``\s a moment later).
"""

from __future__ import annotations

import importlib
from typing import Final

import click

from pipeline.cli.errors import PipelineGroup
from pipeline.logs import configure_logging

COMMANDS: Final = {
    "api": "pipeline.cli.serve:api",
    "worker": "pipeline.cli.serve:worker",
    "reconciler": "pipeline.cli.reconciler:reconciler",
    "db": "pipeline.cli.db:db",
    "ingest": "pipeline.cli.ingest:ingest",
    "keys": "pipeline.cli.keys:keys",
    "replay": "pipeline.cli.replay:replay",
    "rerun": "pipeline.cli.rerun:rerun",
    "documents": "pipeline.cli.documents:documents",
    "retention": "pipeline.cli.retention:retention",
    "stages": "pipeline.cli.stages:stages",
    "status": "pipeline.cli.status:status",
    "up": "pipeline.cli.up:up",
    "demo": "pipeline.cli.up:demo",
    "webhooks": "pipeline.cli.webhooks:webhooks",
    "console": "pipeline.cli.console:console",
}
"""Every subcommand: its name and where it is defined (``module:attribute``)."""


class LazyGroup(PipelineGroup):
    """A group whose subcommands are imported on first use."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return list(COMMANDS)

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        where = COMMANDS.get(cmd_name)
        if where is None:
            return None
        module, _, attribute = where.partition(":")
        command = getattr(importlib.import_module(module), attribute)
        assert isinstance(command, click.Command)
        return command


@click.group(cls=LazyGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--log-level", default="INFO", show_default=True, help="Python log level.")
def main(log_level: str) -> None:
    """An event-driven document-ingestion pipeline on Dramatiq and Postgres."""
    configure_logging(log_level.upper())
