"""The ``pipeline`` command."""

from __future__ import annotations

import logging

import click

from pipeline.cli.db import db
from pipeline.cli.ingest import ingest
from pipeline.cli.reconciler import reconciler
from pipeline.cli.replay import replay
from pipeline.cli.rerun import rerun
from pipeline.cli.serve import api, worker


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--log-level", default="INFO", show_default=True, help="Python log level.")
def main(log_level: str) -> None:
    """An event-driven document-ingestion pipeline on Dramatiq and Postgres."""
    logging.basicConfig(
        level=log_level.upper(),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )


main.add_command(api)
main.add_command(worker)
main.add_command(db)
main.add_command(ingest)
main.add_command(reconciler)
main.add_command(replay)
main.add_command(rerun)
