"""Read models: what the API shows about documents, chunks and search results.

A deleted document (its tombstone, status ``deleted``) is no document to the API: every
read here selects live documents only (``LIVE``), so it answers ``404`` and is in no list.
"""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

import msgspec
from sqlalchemy import Row, select, tuple_
from sqlalchemy.ext.asyncio import AsyncEngine

from pipeline.db.models import Chunk, Document, StageRun
from pipeline.queries.cursors import CursorCodec
from pipeline.statuses import LIVE_DOCUMENT_STATUSES, DocumentStatus, StageStatus

LIVE = Document.status.in_(LIVE_DOCUMENT_STATUSES)
"""Documents that exist for their client: not the tombstones of deleted ones."""


class LastError(msgspec.Struct, frozen=True):
    """A stage row's last error, as the API shows it (named apart from the exception
    ``pipeline.errors.StageError``, which it only describes)."""

    type: str | None
    message: str | None
    transient: bool | None


class Progress(msgspec.Struct, frozen=True):
    current: int
    total: int


class StageView(msgspec.Struct, frozen=True):
    stage: str
    status: StageStatus
    attempts: int
    generation: int
    queued_at: datetime | None
    started_at: datetime | None
    finished_at: datetime | None
    duration_ms: int | None
    last_error: LastError | None
    progress: Progress | None


class DocumentLinks(msgspec.Struct, frozen=True):
    self: str
    chunks: str


class DocumentView(msgspec.Struct, frozen=True):
    id: uuid.UUID
    filename: str
    status: DocumentStatus
    failure_reason: str | None
    kind: str | None
    declared_content_type: str | None
    detected_content_type: str | None
    encoding: str | None
    """The text encoding validation detected (IANA label), for text-based kinds."""
    size_bytes: int
    sha256: str
    generation: int
    pipeline_version: str | None
    """The version of the pipeline definition that planned the document's stages."""
    created_at: datetime
    updated_at: datetime
    finished_at: datetime | None
    links: DocumentLinks
    stages: list[StageView] | None = None
    external_id: str | None = None
    """The client's own key for the document (``PUT /documents/by-key/{external_id}``)."""


class DocumentPage(msgspec.Struct, frozen=True):
    items: list[DocumentView]
    next_cursor: str | None


class ChunkView(msgspec.Struct, frozen=True):
    ordinal: int
    text: str
    start: int
    end: int
    token_count: int
    page: int | None
    embedding: list[float] | None = None


class ChunkList(msgspec.Struct, frozen=True):
    document_id: uuid.UUID
    count: int
    chunks: list[ChunkView]


def links(document_id: uuid.UUID) -> DocumentLinks:
    return DocumentLinks(
        self=f"/documents/{document_id}", chunks=f"/documents/{document_id}/chunks"
    )


_DOCUMENT_COLUMNS = (
    Document.id,
    Document.filename,
    Document.status,
    Document.failure_reason,
    Document.kind,
    Document.declared_content_type,
    Document.detected_content_type,
    Document.encoding,
    Document.size_bytes,
    Document.sha256,
    Document.generation,
    Document.pipeline_version,
    Document.created_at,
    Document.updated_at,
    Document.finished_at,
    Document.external_id,
)


def _document(row: Row[*tuple[Any, ...]], stages: list[StageView] | None) -> DocumentView:
    values = row._asdict()
    return DocumentView(**values, links=links(values["id"]), stages=stages)


def _stage(row: Row[*tuple[Any, ...]]) -> StageView:
    error = None
    if row.error_type is not None or row.error_message is not None:
        error = LastError(row.error_type, row.error_message, row.error_transient)
    progress = None
    if row.progress_total is not None:
        progress = Progress(row.progress_current or 0, row.progress_total)
    return StageView(
        stage=row.stage,
        status=row.stage_status,
        attempts=row.attempts,
        generation=row.stage_generation,
        queued_at=row.queued_at,
        started_at=row.started_at,
        finished_at=row.stage_finished_at,
        duration_ms=row.duration_ms,
        last_error=error,
        progress=progress,
    )


_STAGE_COLUMNS = (
    StageRun.stage,
    StageRun.status.label("stage_status"),
    StageRun.attempts,
    StageRun.generation.label("stage_generation"),
    StageRun.queued_at,
    StageRun.started_at,
    StageRun.finished_at.label("stage_finished_at"),
    StageRun.duration_ms,
    StageRun.error_type,
    StageRun.error_message,
    StageRun.error_transient,
    StageRun.progress_current,
    StageRun.progress_total,
)


async def get_document(
    engine: AsyncEngine, document_id: uuid.UUID, tenant: str = "default"
) -> DocumentView | None:
    """The document and its stage rows in one round trip (one row per stage)."""
    query = (
        select(*_DOCUMENT_COLUMNS, *_STAGE_COLUMNS)
        .outerjoin(StageRun, StageRun.document_id == Document.id)
        .where(Document.id == document_id, Document.tenant == tenant, LIVE)
        .order_by(StageRun.position)
    )
    async with engine.connect() as conn:
        await conn.execution_options(isolation_level="AUTOCOMMIT")  # one statement: no BEGIN
        rows = (await conn.execute(query)).all()
    if not rows:
        return None
    document = {column.key: getattr(rows[0], column.key) for column in _DOCUMENT_COLUMNS}
    stages = [_stage(row) for row in rows if row.stage is not None]
    return DocumentView(**document, links=links(document["id"]), stages=stages)


async def document_by_key(
    engine: AsyncEngine, external_id: str, tenant: str = "default"
) -> DocumentView | None:
    """The tenant's live document with this external id, with its stage rows."""
    async with engine.connect() as conn:
        await conn.execution_options(isolation_level="AUTOCOMMIT")
        found = (
            await conn.execute(
                select(Document.id).where(
                    Document.tenant == tenant, Document.external_id == external_id, LIVE
                )
            )
        ).scalar_one_or_none()
    if found is None:
        return None
    return await get_document(engine, found, tenant)


async def list_documents(
    engine: AsyncEngine,
    *,
    status: DocumentStatus | None,
    cursor: str | None,
    limit: int,
    cursors: CursorCodec,
    tenant: str = "default",
    filename: str | None = None,
    since: datetime | None = None,
    until: datetime | None = None,
) -> DocumentPage:
    """Newest first, keyset-paginated on (created_at, id) so pages stay fast at any depth.

    ``filename`` keeps names containing it (any case; the console's filter), ``since``
    and ``until`` bound ``created_at`` (at or after, before)."""
    query = select(*_DOCUMENT_COLUMNS).where(Document.tenant == tenant, LIVE)
    if status is not None:
        query = query.where(Document.status == status)
    if filename:
        query = query.where(Document.filename.icontains(filename, autoescape=True))
    if since is not None:
        query = query.where(Document.created_at >= since)
    if until is not None:
        query = query.where(Document.created_at < until)
    if cursor is not None:
        created_at, last_id = cursors.decode("documents", tenant, cursor)
        query = query.where(tuple_(Document.created_at, Document.id) < (created_at, last_id))
    query = query.order_by(Document.created_at.desc(), Document.id.desc()).limit(limit + 1)
    async with engine.connect() as conn:
        await conn.execution_options(isolation_level="AUTOCOMMIT")
        rows = (await conn.execute(query)).all()
    items = [_document(row, None) for row in rows[:limit]]
    next_cursor = None
    if len(rows) > limit:
        last = items[-1]
        next_cursor = cursors.encode("documents", tenant, last.created_at, last.id)
    return DocumentPage(items=items, next_cursor=next_cursor)


async def list_chunks(
    engine: AsyncEngine,
    document_id: uuid.UUID,
    *,
    with_embeddings: bool = False,
    tenant: str = "default",
    limit: int | None = None,
) -> ChunkList | None:
    """The document's chunks in order (the first ``limit`` of them, if given); ``count``
    is how many were returned."""
    async with engine.connect() as conn:
        exists = (
            await conn.execute(
                select(Document.id).where(
                    Document.id == document_id, Document.tenant == tenant, LIVE
                )
            )
        ).scalar_one_or_none()
        if exists is None:
            return None
        columns = [
            Chunk.ordinal,
            Chunk.text,
            Chunk.start_offset,
            Chunk.end_offset,
            Chunk.token_count,
            Chunk.page,
        ]
        if with_embeddings:
            columns.append(Chunk.embedding)
        rows = (
            await conn.execute(
                select(*columns)
                .where(Chunk.document_id == document_id)
                .order_by(Chunk.ordinal)
                .limit(limit)
            )
        ).all()
    chunks = [
        ChunkView(
            ordinal=row.ordinal,
            text=row.text,
            start=row.start_offset,
            end=row.end_offset,
            token_count=row.token_count,
            page=row.page,
            embedding=list(row.embedding) if with_embeddings else None,
        )
        for row in rows
    ]
    return ChunkList(document_id=document_id, count=len(chunks), chunks=chunks)
