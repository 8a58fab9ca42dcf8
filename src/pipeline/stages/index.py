"""index: swap the document's searchable chunks in one transaction."""

from __future__ import annotations

import array
import uuid
from typing import Any

import msgspec
from sqlalchemy import Connection, bindparam, delete, insert, select

from pipeline.db.models import Chunk, Document
from pipeline.engine.artifacts import load_output
from pipeline.errors import PermanentError
from pipeline.stages.outputs import (
    ChunkPlan,
    EmbeddingSet,
    decode_embeddings,
    decode_plan,
)

_DELETE_CHUNKS = delete(Chunk).where(Chunk.document_id == bindparam("document_id"))
_INSERT_CHUNKS = insert(Chunk).inline()  # inline: no RETURNING of the new ids, which nothing reads
_TENANT = select(Document.tenant).where(Document.id == bindparam("document_id"))


class IndexInput(msgspec.Struct, frozen=True):
    plan: ChunkPlan
    embeddings: EmbeddingSet


class IndexRow(msgspec.Struct, frozen=True):
    ordinal: int
    text: str
    start_offset: int
    end_offset: int
    token_count: int
    page: int | None
    embedding: list[float]
    embedding_model: str


class IndexHandler:
    def load(self, conn: Connection, document_id: uuid.UUID) -> IndexInput:
        return IndexInput(
            plan=decode_plan(load_output(conn, document_id, "chunk")),
            embeddings=decode_embeddings(load_output(conn, document_id, "embed")),
        )

    def compute(self, data: IndexInput) -> list[IndexRow]:
        drafts, vectors = data.plan.chunks, data.embeddings.vectors
        if len(drafts) != len(vectors):
            raise PermanentError(
                f"chunk and embedding counts differ ({len(drafts)} vs {len(vectors)}); "
                "re-run the document from the chunk stage"
            )
        return [
            IndexRow(
                ordinal=draft.ordinal,
                text=draft.text,
                start_offset=draft.start,
                end_offset=draft.end,
                token_count=draft.token_count,
                page=draft.page,
                embedding=array.array("f", vector).tolist(),
                embedding_model=data.embeddings.model,
            )
            for draft, vector in zip(drafts, vectors, strict=True)
        ]

    def summarize(self, result: list[IndexRow]) -> dict[str, Any]:
        return {"chunks": len(result)}

    def store(
        self, conn: Connection, document_id: uuid.UUID, generation: int, result: list[IndexRow]
    ) -> None:
        # The search triggers on ``chunks`` drop the old chunks' postings and totals and
        # add the new ones' in this same transaction.
        conn.execute(_DELETE_CHUNKS, {"document_id": document_id})
        if result:
            tenant = conn.execute(_TENANT, {"document_id": document_id}).scalar_one()
            conn.execute(
                _INSERT_CHUNKS,
                [
                    {"document_id": document_id, "tenant": tenant, **msgspec.structs.asdict(row)}
                    for row in result
                ],
            )
