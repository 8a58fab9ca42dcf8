"""Small storage helpers shared by several handlers."""

from __future__ import annotations

import uuid

from sqlalchemy import Connection, select
from sqlalchemy.dialects.postgresql import insert

from pipeline.db.models import DocumentBlob, StageOutput
from pipeline.errors import PermanentError


class MissingInput(PermanentError):
    """A stage's input is not in Postgres (its earlier stage never stored it)."""


def load_blob(conn: Connection, document_id: uuid.UUID) -> bytes:
    data = conn.execute(
        select(DocumentBlob.data).where(DocumentBlob.document_id == document_id)
    ).scalar_one_or_none()
    if data is None:
        raise MissingInput("the uploaded bytes of this document are missing")
    return data


def load_output(conn: Connection, document_id: uuid.UUID, stage: str) -> bytes:
    payload = conn.execute(
        select(StageOutput.payload).where(
            StageOutput.document_id == document_id, StageOutput.stage == stage
        )
    ).scalar_one_or_none()
    if payload is None:
        raise MissingInput(f"the output of the {stage} stage is missing")
    return payload


def replace_output(
    conn: Connection, document_id: uuid.UUID, stage: str, generation: int, payload: bytes
) -> None:
    statement = insert(StageOutput).values(
        document_id=document_id, stage=stage, generation=generation, payload=payload
    )
    conn.execute(
        statement.on_conflict_do_update(
            index_elements=[StageOutput.document_id, StageOutput.stage],
            set_={
                "generation": statement.excluded.generation,
                "payload": statement.excluded.payload,
                "created_at": statement.excluded.created_at,
            },
        )
    )
