"""``pipeline keys``: create, list and revoke API keys.

Runs against Postgres directly (``DATABASE_URL``), like the other operator commands:
whoever holds the database credentials is trusted to hand out keys. A new key is
printed once, alone on stdout (so ``KEY=$(pipeline keys create ...)`` works); only its
hash is stored, so it cannot be shown again.
"""

from __future__ import annotations

import click

from pipeline.access.keys import (
    InvalidKeyRequest,
    KeyNotFound,
    KeyView,
    create_key,
    list_keys,
    revoke_key,
)
from pipeline.cli.output import database, echo_json, load_settings, table, terminal_width, utc
from pipeline.settings import Settings


@click.group()
def keys() -> None:
    """API keys: who (a tenant) may do what (scopes: ingest, read, admin).

    A key is shown once, when it is created; Postgres keeps only its SHA-256 hash.
    """


def _rate(view: KeyView, settings: Settings) -> str:
    if view.rate_limit_per_s is None:
        return f"default ({settings.access.ingest_rate_per_s:g}/s)"
    return "unlimited" if view.rate_limit_per_s == 0 else f"{view.rate_limit_per_s:g}/s"


@keys.command("create")
@click.option("--tenant", required=True, help="The tenant the key acts for.")
@click.option(
    "--scope",
    "scopes",
    required=True,
    metavar="SCOPES",
    help="Comma-separated: ingest (upload), read (documents, chunks, search), "
    "admin (dead letters, replay, rerun, stages).",
)
@click.option("--name", default=None, help="What the key is for (shown by `keys list`).")
@click.option(
    "--rate-limit",
    type=click.FloatRange(min=0),
    default=None,
    metavar="N",
    help="Uploads per second for this key (0: unlimited; default: PIPELINE_INGEST_RATE_PER_S).",
)
def create_command(tenant: str, scopes: str, name: str | None, rate_limit: float | None) -> None:
    """Create a key and print it (the only time it is shown)."""
    settings = load_settings()
    try:
        with database(settings, "keys create") as engine, engine.begin() as conn:
            created = create_key(
                conn, tenant=tenant, scopes=scopes, name=name, rate_limit_per_s=rate_limit
            )
    except InvalidKeyRequest as error:
        raise click.UsageError(str(error)) from None
    view = created.view
    click.echo(created.key)
    click.echo(
        f"created key {view.prefix} (id {view.id}) for tenant {view.tenant}: "
        f"scopes {','.join(view.scopes)}, rate limit {_rate(view, settings)}",
        err=True,
    )
    click.echo("it is shown only this once: store it now", err=True)


@keys.command("list")
@click.option("--tenant", default=None, help="Only this tenant's keys.")
@click.option(
    "--format", "output", type=click.Choice(["table", "json"]), default="table", show_default=True
)
def list_command(tenant: str | None, output: str) -> None:
    """List keys (never their secrets), revoked ones included."""
    settings = load_settings()
    with database(settings, "keys list") as engine, engine.connect() as conn:
        views = list_keys(conn, tenant)
    if output == "json":
        echo_json(views)
        return
    if not views:
        click.echo("no API keys" + (f" for tenant {tenant}" if tenant else ""))
        return
    headers = ["ID", "PREFIX", "TENANT", "SCOPES", "RATE", "CREATED (UTC)", "REVOKED", "NAME"]
    rows = [
        [
            str(view.id),
            view.prefix,
            view.tenant,
            ",".join(view.scopes),
            _rate(view, settings),
            utc(view.created_at),
            utc(view.revoked_at) if view.revoked_at else "-",
            view.name or "-",
        ]
        for view in views
    ]
    caps = [None, None, 30, None, None, None, None, None]
    for line in table(headers, rows, caps=caps, width=terminal_width()):
        click.echo(line)


@keys.command("revoke")
@click.argument("key", metavar="ID_OR_PREFIX")
def revoke_command(key: str) -> None:
    """Revoke a key, named by its id or its prefix (pk_ and 12 hex digits).

    API processes stop accepting it within PIPELINE_AUTH_CACHE_S (5 s by default).
    """
    settings = load_settings()
    try:
        with database(settings, "keys revoke") as engine, engine.begin() as conn:
            view, revoked_now = revoke_key(conn, key)
    except KeyNotFound as error:
        raise click.ClickException(str(error)) from None
    if not revoked_now:
        click.echo(f"key {view.prefix} (tenant {view.tenant}) was already revoked")
        return
    wait = settings.access.auth_cache_ms / 1000
    click.echo(
        f"revoked key {view.prefix} (tenant {view.tenant}); "
        f"API processes refuse it within {wait:g} s (PIPELINE_AUTH_CACHE_S)"
    )
