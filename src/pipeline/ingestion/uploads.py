"""Accepting an upload: one transaction, then one message.

The document, its bytes, its plan (one stage row per stage of the active definition,
in order) and the first events are written in a single transaction; the first stage's
message is sent only after it commits. If that send fails the upload is still
accepted: the first row waits as ``queued`` with a deadline, and the reconciler sends
it again. The document follows this plan to the end, whatever later changes to the
definition (a rerun can move it onto the current one).
"""

from __future__ import annotations

import hashlib
import logging
import uuid
from datetime import timedelta
from typing import Any

import anyio.to_thread
import dramatiq
import msgspec
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from pipeline.db.models import Document
from pipeline.engine import transitions
from pipeline.engine.dispatch import AsyncSender, Dispatcher
from pipeline.errors import PipelineError
from pipeline.faults import Faults
from pipeline.messages import StageMessage
from pipeline.settings import Settings
from pipeline.stages import Pipeline
from pipeline.statuses import DocumentStatus

logger = logging.getLogger(__name__)


class Upload(msgspec.Struct, frozen=True):
    filename: str
    declared_type: str | None
    data: bytes
    idempotency_key: str | None = None
    tenant: str = "default"


class Accepted(msgspec.Struct, frozen=True):
    id: uuid.UUID
    status: DocumentStatus
    replayed: bool
    """True when an earlier upload with the same idempotency key is returned."""


class IdempotencyConflict(PipelineError):
    """The idempotency key was used before for different bytes."""

    def __init__(self, document_id: uuid.UUID) -> None:
        super().__init__(f"idempotency key already used for document {document_id}")
        self.document_id = document_id


class _Existing(msgspec.Struct, frozen=True):
    id: uuid.UUID
    sha256: str
    status: DocumentStatus


class UploadService:
    def __init__(
        self,
        engine: AsyncEngine,
        dispatcher: Dispatcher,
        settings: Settings,
        definition: Pipeline,
        faults: Faults,
        sender: AsyncSender | None = None,
    ) -> None:
        self.engine = engine
        self.dispatcher = dispatcher
        self.sender = sender
        self.grace = timedelta(milliseconds=settings.stages.queued_grace_ms)
        self.faults = faults
        self.plan = list(definition.names)
        self.version = definition.version

    async def accept(self, upload: Upload) -> Accepted:
        sha256 = hashlib.sha256(upload.data).hexdigest()
        document_id = uuid.uuid4()
        first = StageMessage(document_id=document_id, stage=self.plan[0], generation=1)
        envelope = self.dispatcher.build(first)
        params = {
            "id": document_id,
            "tenant": upload.tenant,
            "filename": upload.filename,
            "declared": upload.declared_type,
            "size": len(upload.data),
            "sha256": sha256,
            "key": upload.idempotency_key,
            "data": upload.data,
            "grace": self.grace,
            "message_id": envelope.message_id,
            "stages": self.plan,
            "first_stage": self.plan[0],
            "version": self.version,
            "accepted": _JSON.encode({"size": len(upload.data), "sha256": sha256}).decode(),
        }
        async with self.engine.begin() as conn:
            created = (await conn.exec_driver_sql(transitions.ACCEPT_SQL, params)).first()
            if created is None:
                existing = await _existing(conn, upload)
                if existing.sha256 != sha256:
                    raise IdempotencyConflict(existing.id)
                return Accepted(id=existing.id, status=existing.status, replayed=True)
        if not self.faults.drop_send("upload", upload.filename):
            await self._send(document_id, envelope)
        return Accepted(id=document_id, status="pending", replayed=False)

    async def _send(self, document_id: uuid.UUID, envelope: dramatiq.Message[Any]) -> None:
        try:
            if self.sender is not None:
                await self.sender.send(envelope)
            else:
                await anyio.to_thread.run_sync(self.dispatcher.send, envelope)
        except Exception:
            logger.exception("accepted %s but could not send its first message", document_id)


_JSON = msgspec.json.Encoder()


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
