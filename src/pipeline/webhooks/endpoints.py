"""Registering, listing, showing, rotating and removing webhook endpoints.

One service for the HTTP API and the CLI. A tenant sees and changes only its own
endpoints (another tenant's answers as one that does not exist); ``tenant=None`` is the
trusted CLI, which sees every one. The signing secret is shown when an endpoint is
created and when it is rotated, never in a listing; it is stored as it is, since
signing needs it (whoever reads the database can sign as the pipeline).
"""

from __future__ import annotations

import uuid
from datetime import datetime, timedelta
from typing import Annotated, Any, Final

import msgspec
from sqlalchemy import Engine, select

from pipeline.db.models import WebhookAttempt, WebhookDelivery, WebhookEndpoint
from pipeline.errors import PipelineError
from pipeline.settings import Settings
from pipeline.statuses import DeliveryStatus, WebhookEventType
from pipeline.text import NO_NUL
from pipeline.webhooks import outbox, signing
from pipeline.webhooks.destinations import (
    MAX_URL_CHARS,
    Resolver,
    check_destination,
    system_resolver,
)

RECENT_DELIVERIES: Final = 20
Url = Annotated[str, msgspec.Meta(min_length=1, max_length=MAX_URL_CHARS, pattern=NO_NUL)]
Description = Annotated[str, msgspec.Meta(max_length=500, pattern=NO_NUL)]


class EndpointNotFound(PipelineError):
    """No such webhook endpoint (or another tenant's)."""


class EndpointRequest(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """A new endpoint: where, and which events (at least one)."""

    url: Url
    events: Annotated[list[WebhookEventType], msgspec.Meta(min_length=1, max_length=4)]
    description: Description | None = None


class EndpointView(msgspec.Struct, frozen=True, kw_only=True):
    id: uuid.UUID
    tenant: str
    url: str
    events: list[WebhookEventType]
    description: str | None
    enabled: bool
    disabled_reason: str | None
    created_by: str
    created_at: datetime
    updated_at: datetime
    previous_secret_expires_at: datetime | None
    """While set and in the future, deliveries are signed with the previous secret too."""


class EndpointWithSecret(EndpointView, frozen=True, kw_only=True):
    secret: str
    """``whsec_…``: shown now, and not again (rotate to get a new one)."""


class AttemptView(msgspec.Struct, frozen=True):
    attempt: int
    started_at: datetime
    status_code: int | None
    latency_ms: int
    error: str | None


class DeliveryView(msgspec.Struct, frozen=True, kw_only=True):
    id: uuid.UUID
    webhook_id: str
    """The ``webhook-id`` header it is sent with."""
    event_type: WebhookEventType
    event_id: int
    document_id: uuid.UUID | None
    status: DeliveryStatus
    attempts: int
    next_attempt_at: datetime
    delivered_at: datetime | None
    last_status_code: int | None
    last_error: str | None
    created_at: datetime
    history: list[AttemptView]


class EndpointDetail(msgspec.Struct, frozen=True, kw_only=True):
    endpoint: EndpointView
    deliveries: list[DeliveryView]
    """The most recent ones, newest first, each with its attempts."""


def _view(row: Any) -> EndpointView:
    return EndpointView(
        id=row.id,
        tenant=row.tenant,
        url=row.url,
        events=list(row.events),
        description=row.description,
        enabled=row.enabled,
        disabled_reason=row.disabled_reason,
        created_by=row.created_by,
        created_at=row.created_at,
        updated_at=row.updated_at,
        previous_secret_expires_at=row.previous_secret_expires_at,
    )


class WebhookEndpoints:
    def __init__(
        self, engine: Engine, settings: Settings, *, resolver: Resolver = system_resolver
    ) -> None:
        self.engine = engine
        self.allow_private = settings.webhooks.allow_private
        self.grace = timedelta(milliseconds=settings.webhooks.secret_rotation_grace_ms)
        self.resolver = resolver

    def create(self, tenant: str, request: EndpointRequest, created_by: str) -> EndpointWithSecret:
        """Raises ``DestinationRefused`` for a URL deliveries could not go to."""
        check_destination(request.url, allow_private=self.allow_private, resolver=self.resolver)
        endpoint_id, secret = uuid.uuid4(), signing.new_secret()
        with self.engine.begin() as conn:
            conn.execute(
                outbox.new_endpoint(
                    endpoint_id=endpoint_id,
                    tenant=tenant,
                    url=request.url,
                    events=list(dict.fromkeys(request.events)),
                    description=request.description,
                    secret=secret,
                    created_by=created_by,
                )
            )
            row = self._row(conn, endpoint_id, tenant)
        return EndpointWithSecret(**msgspec.structs.asdict(_view(row)), secret=secret)

    def list(self, tenant: str | None) -> list[EndpointView]:
        query = select(WebhookEndpoint).order_by(
            WebhookEndpoint.created_at.desc(), WebhookEndpoint.id
        )
        if tenant is not None:
            query = query.where(WebhookEndpoint.tenant == tenant)
        with self.engine.connect() as conn:
            return [_view(row) for row in conn.execute(query).all()]

    def show(
        self, endpoint_id: uuid.UUID, tenant: str | None, *, recent: int = RECENT_DELIVERIES
    ) -> EndpointDetail:
        with self.engine.connect() as conn:
            row = self._row(conn, endpoint_id, tenant)
            deliveries = conn.execute(
                select(WebhookDelivery)
                .where(WebhookDelivery.endpoint_id == endpoint_id)
                .order_by(WebhookDelivery.created_at.desc(), WebhookDelivery.id)
                .limit(recent)
            ).all()
            ids = [delivery.id for delivery in deliveries]
            attempts: dict[uuid.UUID, list[AttemptView]] = {}
            if ids:
                for attempt in conn.execute(
                    select(WebhookAttempt)
                    .where(WebhookAttempt.delivery_id.in_(ids))
                    .order_by(WebhookAttempt.id)
                ).all():
                    attempts.setdefault(attempt.delivery_id, []).append(
                        AttemptView(
                            attempt.attempt,
                            attempt.started_at,
                            attempt.status_code,
                            attempt.latency_ms,
                            attempt.error,
                        )
                    )
        return EndpointDetail(
            endpoint=_view(row),
            deliveries=[
                DeliveryView(
                    id=d.id,
                    webhook_id=signing.message_id(d.id),
                    event_type=d.event_type,
                    event_id=d.event_id,
                    document_id=d.document_id,
                    status=d.status,
                    attempts=d.attempts,
                    next_attempt_at=d.next_attempt_at,
                    delivered_at=d.delivered_at,
                    last_status_code=d.last_status_code,
                    last_error=d.last_error,
                    created_at=d.created_at,
                    history=attempts.get(d.id, []),
                )
                for d in deliveries
            ],
        )

    def rotate(self, endpoint_id: uuid.UUID, tenant: str | None) -> EndpointWithSecret:
        """A new secret; the old one signs too, for the rotation grace
        (``PIPELINE_WEBHOOKS_SECRET_ROTATION_GRACE_S``)."""
        secret = signing.new_secret()
        with self.engine.begin() as conn:
            self._lock(conn, endpoint_id, tenant)
            conn.execute(outbox.rotate_secret(endpoint_id, secret, self.grace))
            row = self._row(conn, endpoint_id, tenant)
        return EndpointWithSecret(**msgspec.structs.asdict(_view(row)), secret=secret)

    def enable(self, endpoint_id: uuid.UUID, tenant: str | None) -> EndpointView:
        """Deliver again (after a ``410 Gone`` disabled it); cancelled deliveries stay so."""
        with self.engine.begin() as conn:
            self._lock(conn, endpoint_id, tenant)
            conn.execute(outbox.enable_endpoint(endpoint_id))
            return _view(self._row(conn, endpoint_id, tenant))

    def remove(self, endpoint_id: uuid.UUID, tenant: str | None) -> EndpointView:
        """The endpoint goes, with its deliveries: nothing more is sent to it (a message
        already queued finds no delivery and is dropped)."""
        with self.engine.begin() as conn:
            self._lock(conn, endpoint_id, tenant)
            view = _view(self._row(conn, endpoint_id, tenant))
            conn.execute(outbox.remove_endpoint(endpoint_id))
        return view

    @staticmethod
    def _lock(conn: Any, endpoint_id: uuid.UUID, tenant: str | None) -> None:
        if conn.execute(outbox.lock_endpoint(endpoint_id, tenant)).first() is None:
            raise EndpointNotFound(f"no webhook endpoint with id {endpoint_id}")

    @staticmethod
    def _row(conn: Any, endpoint_id: uuid.UUID, tenant: str | None) -> Any:
        query = select(WebhookEndpoint).where(WebhookEndpoint.id == endpoint_id)
        if tenant is not None:
            query = query.where(WebhookEndpoint.tenant == tenant)
        row = conn.execute(query).first()
        if row is None:
            raise EndpointNotFound(f"no webhook endpoint with id {endpoint_id}")
        return row
