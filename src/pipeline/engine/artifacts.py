"""Small storage helpers shared by several handlers."""

from __future__ import annotations

import uuid

from sqlalchemy import Connection, bindparam, select
from sqlalchemy.dialects.postgresql import insert

from pipeline.db.models import DocumentBlob, StageOutput
from pipeline.errors import PermanentError


class MissingInput(PermanentError):
    """A stage's input is not in Postgres (its earlier stage never stored it)."""


# Statements are built once per process: building and cache-keying a SQLAlchemy
# statement on every call showed up as a quarter of a worker's time (docs/benchmarks.md).
_BLOB = select(DocumentBlob.data).where(DocumentBlob.document_id == bindparam("document_id"))
_OUTPUT = select(StageOutput.payload).where(
    StageOutput.document_id == bindparam("document_id"), StageOutput.stage == bindparam("stage")
)
_NEW_OUTPUT = insert(StageOutput)
_REPLACE_OUTPUT = _NEW_OUTPUT.on_conflict_do_update(
    index_elements=[StageOutput.document_id, StageOutput.stage],
    set_={
        "generation": _NEW_OUTPUT.excluded.generation,
        "payload": _NEW_OUTPUT.excluded.payload,
        "created_at": _NEW_OUTPUT.excluded.created_at,
    },
)


def load_blob(conn: Connection, document_id: uuid.UUID) -> bytes:
    data = conn.execute(_BLOB, {"document_id": document_id}).scalar_one_or_none()
    if data is None:
        raise MissingInput("the uploaded bytes of this document are missing")
    return data


def load_output(conn: Connection, document_id: uuid.UUID, stage: str) -> bytes:
    found = conn.execute(_OUTPUT, {"document_id": document_id, "stage": stage})
    payload = found.scalar_one_or_none()
    if payload is None:
        raise MissingInput(f"the output of the {stage} stage is missing")
    return payload


def replace_output(
    conn: Connection, document_id: uuid.UUID, stage: str, generation: int, payload: bytes
) -> None:
    conn.execute(
        _REPLACE_OUTPUT,
        {"document_id": document_id, "stage": stage, "generation": generation, "payload": payload},
    )
