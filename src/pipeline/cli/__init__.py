"""The ``pipeline`` command."""

from __future__ import annotations

import click

from pipeline.cli.console import console
from pipeline.cli.db import db
from pipeline.cli.documents import documents
from pipeline.cli.errors import PipelineGroup
from pipeline.cli.ingest import ingest
from pipeline.cli.keys import keys
from pipeline.cli.reconciler import reconciler
from pipeline.cli.replay import replay
from pipeline.cli.rerun import rerun
from pipeline.cli.retention import retention
from pipeline.cli.serve import api, worker
from pipeline.cli.stages import stages
from pipeline.cli.status import status
from pipeline.cli.up import demo, up
from pipeline.cli.webhooks import webhooks
from pipeline.logs import configure_logging


@click.group(cls=PipelineGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--log-level", default="INFO", show_default=True, help="Python log level.")
def main(log_level: str) -> None:
    """An event-driven document-ingestion pipeline on Dramatiq and Postgres."""
    configure_logging(log_level.upper())


COMMANDS = (
    api,
    worker,
    reconciler,
    db,
    ingest,
    keys,
    replay,
    rerun,
    documents,
    retention,
    stages,
    status,
    up,
    demo,
    webhooks,
    console,
)
for command in COMMANDS:
    main.add_command(command)
