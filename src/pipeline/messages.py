"""The messages that travel between stages.

Messages carry identifiers only; every input is read from Postgres, so a lost
message can always be rebuilt from the stage row it stands for.
"""

from __future__ import annotations

import uuid
from typing import Annotated, Any, Final

import dramatiq
import msgspec

from pipeline.stages import StageName

Generation = Annotated[int, msgspec.Meta(ge=1, le=2**31 - 1)]
"""Generations start at 1 and are stored as Postgres ``integer``: anything else in a
message is forged or corrupt, and is refused before it reaches a query."""
MAX_RAW_CHARS: Final = 65_536
"""How much of an undecodable message a dead letter keeps."""


class StageMessage(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """Asks a stage's workers to process one document at one generation."""

    document_id: uuid.UUID
    stage: StageName
    generation: Generation

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
            message=_without_nul(dict(message.asdict())),
        )

    @classmethod
    def undecodable(cls, queue_name: str, message_id: str, data: bytes) -> Delivery:
        """A message that is not JSON (a pickle, say), kept as text a dead letter can hold.

        Bytes that are not UTF-8 are written as ``\\xNN`` escapes, and so is NUL, which
        Postgres ``jsonb`` cannot hold (a pickle is full of them).
        """
        raw = data[:MAX_RAW_CHARS].decode("utf-8", errors="backslashreplace")
        return cls(message_id, "<undecodable>", queue_name, {"raw": _escape_nul(raw)})


def _escape_nul(text: str) -> str:
    return text.replace("\x00", "\\x00")


def _without_nul(value: Any) -> Any:
    """A decoded message with every NUL escaped, so that a dead letter can store it.

    JSON may carry ``\\u0000`` in any string; no valid stage message has one, but a
    forged message must still be recordable as the poison it is.
    """
    if isinstance(value, str):
        return _escape_nul(value)
    if isinstance(value, dict):
        return {_escape_nul(str(key)): _without_nul(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [_without_nul(item) for item in value]
    return value
