"""embed: one vector per chunk, computed in batches."""

from __future__ import annotations

import array
from typing import Any

from pipeline.embedding import make_embedder
from pipeline.embedding.base import Embedder, embed_batched
from pipeline.progress import report_progress
from pipeline.stages.artifacts import CHUNKS, VECTORS, ChunkPlan, EmbeddingSet
from pipeline.stages.spec import Compute, Inputs, Outputs, StageContext, StagePolicy, StageSpec


def build(context: StageContext) -> Compute:
    embedder = make_embedder(context.settings)
    batch_size = context.settings.embedding.batch_size

    def compute(inputs: Inputs) -> Outputs:
        return Outputs({VECTORS: embed_chunks(inputs[CHUNKS], embedder, batch_size)})

    return compute


def embed_chunks(plan: ChunkPlan, embedder: Embedder, batch_size: int) -> EmbeddingSet:
    texts = [draft.text for draft in plan.chunks]
    vectors: list[bytes] = []
    for batch in embed_batched(embedder, texts, batch_size):
        vectors.extend(array.array("f", vector).tobytes() for vector in batch)
        report_progress(len(vectors), len(texts))
    return EmbeddingSet(model=embedder.name, dimensions=embedder.dimensions, vectors=vectors)


def summarize(outputs: Outputs) -> dict[str, Any]:
    result = outputs[VECTORS]
    return {"vectors": len(result.vectors), "model": result.model}


SPEC = StageSpec(
    name="embed",
    reads=(CHUNKS,),
    writes=(VECTORS,),
    # The model embeds ~25-35 chunks/s per worker thread on a CPU core (bench/embedding.py).
    # The largest text extract lets through (10M characters) chunks into ~12,200 chunks
    # of 200 tokens, ~400 s at 30/s; 900 s still fits it at half that rate (worker
    # threads sharing the cores). The cost of a long limit: an attempt whose worker
    # died is re-sent only after limit + slack (see Settings.running_slack_ms).
    policy=StagePolicy(time_limit_ms=900_000),
    build=build,
    summarize=summarize,
    description="a vector per chunk from the sentence model (or the hashing embedder)",
)
