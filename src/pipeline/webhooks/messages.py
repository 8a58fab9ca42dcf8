"""The message of the ``deliver_webhook`` actor: a delivery's id, nothing more."""

from __future__ import annotations

import uuid
from typing import Any, Final

import dramatiq
import msgspec

WEBHOOKS_QUEUE: Final = "webhooks"
WEBHOOK_ACTOR: Final = "deliver_webhook"


class WebhookMessage(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """Asks a webhook worker to attempt one delivery (whatever the row says is due)."""

    delivery_id: uuid.UUID

    def to_args(self) -> dict[str, object]:
        return {"delivery_id": str(self.delivery_id)}

    @classmethod
    def from_args(cls, payload: object) -> WebhookMessage:
        """Raises ``msgspec.ValidationError`` on anything else."""
        return msgspec.convert(payload, cls)


def build(delivery_id: uuid.UUID) -> dramatiq.Message[Any]:
    """A new Dramatiq message (a new id) for the delivery."""
    return dramatiq.Message(
        queue_name=WEBHOOKS_QUEUE,
        actor_name=WEBHOOK_ACTOR,
        args=(WebhookMessage(delivery_id).to_args(),),
        kwargs={},
        options={},
    )


def delivery_of(message: dict[str, Any]) -> uuid.UUID | None:
    """The delivery a stored Dramatiq message (a dead letter's) is for."""
    try:
        return WebhookMessage.from_args(message["args"][0]).delivery_id
    except (KeyError, IndexError, TypeError, msgspec.ValidationError):
        return None
