"""``pipeline console link``: a one-time sign-in link to the operator console.

The link carries a random token (stored hashed, usable once, for
``PIPELINE_CONSOLE_LINK_S``), never the key, so it can be printed, pasted or logged.
"""

from __future__ import annotations

import click
from sqlalchemy import Engine

from pipeline.access.console import create_link_token
from pipeline.access.keys import KeyNotFound
from pipeline.cli.output import database, load_settings


def sign_in_link(engine: Engine, key: str, api_url: str, ttl_s: float) -> str:
    """A fresh one-time sign-in link for ``key`` (its id, prefix or the key itself)."""
    with engine.begin() as conn:
        token, _ = create_link_token(conn, key, ttl_s)
    return f"{api_url.rstrip('/')}/console/link/{token}"


@click.group()
def console() -> None:
    """The operator console (served by `pipeline api` under /console)."""


@console.command("link")
@click.option("--key", "key", required=True, help="The admin key's prefix (pk_…) or id.")
@click.option(
    "--url", default="http://127.0.0.1:8000", show_default=True, help="Where the API is served."
)
def link_command(key: str, url: str) -> None:
    """Print a one-time sign-in link for an admin key (valid PIPELINE_CONSOLE_LINK_S)."""
    settings = load_settings()
    try:
        with database(settings, "console link") as engine:
            link = sign_in_link(engine, key, url, settings.console.link_ms / 1000)
    except KeyNotFound as error:
        raise click.UsageError(str(error)) from None
    click.echo(link)
