"""Accepting an upload: one transaction, then one message.

The document, its bytes, its plan (one stage row per stage of the active definition,
in order) and the first events are written in a single transaction; the first stage's
message is sent only after it commits. If that send fails the upload is still
accepted: the first row waits as ``queued`` with a deadline, and the reconciler sends
it again. The document follows this plan to the end, whatever later changes to the
definition (a rerun can move it onto the current one).

**Replace by key.** An upload may name the client's own key for the document
(``external_id``, unique per tenant: :meth:`UploadService.put`). No document with it: a
new one, as above. The same bytes as the document's current ones: nothing happens. New
bytes: in one transaction, with the document locked first (the lock order of
``engine.transitions``), its bytes and upload metadata are replaced, it moves to a new
generation (so every message of the old run still in flight is stale, and an attempt of
it that completes loses its fence), every stage row goes back to ``pending`` and the
first is queued; a ``replaced`` event records the old and new checksums. The old text,
artifacts and chunks stay until the new run overwrites them: the index stage swaps the
chunks in one transaction, so search shows the old generation until that commit and the
new one after it, never both and never neither. Two uploads of one new key at once:
one creates, the other's insert meets the unique constraint and is retried as a replace.
"""

from __future__ import annotations

import hashlib
import logging
import uuid
from datetime import timedelta
from typing import Any, Literal

import anyio.to_thread
import dramatiq
import msgspec
from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from pipeline.db.models import Document, StageRun
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
    external_id: str | None = None
    """The client's own key for the document (see :meth:`UploadService.put`)."""


class Accepted(msgspec.Struct, frozen=True):
    id: uuid.UUID
    status: DocumentStatus
    replayed: bool
    """True when an earlier upload with the same idempotency key is returned."""


PutOutcome = Literal["created", "replaced", "unchanged"]
"""What an upload by external id did: a new document, new bytes for one, or nothing."""


class Put(msgspec.Struct, frozen=True):
    id: uuid.UUID
    outcome: PutOutcome
    status: DocumentStatus
    generation: int


PUT_TRIES = 3
"""A create that loses the race for a new key becomes a replace: the retry finds the
winner's document (a third try only if that one was deleted in between)."""


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
        """A new document (an upload naming an ``external_id`` already used raises
        ``IntegrityError``: :meth:`put` handles that)."""
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
            "external_id": upload.external_id,
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

    async def put(self, upload: Upload, *, by: str) -> Put:
        """The upload as the document with ``upload.external_id``: created, replaced by
        new bytes (a new generation) or, for the same bytes, left alone. ``by`` names the
        client in the ``replaced`` event."""
        assert upload.external_id is not None
        for attempt in range(1, PUT_TRIES + 1):
            replaced = await self._replace(upload, by)
            if replaced is not None:
                return replaced
            try:
                accepted = await self.accept(upload)
            except IntegrityError as error:
                if "uq_documents_tenant_external_id" not in str(error) or attempt == PUT_TRIES:
                    raise
                continue  # another upload created the key meanwhile: replace its document
            return Put(accepted.id, "created", accepted.status, 1)
        raise AssertionError("unreachable")  # pragma: no cover

    async def _replace(self, upload: Upload, by: str) -> Put | None:
        """Replace the bytes of the document with this key (``None``: there is none)."""
        sha256 = hashlib.sha256(upload.data).hexdigest()
        async with self.engine.begin() as conn:
            # Step 1 of the lock order: the document; two replaces of one key queue here.
            found = (
                await conn.execute(
                    select(Document.id, Document.sha256, Document.status, Document.generation)
                    .where(
                        Document.tenant == upload.tenant,
                        Document.external_id == upload.external_id,
                    )
                    .with_for_update(key_share=True)
                )
            ).first()
            if found is None:
                return None
            if found.sha256 == sha256:
                return Put(found.id, "unchanged", found.status, found.generation)
            plan = list(
                (
                    await conn.execute(
                        select(StageRun.stage)
                        .where(StageRun.document_id == found.id)
                        .order_by(StageRun.position)
                    )
                ).scalars()
            )
            generation = found.generation + 1
            first = StageMessage(found.id, plan[0], generation)
            envelope = self.dispatcher.build(first)
            await conn.execute(
                transitions.replace_upload(
                    found.id,
                    generation=generation,
                    filename=upload.filename,
                    declared_type=upload.declared_type,
                    size=len(upload.data),
                    sha256=sha256,
                )
            )
            await conn.execute(transitions.replace_blob(found.id, upload.data))
            await conn.execute(transitions.reset_after(found.id, -1, generation))
            await conn.execute(transitions.queue(first, envelope.message_id, self.grace))
            settled = (await conn.execute(transitions.letters_superseded(found.id))).scalars()
            detail = {
                "by": by,
                "previous_sha256": found.sha256,
                "sha256": sha256,
                "previous_generation": found.generation,
                "size": len(upload.data),
                "discarded_dead_letters": [str(letter) for letter in settled],
            }
            await conn.execute(
                transitions.document_event(
                    found.id, generation, "replaced", detail, message_id=envelope.message_id
                )
            )
            await conn.execute(transitions.event(first, "queued", None, envelope.message_id, {}))
        if not self.faults.drop_send("upload", upload.filename):
            await self._send(found.id, envelope)
        return Put(found.id, "replaced", "pending", generation)

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
