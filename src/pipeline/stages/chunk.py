"""chunk: split the extracted text into overlapping, sentence-aware chunks."""

from __future__ import annotations

import bisect
from typing import Any, Final

from pipeline.errors import EmptyContent
from pipeline.processing.chunk import ChunkPolicy, chunk
from pipeline.processing.extract import Extracted, PageSpan
from pipeline.stages.artifacts import CHUNKS, TEXT, ChunkDraft, ChunkPlan
from pipeline.stages.spec import Compute, Inputs, Outputs, StageContext, StagePolicy, StageSpec

NO_TEXT_REASON: Final = (
    "no text to index: the document has no text layer (a scanned PDF or an image) and "
    "this pipeline has no ocr stage before chunk to read it; add the built-in ocr stage "
    "to the definition (pipeline.stages.builtin.OCR), or upload a searchable PDF"
)


def build(context: StageContext) -> Compute:
    policy = ChunkPolicy(
        target_tokens=context.settings.stages.chunk_target_tokens,
        overlap_tokens=context.settings.stages.chunk_overlap_tokens,
    )

    def compute(inputs: Inputs) -> Outputs:
        return Outputs({CHUNKS: plan_chunks(inputs[TEXT], policy)})

    return compute


def plan_chunks(text: Extracted, policy: ChunkPolicy) -> ChunkPlan:
    """The chunks of ``text``.

    Raises:
        EmptyContent: the text is empty, which only a scanned PDF or an image leaves
            when the definition runs no OCR stage before this one: indexing nothing
            would look like success.
    """
    if not text.text:
        raise EmptyContent(NO_TEXT_REASON)
    starts = [page.start for page in text.pages]
    drafts = [
        ChunkDraft(
            ordinal=piece.ordinal,
            start=piece.start,
            end=piece.end,
            text=piece.text,
            token_count=piece.token_count,
            page=page_at(text.pages, starts, piece.start),
        )
        for piece in chunk(text.text, policy)
    ]
    return ChunkPlan(chunks=drafts)


def page_at(pages: list[PageSpan], starts: list[int], offset: int) -> int | None:
    """The number of the page that holds character ``offset``, if pages are known."""
    if not pages:
        return None
    index = max(0, bisect.bisect_right(starts, offset) - 1)
    return pages[index].number


def summarize(outputs: Outputs) -> dict[str, Any]:
    return {"chunks": len(outputs[CHUNKS].chunks)}


SPEC = StageSpec(
    name="chunk",
    reads=(TEXT,),
    writes=(CHUNKS,),
    policy=StagePolicy(time_limit_ms=30_000, claim_first=False),
    build=build,
    summarize=summarize,
    description="overlapping, sentence-aware chunks with token counts",
)
