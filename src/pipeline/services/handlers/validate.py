"""validate: sniff the real type from the bytes, check size and type policy."""

from __future__ import annotations

import uuid
from typing import Any

from sqlalchemy import Connection, func, update

from pipeline.db.models import Document
from pipeline.processing.validate import Validation, ValidationPolicy, validate
from pipeline.services.handlers.storage import load_blob


class ValidateHandler:
    def __init__(self, policy: ValidationPolicy) -> None:
        self.policy = policy

    def load(self, conn: Connection, document_id: uuid.UUID) -> bytes:
        return load_blob(conn, document_id)

    def compute(self, data: bytes) -> Validation:
        return validate(data, self.policy)

    def store(
        self, conn: Connection, document_id: uuid.UUID, generation: int, result: Validation
    ) -> dict[str, Any]:
        conn.execute(
            update(Document)
            .where(Document.id == document_id)
            .values(
                kind=result.kind,
                detected_content_type=result.mime,
                encoding=result.encoding,
                updated_at=func.now(),
            )
        )
        return {"kind": result.kind, "mime": result.mime, "encoding": result.encoding}
