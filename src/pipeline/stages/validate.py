"""validate: sniff the real type from the bytes, check size and type policy."""

from __future__ import annotations

import uuid
from typing import Any

from sqlalchemy import Connection, bindparam, func, update

from pipeline.db.models import Document
from pipeline.engine.artifacts import load_blob
from pipeline.processing.validate import Validation, ValidationPolicy, validate

_VALIDATED = (
    update(Document)
    .where(Document.id == bindparam("document_id"))
    .values(
        kind=bindparam("kind_"),
        detected_content_type=bindparam("mime_"),
        encoding=bindparam("encoding_"),
        updated_at=func.now(),
    )
)
"""Built once per process (see ``storage.py``); SQLAlchemy reserves the column names
for its own SET parameters, hence the trailing underscores."""


class ValidateHandler:
    def __init__(self, policy: ValidationPolicy) -> None:
        self.policy = policy

    def load(self, conn: Connection, document_id: uuid.UUID) -> bytes:
        return load_blob(conn, document_id)

    def compute(self, data: bytes) -> Validation:
        return validate(data, self.policy)

    def summarize(self, result: Validation) -> dict[str, Any]:
        return {"kind": result.kind, "mime": result.mime, "encoding": result.encoding}

    def store(
        self, conn: Connection, document_id: uuid.UUID, generation: int, result: Validation
    ) -> None:
        conn.execute(
            _VALIDATED,
            {
                "document_id": document_id,
                "kind_": result.kind,
                "mime_": result.mime,
                "encoding_": result.encoding,
            },
        )
