"""chunk: split the extracted text into overlapping, sentence-aware chunks."""

from __future__ import annotations

import bisect
import uuid
from typing import Any

import msgspec
from sqlalchemy import Connection, bindparam, select

from pipeline.db.models import DocumentText
from pipeline.engine.artifacts import MissingInput, replace_output
from pipeline.processing.chunk import ChunkPolicy, chunk
from pipeline.processing.extract import PageSpan
from pipeline.stages.outputs import ChunkDraft, ChunkPlan, encode

_TEXT = select(DocumentText.text, DocumentText.pages).where(
    DocumentText.document_id == bindparam("document_id")
)


class ChunkInput(msgspec.Struct, frozen=True):
    text: str
    pages: list[PageSpan]


class ChunkHandler:
    def __init__(self, policy: ChunkPolicy) -> None:
        self.policy = policy

    def load(self, conn: Connection, document_id: uuid.UUID) -> ChunkInput:
        row = conn.execute(_TEXT, {"document_id": document_id}).one_or_none()
        if row is None:
            raise MissingInput("the extracted text of this document is missing")
        return ChunkInput(text=row.text, pages=msgspec.convert(row.pages, list[PageSpan]))

    def compute(self, data: ChunkInput) -> ChunkPlan:
        starts = [page.start for page in data.pages]
        drafts = [
            ChunkDraft(
                ordinal=piece.ordinal,
                start=piece.start,
                end=piece.end,
                text=piece.text,
                token_count=piece.token_count,
                page=page_at(data.pages, starts, piece.start),
            )
            for piece in chunk(data.text, self.policy)
        ]
        return ChunkPlan(chunks=drafts)

    def summarize(self, result: ChunkPlan) -> dict[str, Any]:
        return {"chunks": len(result.chunks)}

    def store(
        self, conn: Connection, document_id: uuid.UUID, generation: int, result: ChunkPlan
    ) -> None:
        replace_output(conn, document_id, "chunk", generation, encode(result))


def page_at(pages: list[PageSpan], starts: list[int], offset: int) -> int | None:
    """The number of the page that holds character ``offset``, if pages are known."""
    if not pages:
        return None
    index = max(0, bisect.bisect_right(starts, offset) - 1)
    return pages[index].number
