"""Accepting an upload: one transaction, then one message.

The document, its bytes, its five stage rows and the first events are written in a
single transaction; the validate message is sent only after it commits. If that
send fails the upload is still accepted: the validate row waits as ``queued`` with a
deadline, and the reconciler sends it again.
"""

from __future__ import annotations

import hashlib
import logging
import uuid
from datetime import timedelta

import anyio.to_thread
import msgspec
from sqlalchemy import insert, select
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from pipeline.db.models import Document, DocumentBlob, StageEvent
from pipeline.faults import Faults
from pipeline.messages import StageMessage
from pipeline.services import stage_rows
from pipeline.services.dispatch import Dispatcher
from pipeline.settings import Settings
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


class _Existing(msgspec.Struct, frozen=True):
    id: uuid.UUID
    sha256: str
    status: str


class UploadService:
    def __init__(self, engine: AsyncEngine, dispatcher: Dispatcher, settings: Settings) -> None:
        self.engine = engine
        self.dispatcher = dispatcher
        self.grace = timedelta(milliseconds=settings.queued_grace_ms)
        self.faults = Faults(settings.faults)

    async def accept(self, upload: Upload) -> Accepted:
        sha256 = hashlib.sha256(upload.data).hexdigest()
        document_id = uuid.uuid4()
        first = StageMessage(document_id=document_id, stage=STAGES[0], generation=1)
        envelope = self.dispatcher.build(first)
        async with self.engine.begin() as conn:
            if not await _insert_document(conn, document_id, upload, sha256):
                existing = await _existing(conn, upload)
                if existing.sha256 != sha256:
                    raise IdempotencyConflict(existing.id)
                return Accepted(id=existing.id, status=existing.status, replayed=True)
            await conn.execute(
                insert(DocumentBlob).values(document_id=document_id, data=upload.data)
            )
            await conn.execute(stage_rows.create(document_id, envelope.message_id, self.grace))
            await conn.execute(
                insert(StageEvent).values(
                    document_id=document_id,
                    generation=1,
                    event="accepted",
                    detail={"size": len(upload.data), "sha256": sha256},
                )
            )
            await conn.execute(stage_rows.event(first, "queued", None, envelope.message_id, {}))
        if self.faults.drop_send("upload", upload.filename):
            return Accepted(id=document_id, status="pending", replayed=False)
        try:
            await anyio.to_thread.run_sync(self.dispatcher.send, envelope)
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
