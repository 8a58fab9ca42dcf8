"""The messages that travel between stages.

Messages carry identifiers only; every input is read from Postgres, so a lost
message can always be rebuilt from the stage row it stands for.
"""

from __future__ import annotations

import uuid

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
