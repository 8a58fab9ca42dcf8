"""Accepting an upload: one transaction, then one message.

The document, its bytes, its five stage rows and the first event are written in a
single transaction; the validate message is sent only after it commits. If that send
fails the upload is still accepted: the validate row waits as ``queued`` with a
deadline, and the reconciler sends it again.
"""

from __future__ import annotations

import hashlib
import logging
import uuid

import anyio.to_thread
import msgspec
from sqlalchemy import func, insert, select
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from pipeline.db.models import Document, DocumentBlob, StageEvent, StageRun
from pipeline.messages import StageMessage
from pipeline.services.dispatch import Dispatcher
from pipeline.services.executor import QUEUED_GRACE
from pipeline.stages import STAGES

logger = logging.getLogger(__name__)


class Upload(msgspec.Struct, frozen=True):
    filename: str
    declared_type: str | None
    data: bytes
    idempotency_key: str | None = None
    tenant: str = "default"


class Accepted(msgspec.Struct, frozen=True):
    id: uuid.UUID
    status: str
    replayed: bool
    """True when an earlier upload with the same idempotency key is returned."""


class IdempotencyConflict(Exception):
    """The idempotency key was used before for different bytes."""

    def __init__(self, document_id: uuid.UUID) -> None:
        super().__init__(f"idempotency key already used for document {document_id}")
        self.document_id = document_id


async def accept_upload(engine: AsyncEngine, dispatcher: Dispatcher, upload: Upload) -> Accepted:
    sha256 = hashlib.sha256(upload.data).hexdigest()
    document_id = uuid.uuid4()
    first = StageMessage(document_id=document_id, stage=STAGES[0], generation=1)
    message = dispatcher.build(first)
    async with engine.begin() as conn:
        inserted = await _insert_document(conn, document_id, upload, sha256)
        if not inserted:
            existing = await _existing(conn, upload)
            if existing.sha256 != sha256:
                raise IdempotencyConflict(existing.id)
            return Accepted(id=existing.id, status=existing.status, replayed=True)
        await conn.execute(insert(DocumentBlob).values(document_id=document_id, data=upload.data))
        await conn.execute(
            insert(StageRun).values(
                [
                    _stage_row(document_id, position, message.message_id)
                    for position in range(len(STAGES))
                ]
            )
        )
        await conn.execute(
            insert(StageEvent).values(
                [
                    _event(
                        document_id,
                        None,
                        "accepted",
                        None,
                        {"size": len(upload.data), "sha256": sha256},
                    ),
                    _event(document_id, STAGES[0], "queued", message.message_id, {}),
                ]
            )
        )
    try:
        await anyio.to_thread.run_sync(dispatcher.send, message)
    except Exception:
        logger.exception("accepted %s but could not send its validate message", document_id)
    return Accepted(id=document_id, status="pending", replayed=False)


async def _insert_document(
    conn: AsyncConnection, document_id: uuid.UUID, upload: Upload, sha256: str
) -> bool:
    statement = (
        pg_insert(Document)
        .values(
            id=document_id,
            tenant=upload.tenant,
            filename=upload.filename,
            declared_content_type=upload.declared_type,
            size_bytes=len(upload.data),
            sha256=sha256,
            idempotency_key=upload.idempotency_key,
        )
        .on_conflict_do_nothing(constraint="uq_documents_tenant_idempotency_key")
        .returning(Document.id)
    )
    return (await conn.execute(statement)).scalar_one_or_none() is not None


class _Existing(msgspec.Struct, frozen=True):
    id: uuid.UUID
    sha256: str
    status: str


async def _existing(conn: AsyncConnection, upload: Upload) -> _Existing:
    row = (
        await conn.execute(
            select(Document.id, Document.sha256, Document.status).where(
                Document.tenant == upload.tenant,
                Document.idempotency_key == upload.idempotency_key,
            )
        )
    ).one()
    return _Existing(id=row.id, sha256=row.sha256, status=row.status)


def _stage_row(document_id: uuid.UUID, position: int, message_id: str) -> dict[str, object]:
    first = position == 0
    return {
        "document_id": document_id,
        "stage": STAGES[position],
        "position": position,
        "status": "queued" if first else "pending",
        "generation": 1,
        "queued_at": func.now() if first else None,
        "deadline_at": func.now() + QUEUED_GRACE if first else None,
        "message_id": message_id if first else None,
    }


def _event(
    document_id: uuid.UUID,
    stage: str | None,
    event: str,
    message_id: str | None,
    detail: dict[str, object],
) -> dict[str, object]:
    return {
        "document_id": document_id,
        "stage": stage,
        "generation": 1,
        "event": event,
        "message_id": message_id,
        "detail": detail,
    }
