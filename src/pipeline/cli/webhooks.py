"""``pipeline webhooks``: register, list, show, rotate, enable and remove endpoints.

Runs against Postgres directly (``DATABASE_URL``), like ``pipeline keys``, through the
same service as ``/webhooks`` (so the same checks: an ``https`` URL resolving to public
addresses, unless ``PIPELINE_WEBHOOKS_ALLOW_PRIVATE``). A secret is printed alone on
stdout when an endpoint is added or its secret rotated (``SECRET=$(pipeline webhooks
add ...)``), and not shown again. Dead deliveries are dead letters of the ``webhooks``
queue, listed and replayed by ``pipeline replay`` like any other.
"""

from __future__ import annotations

import uuid

import click

from pipeline.cli.output import database, echo_json, load_settings, table, terminal_width, utc
from pipeline.statuses import WEBHOOK_EVENT_TYPES, WebhookEventType
from pipeline.webhooks.destinations import DestinationRefused
from pipeline.webhooks.endpoints import EndpointNotFound, EndpointRequest, WebhookEndpoints


@click.group()
def webhooks() -> None:
    """Webhook endpoints: where a tenant's document events are POSTed, signed."""


def _endpoint_id(raw: str) -> uuid.UUID:
    try:
        return uuid.UUID(raw)
    except ValueError:
        raise click.BadParameter(f"not an endpoint id: {raw!r}") from None


@webhooks.command("add")
@click.option("--tenant", required=True, help="Whose documents it hears about.")
@click.option("--url", required=True, help="Where deliveries are POSTed (https).")
@click.option(
    "--event",
    "events",
    multiple=True,
    required=True,
    type=click.Choice(WEBHOOK_EVENT_TYPES),
    help="An event type to deliver (repeatable).",
)
@click.option("--description", default=None, help="What it is for.")
def add_command(
    tenant: str, url: str, events: tuple[WebhookEventType, ...], description: str | None
) -> None:
    """Register an endpoint and print its signing secret (the only time it is shown)."""
    settings = load_settings()
    request = EndpointRequest(url=url, events=list(events), description=description)
    try:
        with database(settings, "webhooks add") as engine:
            created = WebhookEndpoints(engine, settings).create(tenant, request, "cli")
    except DestinationRefused as error:
        raise click.UsageError(error.reason) from None
    click.echo(created.secret)
    click.echo(
        f"added webhook endpoint {created.id} for tenant {tenant}: {url} "
        f"({', '.join(created.events)}); the secret is shown only this once",
        err=True,
    )


@webhooks.command("list")
@click.option("--tenant", default=None, help="Only this tenant's endpoints.")
@click.option(
    "--format", "output", type=click.Choice(["table", "json"]), default="table", show_default=True
)
def list_command(tenant: str | None, output: str) -> None:
    """List endpoints (never their secrets)."""
    settings = load_settings()
    with database(settings, "webhooks list") as engine:
        views = WebhookEndpoints(engine, settings).list(tenant)
    if output == "json":
        echo_json(views)
        return
    if not views:
        click.echo("no webhook endpoints" + (f" for tenant {tenant}" if tenant else ""))
        return
    headers = ["ID", "TENANT", "URL", "EVENTS", "ENABLED", "CREATED (UTC)"]
    rows = [
        [
            str(view.id),
            view.tenant,
            view.url,
            ",".join(view.events),
            "yes" if view.enabled else f"no ({view.disabled_reason or '-'})",
            utc(view.created_at),
        ]
        for view in views
    ]
    for line in table(headers, rows, caps=[None, 20, 50, None, 30, None], width=terminal_width()):
        click.echo(line)


@webhooks.command("show")
@click.argument("endpoint_id")
def show_command(endpoint_id: str) -> None:
    """An endpoint with its recent deliveries and their attempts, as JSON."""
    settings = load_settings()
    try:
        with database(settings, "webhooks show") as engine:
            detail = WebhookEndpoints(engine, settings).show(_endpoint_id(endpoint_id), None)
    except EndpointNotFound as error:
        raise click.ClickException(error.reason) from None
    echo_json(detail)


@webhooks.command("rotate")
@click.argument("endpoint_id")
def rotate_command(endpoint_id: str) -> None:
    """Print a new signing secret; the old one keeps signing for the rotation grace."""
    settings = load_settings()
    try:
        with database(settings, "webhooks rotate") as engine:
            rotated = WebhookEndpoints(engine, settings).rotate(_endpoint_id(endpoint_id), None)
    except EndpointNotFound as error:
        raise click.ClickException(error.reason) from None
    click.echo(rotated.secret)
    grace = settings.webhooks.secret_rotation_grace_ms / 1000
    click.echo(
        f"rotated the secret of {rotated.id}; the previous one also signs for {grace:g} s "
        "(PIPELINE_WEBHOOKS_SECRET_ROTATION_GRACE_S)",
        err=True,
    )


@webhooks.command("enable")
@click.argument("endpoint_id")
def enable_command(endpoint_id: str) -> None:
    """Deliver to an endpoint again (after a 410 Gone disabled it)."""
    settings = load_settings()
    try:
        with database(settings, "webhooks enable") as engine:
            view = WebhookEndpoints(engine, settings).enable(_endpoint_id(endpoint_id), None)
    except EndpointNotFound as error:
        raise click.ClickException(error.reason) from None
    click.echo(f"enabled webhook endpoint {view.id} ({view.url})")


@webhooks.command("remove")
@click.argument("endpoint_id")
def remove_command(endpoint_id: str) -> None:
    """Remove an endpoint, with its deliveries: nothing more is sent to it."""
    settings = load_settings()
    try:
        with database(settings, "webhooks remove") as engine:
            view = WebhookEndpoints(engine, settings).remove(_endpoint_id(endpoint_id), None)
    except EndpointNotFound as error:
        raise click.ClickException(error.reason) from None
    click.echo(f"removed webhook endpoint {view.id} ({view.url})")
