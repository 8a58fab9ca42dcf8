"""Following a document through the pipeline: waiting for it, its stages and its events."""

from __future__ import annotations

import time
import uuid
from typing import Any

from litestar.testing import TestClient
from sqlalchemy import Engine, text

from pipeline.stages.builtin import PIPELINE

from .api import AsKey

ALL_SUCCEEDED = dict.fromkeys(PIPELINE.names, "succeeded")


def wait_for_document(
    client: TestClient[Any] | AsKey, document_id: str, timeout: float = 60.0
) -> dict[str, Any]:
    """Poll the API until the document is succeeded or failed."""
    deadline = time.monotonic() + timeout
    while True:
        document: dict[str, Any] = client.get(f"/documents/{document_id}").json()
        if document["status"] in ("succeeded", "failed"):
            return document
        if time.monotonic() > deadline:
            raise AssertionError(f"document still {document['status']}: {document}")
        time.sleep(0.05)


def stage_statuses(document: dict[str, Any]) -> dict[str, str]:
    return {stage["stage"]: stage["status"] for stage in document["stages"]}


def events(engine: Engine, document_id: str | uuid.UUID) -> list[dict[str, Any]]:
    with engine.connect() as conn:
        rows = conn.execute(
            text(
                "SELECT stage, event, attempt, detail FROM stage_events "
                "WHERE document_id = :id ORDER BY id"
            ),
            {"id": str(document_id)},
        ).mappings()
        return [dict(row) for row in rows]
