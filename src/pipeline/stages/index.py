"""index: the chunks and their vectors as search reads them, swapped in one transaction."""

from __future__ import annotations

import array
from typing import Any

from pipeline.errors import PermanentError
from pipeline.stages.artifacts import (
    CHUNKS,
    SEARCHABLE,
    VECTORS,
    ChunkPlan,
    EmbeddingSet,
    IndexRow,
    SearchableChunks,
)
from pipeline.stages.spec import Inputs, Outputs, StagePolicy, StageSpec


def compute(inputs: Inputs) -> Outputs:
    return Outputs({SEARCHABLE: searchable(inputs[CHUNKS], inputs[VECTORS])})


def searchable(plan: ChunkPlan, embeddings: EmbeddingSet) -> SearchableChunks:
    drafts, vectors = plan.chunks, embeddings.vectors
    if len(drafts) != len(vectors):
        raise PermanentError(
            f"chunk and embedding counts differ ({len(drafts)} vs {len(vectors)}); "
            "re-run the document from the chunk stage"
        )
    return SearchableChunks(
        rows=[
            IndexRow(
                ordinal=draft.ordinal,
                text=draft.text,
                start_offset=draft.start,
                end_offset=draft.end,
                token_count=draft.token_count,
                page=draft.page,
                embedding=array.array("f", vector).tolist(),
                embedding_model=embeddings.model,
            )
            for draft, vector in zip(drafts, vectors, strict=True)
        ]
    )


def summarize(outputs: Outputs) -> dict[str, Any]:
    return {"chunks": len(outputs[SEARCHABLE].rows)}


SPEC = StageSpec(
    name="index",
    reads=(CHUNKS, VECTORS),
    writes=(SEARCHABLE,),
    policy=StagePolicy(time_limit_ms=60_000, claim_first=False),
    compute=compute,
    summarize=summarize,
    description="write chunks, their terms and embeddings for search; the document is done",
)
