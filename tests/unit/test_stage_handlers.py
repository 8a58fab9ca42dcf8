"""The built-in stages' compute steps chained without a database, on fixtures.

This is the index stage's fixture test: a document goes through validate,
extract, chunk, embed and index exactly as the workers compute them, and the rows
index would write are compared with ``tests/fixtures/index/<case>.expected.json``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from tests.support.golden import case_files, check_json, expected_path

from pipeline.faults import Faults
from pipeline.processing.extract import PageSpan
from pipeline.settings import Settings
from pipeline.stages import StageContext
from pipeline.stages.artifacts import SEARCHABLE, Upload
from pipeline.stages.builtin import PIPELINE
from pipeline.stages.chunk import page_at
from pipeline.stages.in_memory import InMemoryPipeline
from pipeline.wiring import make_sandbox

SETTINGS = Settings().replace(
    embedding={"embedder": "hashing", "dimensions": 16},
    stages={"chunk_target_tokens": 24, "chunk_overlap_tokens": 6},
)


CHAIN = InMemoryPipeline(
    PIPELINE, StageContext(settings=SETTINGS, faults=Faults(), isolation=make_sandbox(SETTINGS))
)


def run_chain(data: bytes) -> list[dict[str, Any]]:
    upload = Upload(data=data, filename="fixture", declared_content_type=None)
    rows = CHAIN.run(upload)[SEARCHABLE.name].rows
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
