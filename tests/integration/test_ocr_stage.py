"""The ocr stage end to end: a scanned PDF and a PNG uploaded through the API come out
searchable; a PDF with a text layer goes through ocr with its text unchanged.

The session's in-process worker runs every stage (Tesseract in the sandbox, page by
page); each test works in a tenant of its own, so its searches see only its documents.
"""

from __future__ import annotations

import uuid
from typing import Any

from litestar.testing import TestClient
from sqlalchemy import Engine, text

from pipeline.processing.extract import extract
from tests.support.api import AsKey, make_key, upload
from tests.support.documents import ALL_SUCCEEDED, stage_statuses, wait_for_document
from tests.support.golden import FIXTURES

OCR_TIMEOUT_S = 120.0
"""A second or two per page, on a machine shared with other tests."""


def own_tenant(client: TestClient[Any], engine: Engine) -> AsKey:
    return AsKey(client, make_key(engine, tenant=f"ocr-{uuid.uuid4().hex[:8]}"))


def ingested(as_key: AsKey, path: str, content_type: str) -> dict[str, Any]:
    data = (FIXTURES / path).read_bytes()
    response = upload(as_key, data, path.rsplit("/", 1)[1], content_type)
    assert response.status_code == 202, response.text
    document = wait_for_document(as_key, response.json()["id"], timeout=OCR_TIMEOUT_S)
    assert stage_statuses(document) == ALL_SUCCEEDED, document
    return document


def lexical(as_key: AsKey, q: str) -> set[str]:
    response = as_key.get("/search", params={"q": q, "mode": "lexical"})
    assert response.status_code == 200, response.text
    return {hit["document_id"] for hit in response.json()["hits"]}


def stored_text(engine: Engine, document_id: str) -> str:
    with engine.connect() as conn:
        found: str = conn.execute(
            text("SELECT text FROM document_texts WHERE document_id = :id"), {"id": document_id}
        ).scalar_one()
    return found


def test_scans_and_images_become_searchable(
    client: TestClient[Any], engine: Engine, worker: Any
) -> None:
    as_key = own_tenant(client, engine)
    scan = ingested(as_key, "quality/pdf/scanned_letter.pdf", "application/pdf")
    image = ingested(as_key, "quality/image/receipt.png", "image/png")
    assert image["kind"] == "image"

    assert lexical(as_key, "slipway pontoon") == {scan["id"]}  # page 1 of the scan
    assert lexical(as_key, "contractors boatyard") == {scan["id"]}  # page 2
    assert lexical(as_key, "cinnamon sourdough") == {image["id"]}
    chunks = as_key.get(f"/documents/{scan['id']}/chunks").json()["chunks"]
    assert {chunk["page"] for chunk in chunks} == {1, 2}


def test_a_text_layer_passes_through_ocr_unchanged(
    client: TestClient[Any], engine: Engine, worker: Any
) -> None:
    as_key = own_tenant(client, engine)
    path = "extract/pdf_multipage.pdf"
    document = ingested(as_key, path, "application/pdf")
    (ocr,) = [stage for stage in document["stages"] if stage["stage"] == "ocr"]
    assert (ocr["status"], ocr["attempts"]) == ("succeeded", 1)
    expected = extract((FIXTURES / path).read_bytes(), "pdf", None).text
    assert stored_text(engine, document["id"]) == expected
