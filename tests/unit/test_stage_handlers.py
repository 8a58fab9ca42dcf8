"""The stage handlers' compute steps chained without a database, on fixtures.

This is the index stage's fixture test: a document goes through validate,
extract, chunk, embed and index exactly as the workers compute them, and the rows
index would write are compared with ``tests/fixtures/index/<case>.expected.json``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from processing_golden import case_files, check_json, expected_path

from pipeline.processing.extract import PageSpan
from pipeline.settings import Settings
from pipeline.stages.builtin import make_handlers
from pipeline.stages.chunk import ChunkInput, page_at
from pipeline.stages.extract import ExtractInput
from pipeline.stages.index import IndexInput

SETTINGS = Settings().replace(
    embedding={"embedder": "hashing", "dimensions": 16},
    stages={"chunk_target_tokens": 24, "chunk_overlap_tokens": 6},
)


def run_chain(data: bytes) -> list[dict[str, Any]]:
    handlers = make_handlers(SETTINGS)
    validation = handlers["validate"].compute(data)
    extracted = handlers["extract"].compute(
        ExtractInput(data=data, kind=validation.kind, encoding=validation.encoding)
    )
    plan = handlers["chunk"].compute(ChunkInput(text=extracted.text, pages=extracted.pages))
    embeddings = handlers["embed"].compute(plan)
    rows = handlers["index"].compute(IndexInput(plan=plan, embeddings=embeddings))
    return [
        {
            "ordinal": row.ordinal,
            "start": row.start_offset,
            "end": row.end_offset,
            "page": row.page,
            "token_count": row.token_count,
            "text": row.text,
            "embedding_head": [round(value, 6) for value in row.embedding[:4]],
            "embedding_model": row.embedding_model,
        }
        for row in rows
    ]


@pytest.mark.parametrize("case", case_files("index"), ids=lambda path: path.name)
def test_index_rows_for_fixture(case: Path) -> None:
    check_json(expected_path(case, ".json"), run_chain(case.read_bytes()))


def test_index_rows_are_consistent() -> None:
    rows = run_chain(
        (Path(__file__).parent.parent / "fixtures/index/pdf_multipage.pdf").read_bytes()
    )
    assert [row["ordinal"] for row in rows] == list(range(len(rows)))
    assert all(row["embedding_model"] == "hashing-v1-16" for row in rows)
    assert [row["page"] for row in rows] == sorted(row["page"] for row in rows)


def test_page_at_maps_offsets_to_pages() -> None:
    pages = [PageSpan(1, 0, 10), PageSpan(2, 12, 20), PageSpan(3, 20, 20), PageSpan(4, 22, 30)]
    starts = [page.start for page in pages]
    assert [page_at(pages, starts, offset) for offset in (0, 9, 11, 12, 19, 22, 29)] == [
        1,
        1,
        1,
        2,
        2,
        4,
        4,
    ]
    assert page_at([], [], 5) is None
