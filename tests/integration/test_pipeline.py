"""Every supported type travels the whole pipeline and becomes searchable."""

from __future__ import annotations

import mimetypes
import re
from pathlib import Path
from typing import Any

import pytest
from litestar.testing import TestClient
from sqlalchemy import Engine, text

from tests.support.api import upload
from tests.support.documents import ALL_SUCCEEDED, stage_statuses, wait_for_document
from tests.support.faults import Fault, FaultPlan

FIXTURES = Path(__file__).parent.parent / "fixtures" / "extract"
CASES = sorted(
    next(
        path
        for path in FIXTURES.glob(expected.name.removesuffix(".expected.txt") + ".*")
        if ".expected." not in path.name
    )
    for expected in FIXTURES.glob("*.expected.txt")
    if expected.read_text(encoding="utf-8").strip()  # not pdf_no_text: nothing to search
)
WORD = re.compile(r"[^\W\d_]{5,}")


def distinctive_word(path: Path) -> str:
    expected = path.with_name(path.stem + ".expected.txt").read_text(encoding="utf-8")
    return max(WORD.findall(expected), key=lambda word: (len(word), word))


def test_every_supported_kind_has_a_case() -> None:
    suffixes = {path.suffix for path in CASES}
    assert {".pdf", ".docx", ".html", ".md", ".txt"} <= suffixes


@pytest.mark.parametrize("path", CASES, ids=lambda path: path.name)
def test_document_reaches_succeeded_and_is_searchable(
    client: TestClient[Any], engine: Engine, worker: Any, path: Path
) -> None:
    declared = mimetypes.guess_type(path.name)[0] or "application/octet-stream"
    response = upload(client, path.read_bytes(), path.name, declared)
    assert response.status_code == 202, response.text
    document = wait_for_document(client, response.json()["id"])
    assert document["status"] == "succeeded", document
    assert stage_statuses(document) == ALL_SUCCEEDED
    assert all(stage["attempts"] == 1 for stage in document["stages"])
    assert all(stage["duration_ms"] is not None for stage in document["stages"])

    chunks = client.get(f"/documents/{document['id']}/chunks").json()
    assert chunks["count"] == len(chunks["chunks"]) > 0
    assert [chunk["ordinal"] for chunk in chunks["chunks"]] == list(range(chunks["count"]))
    assert all(chunk["token_count"] > 0 for chunk in chunks["chunks"])

    word = distinctive_word(path)
    hits = client.get("/search", params={"q": word, "limit": 100}).json()["hits"]
    assert document["id"] in {hit["document_id"] for hit in hits}, (word, hits)

    with engine.connect() as conn:
        spaces = conn.execute(
            text(
                "SELECT DISTINCT embedding_model, array_length(embedding, 1) FROM chunks"
                " WHERE document_id = :id"
            ),
            {"id": document["id"]},
        ).all()
    # The model group is installed by default, so ``auto`` embeds with the model.
    assert [tuple(row) for row in spaces] == [("all-MiniLM-L6-v2", 384)]


def test_pdf_chunks_carry_page_numbers(client: TestClient[Any], worker: Any) -> None:
    path = FIXTURES / "pdf_multipage.pdf"
    response = upload(client, path.read_bytes(), "pages.pdf", "application/pdf")
    document = wait_for_document(client, response.json()["id"])
    assert document["status"] == "succeeded"
    chunks = client.get(f"/documents/{document['id']}/chunks").json()["chunks"]
    assert chunks[0]["page"] == 1
    assert all(chunk["page"] in (1, 2, 3) for chunk in chunks)


def test_search_ranks_and_snippets(client: TestClient[Any], worker: Any) -> None:
    strong = b"Quokka quokka quokka. The quokka is a small marsupial.\n\nQuokkas smile."
    weak = b"Many animals live on the island, among them one quokka.\n\nAnd lizards."
    ids = [
        upload(client, body, name).json()["id"]
        for body, name in ((strong, "strong.txt"), (weak, "weak.txt"))
    ]
    for document_id in ids:
        assert wait_for_document(client, document_id)["status"] == "succeeded"
    hits = client.get("/search", params={"q": "quokka"}).json()["hits"]
    assert [hit["document_id"] for hit in hits[:2]] == ids
    assert hits[0]["score"] > hits[1]["score"]
    assert "**" in hits[0]["snippet"]
    assert hits[0]["filename"] == "strong.txt"


def test_embed_reports_progress_on_its_stage_row(
    client: TestClient[Any], worker: Any, faults: FaultPlan
) -> None:
    faults.add("embed", "long.txt", Fault("sleep", times=1, seconds=0.7))  # a slow embed
    paragraphs = [
        f"Paragraph {i} talks about harbour seals, tides and the northern coast. " * 6
        for i in range(60)
    ]
    body = "\n\n".join(paragraphs).encode()
    document = wait_for_document(client, upload(client, body, "long.txt").json()["id"])
    assert document["status"] == "succeeded"
    count = client.get(f"/documents/{document['id']}/chunks").json()["count"]
    embed = next(stage for stage in document["stages"] if stage["stage"] == "embed")
    assert count > 10
    assert embed["progress"] == {"current": count, "total": count}
