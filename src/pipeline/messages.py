"""The messages that travel between stages.

Messages carry identifiers only; every input is read from Postgres, so a lost
message can always be rebuilt from the stage row it stands for.
"""

from __future__ import annotations

import uuid
from typing import Any

import dramatiq
import msgspec

from pipeline.stages import StageName


class StageMessage(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """Asks a stage's workers to process one document at one generation."""

    document_id: uuid.UUID
    stage: StageName
    generation: int

    def to_args(self) -> dict[str, object]:
        """The JSON-safe form Dramatiq carries as the actor's single argument."""
        return {
            "document_id": str(self.document_id),
            "stage": self.stage,
            "generation": self.generation,
        }

    @classmethod
    def from_args(cls, payload: object) -> StageMessage:
        """Validate an actor argument; raises ``msgspec.ValidationError`` on bad input."""
        return msgspec.convert(payload, cls)


class Delivery(msgspec.Struct, frozen=True):
    """What the broker told us about one delivery of a message."""

    message_id: str
    actor_name: str
    queue_name: str
    message: dict[str, Any]
    """The whole Dramatiq message, as kept in a dead letter."""

    @classmethod
    def from_message(cls, message: dramatiq.Message[Any]) -> Delivery:
        return cls(
            message_id=message.message_id,
            actor_name=message.actor_name,
            queue_name=message.queue_name,
            message=dict(message.asdict()),
        )
