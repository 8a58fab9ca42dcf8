"""embed: one vector per chunk, computed in batches."""

from __future__ import annotations

import array
import uuid
from typing import Any

from sqlalchemy import Connection

from pipeline.embedding.base import Embedder, embed_batched
from pipeline.engine.artifacts import load_output, replace_output
from pipeline.progress import report_progress
from pipeline.stages.outputs import ChunkPlan, EmbeddingSet, decode_plan, encode


class EmbedHandler:
    def __init__(self, embedder: Embedder, batch_size: int) -> None:
        self.embedder = embedder
        self.batch_size = batch_size

    def load(self, conn: Connection, document_id: uuid.UUID) -> ChunkPlan:
        return decode_plan(load_output(conn, document_id, "chunk"))

    def compute(self, data: ChunkPlan) -> EmbeddingSet:
        texts = [draft.text for draft in data.chunks]
        vectors: list[bytes] = []
        for batch in embed_batched(self.embedder, texts, self.batch_size):
            vectors.extend(array.array("f", vector).tobytes() for vector in batch)
            report_progress(len(vectors), len(texts))
        return EmbeddingSet(
            model=self.embedder.name, dimensions=self.embedder.dimensions, vectors=vectors
        )

    def summarize(self, result: EmbeddingSet) -> dict[str, Any]:
        return {"vectors": len(result.vectors), "model": result.model}

    def store(
        self, conn: Connection, document_id: uuid.UUID, generation: int, result: EmbeddingSet
    ) -> None:
        replace_output(conn, document_id, "embed", generation, encode(result))
