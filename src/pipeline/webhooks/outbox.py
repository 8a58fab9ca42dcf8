"""Every write to ``webhook_endpoints``, ``webhook_deliveries`` and ``webhook_attempts``.

The outbox rows are inserted by the trigger of migration 0010 (in the transition's own
transaction); everything after that is here, as statements the services run in their
own transactions, so the state machine of a delivery is defined in one module:

    pending ──► delivering ──► delivered
       ▲  ▲         │  │  └──► cancelled   (410 Gone: its endpoint is disabled)
       │  │         │  └─────► dead        (a refused destination, or attempts used up:
       │  └ resent ─┘                       a dead letter; a replay makes it pending)
       │            └──► retrying ──(due)──► delivering ...
       └──────────────────── replayed ◄── dead

**Fencing.** Every claim increments ``fence``; the writes that end an attempt hold only
while the fence and the ``delivering`` status are the claim's, so an attempt whose row
was taken over (it ran past its deadline and was re-sent) cannot overwrite the newer
attempt's outcome. Its attempt is still recorded: the request did go out.

**Lock order.** A delivery row is locked alone, or after its document (a dead delivery,
which writes a dead letter: document → delivery → dead letter, as in
``engine.transitions``); an endpoint is locked before its deliveries (disabling it
cancels them). The dispatcher takes its rows with ``SKIP LOCKED``.
"""

from __future__ import annotations

import uuid
from datetime import timedelta
from typing import Any, Final

from sqlalchemy import (
    Delete,
    Insert,
    Select,
    TextClause,
    Update,
    case,
    delete,
    func,
    insert,
    select,
    text,
    update,
)

from pipeline.db.models import WebhookDelivery, WebhookEndpoint
from pipeline.statuses import UNFINISHED_DELIVERY_STATUSES, WebhookEventType

MAX_ERROR_CHARS: Final = 1000

# -- the dispatcher --------------------------------------------------------------------------


def due(limit: int) -> Select[Any]:
    """Unfinished deliveries whose message is missing or overdue (new rows are due at
    once: their ``deadline_at`` defaults to their insert), oldest deadline first."""
    return (
        select(
            WebhookDelivery.id,
            WebhookDelivery.status,
            func.greatest(
                0, func.extract("epoch", WebhookDelivery.next_attempt_at - func.now()) * 1000
            ).label("due_in_ms"),
        )
        .where(
            WebhookDelivery.status.in_(UNFINISHED_DELIVERY_STATUSES),
            WebhookDelivery.deadline_at <= func.now(),
        )
        .order_by(WebhookDelivery.deadline_at)
        .limit(limit)
        .with_for_update(skip_locked=True)
    )


def dispatched(delivery_id: uuid.UUID, message_id: str, grace: timedelta) -> Update:
    """The delivery waits for ``message_id``; an abandoned ``delivering`` row (its worker
    died mid-attempt) waits again as ``pending``. Overdue again after ``grace`` past the
    time it is due."""
    return (
        update(WebhookDelivery)
        .where(WebhookDelivery.id == delivery_id)
        .values(
            status=case(
                (WebhookDelivery.status == "delivering", "pending"),
                else_=WebhookDelivery.status,
            ),
            message_id=message_id,
            deadline_at=func.greatest(WebhookDelivery.next_attempt_at, func.now()) + grace,
            updated_at=func.now(),
        )
    )


# -- the deliverer ---------------------------------------------------------------------------

CLAIM_SQL: Final = text(
    """
WITH claimed AS (
    UPDATE webhook_deliveries AS d
    SET status = 'delivering', fence = d.fence + 1, attempts = d.attempts + 1,
        deadline_at = now() + make_interval(secs => :deadline_s), message_id = :message_id,
        updated_at = now()
    FROM webhook_endpoints AS e
    WHERE d.id = :delivery_id AND e.id = d.endpoint_id AND e.enabled
      AND (d.status = 'pending'
           OR (d.status = 'retrying' AND d.next_attempt_at <= now())
           OR (d.status = 'delivering' AND d.deadline_at < now()))
    RETURNING d.id, d.fence, d.attempts, d.payload, d.document_id, d.endpoint_id, e.url,
              e.secret,
              CASE WHEN e.previous_secret_expires_at > now() THEN e.previous_secret END
                  AS previous_secret,
              now() AS started_at
)
SELECT * FROM claimed
"""
)
"""Claim a delivery for one attempt: only while it is waiting (``pending``, or
``retrying`` and due, or ``delivering`` past its deadline: a worker died) and its
endpoint is enabled. Returns what the attempt needs (the secrets valid now included),
or nothing: a duplicate, stale or early message, which is dropped."""


def claim(delivery_id: uuid.UUID, message_id: str, deadline: timedelta) -> TextClause:
    return CLAIM_SQL.bindparams(
        delivery_id=delivery_id, message_id=message_id, deadline_s=deadline.total_seconds()
    )


ATTEMPT_SQL: Final = text(
    """
INSERT INTO webhook_attempts (delivery_id, attempt, started_at, status_code, latency_ms, error)
SELECT id, :attempt, :started_at, :status_code, :latency_ms, :error
FROM webhook_deliveries WHERE id = :delivery_id
"""
)
"""An attempt, recorded whether or not its claim still holds (the request went out);
nothing if the delivery is gone (its endpoint was removed meanwhile)."""


def attempt(
    delivery_id: uuid.UUID,
    number: int,
    started_at: Any,
    *,
    status_code: int | None,
    latency_ms: int,
    error: str | None,
) -> TextClause:
    return ATTEMPT_SQL.bindparams(
        delivery_id=delivery_id,
        attempt=number,
        started_at=started_at,
        status_code=status_code,
        latency_ms=latency_ms,
        error=error[:MAX_ERROR_CHARS] if error else None,
    )


def _held(delivery_id: uuid.UUID, fence: int) -> tuple[Any, ...]:
    return (
        WebhookDelivery.id == delivery_id,
        WebhookDelivery.fence == fence,
        WebhookDelivery.status == "delivering",
    )


def delivered(delivery_id: uuid.UUID, fence: int, status_code: int) -> Update:
    return (
        update(WebhookDelivery)
        .where(*_held(delivery_id, fence))
        .values(
            status="delivered",
            delivered_at=func.now(),
            deadline_at=None,
            last_status_code=status_code,
            last_error=None,
            updated_at=func.now(),
        )
        .returning(WebhookDelivery.id)
    )


def retrying(
    delivery_id: uuid.UUID,
    fence: int,
    *,
    delay: timedelta,
    grace: timedelta,
    message_id: str,
    status_code: int | None,
    error: str,
) -> Update:
    """Wait ``delay`` for the next attempt, for ``message_id`` (sent with that delay)."""
    return (
        update(WebhookDelivery)
        .where(*_held(delivery_id, fence))
        .values(
            status="retrying",
            next_attempt_at=func.now() + delay,
            deadline_at=func.now() + delay + grace,
            message_id=message_id,
            last_status_code=status_code,
            last_error=error[:MAX_ERROR_CHARS],
            updated_at=func.now(),
        )
        .returning(WebhookDelivery.id)
    )


def died(delivery_id: uuid.UUID, fence: int, *, status_code: int | None, error: str) -> Update:
    return (
        update(WebhookDelivery)
        .where(*_held(delivery_id, fence))
        .values(
            status="dead",
            deadline_at=None,
            last_status_code=status_code,
            last_error=error[:MAX_ERROR_CHARS],
            updated_at=func.now(),
        )
        .returning(WebhookDelivery.id, WebhookDelivery.attempts)
    )


def rearm(delivery_id: uuid.UUID, message_id: str, grace: timedelta, *, force: bool) -> Update:
    """A replayed dead delivery: due now, for ``message_id``, with a fresh attempt budget
    (the fence carries on). Only a ``dead`` one, unless ``force`` (then any finished one
    but ``delivered``)."""
    statuses = ("dead", "cancelled") if force else ("dead",)
    return (
        update(WebhookDelivery)
        .where(WebhookDelivery.id == delivery_id, WebhookDelivery.status.in_(statuses))
        .values(
            status="pending",
            attempts=0,
            next_attempt_at=func.now(),
            deadline_at=func.now() + grace,
            message_id=message_id,
            updated_at=func.now(),
        )
        .returning(WebhookDelivery.id)
    )


def cancel_unfinished(endpoint_id: uuid.UUID, reason: str) -> Update:
    """Every unfinished delivery of an endpoint (after locking the endpoint)."""
    return (
        update(WebhookDelivery)
        .where(
            WebhookDelivery.endpoint_id == endpoint_id,
            WebhookDelivery.status.in_(UNFINISHED_DELIVERY_STATUSES),
        )
        .values(status="cancelled", deadline_at=None, last_error=reason, updated_at=func.now())
    )


# -- endpoints -------------------------------------------------------------------------------


def new_endpoint(
    *,
    endpoint_id: uuid.UUID,
    tenant: str,
    url: str,
    events: list[WebhookEventType],
    description: str | None,
    secret: str,
    created_by: str,
) -> Insert:
    return insert(WebhookEndpoint).values(
        id=endpoint_id,
        tenant=tenant,
        url=url,
        events=events,
        description=description,
        secret=secret,
        created_by=created_by,
    )


def lock_endpoint(endpoint_id: uuid.UUID, tenant: str | None) -> Select[Any]:
    conditions = [WebhookEndpoint.id == endpoint_id]
    if tenant is not None:
        conditions.append(WebhookEndpoint.tenant == tenant)
    return select(WebhookEndpoint.id).where(*conditions).with_for_update(key_share=True)


def disable_endpoint(endpoint_id: uuid.UUID, reason: str) -> Update:
    return (
        update(WebhookEndpoint)
        .where(WebhookEndpoint.id == endpoint_id)
        .values(enabled=False, disabled_reason=reason, updated_at=func.now())
    )


def enable_endpoint(endpoint_id: uuid.UUID) -> Update:
    return (
        update(WebhookEndpoint)
        .where(WebhookEndpoint.id == endpoint_id)
        .values(enabled=True, disabled_reason=None, updated_at=func.now())
    )


def rotate_secret(endpoint_id: uuid.UUID, secret: str, grace: timedelta) -> Update:
    """The new secret signs from now on; the current one too, until ``grace`` has passed."""
    return (
        update(WebhookEndpoint)
        .where(WebhookEndpoint.id == endpoint_id)
        .values(
            previous_secret=WebhookEndpoint.secret,
            previous_secret_expires_at=func.now() + grace,
            secret=secret,
            updated_at=func.now(),
        )
    )


def remove_endpoint(endpoint_id: uuid.UUID) -> Delete:
    """The endpoint, with its deliveries and their attempts (``ON DELETE CASCADE``)."""
    return delete(WebhookEndpoint).where(WebhookEndpoint.id == endpoint_id)
