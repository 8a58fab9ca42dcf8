"""Making dead letters through the API: documents that fail, and the letters they leave."""

from __future__ import annotations

import time
import uuid
from typing import Any

from litestar.testing import TestClient

from .api import upload
from .documents import wait_for_document

GIF = b"GIF89a" + bytes(100)
"""A GIF header and nothing else: an image format no stage reads, refused at validate."""


def unique(name: str) -> str:
    return f"{name}-{uuid.uuid4().hex[:8]}"


def letters_of(client: TestClient[Any], document_id: str) -> list[dict[str, Any]]:
    response = client.get("/dead-letters", params={"document_id": document_id})
    assert response.status_code == 200, response.text
    items: list[dict[str, Any]] = response.json()["items"]
    return items


def dead_document(
    client: TestClient[Any], data: bytes, filename: str, content_type: str
) -> tuple[str, str]:
    """Upload a document that dies; answer (document id, dead-letter id)."""
    document_id = upload(client, data, filename, content_type).json()["id"]
    document = wait_for_document(client, document_id)
    assert document["status"] == "failed", document
    deadline = time.monotonic() + 10
    while not (letters := letters_of(client, document_id)):
        assert time.monotonic() < deadline, f"no dead letter for {document_id}"
        time.sleep(0.05)
    (letter,) = letters
    return document_id, letter["id"]


def dead_gif(client: TestClient[Any], name: str = "image.dat") -> tuple[str, str]:
    return dead_document(client, GIF, unique(name), "application/octet-stream")
