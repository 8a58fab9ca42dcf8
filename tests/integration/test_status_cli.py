"""``pipeline status`` prints the per-stage table from Postgres and Redis."""

from __future__ import annotations

from typing import Any

from click.testing import CliRunner
from litestar.testing import TestClient

from pipeline.cli import main
from pipeline.settings import Settings
from tests.support.api import upload
from tests.support.documents import wait_for_document


def test_status_prints_a_row_per_stage(
    client: TestClient[Any], worker: Any, settings: Settings
) -> None:
    document_id = upload(client, b"Status check text. Two sentences here.", "status.txt")
    assert wait_for_document(client, document_id.json()["id"])["status"] == "succeeded"
    env = {
        "DATABASE_URL": settings.database.url,
        "REDIS_URL": settings.broker.url,
        "PIPELINE_REDIS_NAMESPACE": settings.broker.namespace,
    }
    result = CliRunner().invoke(main, ["status"], env=env)
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert lines[0].startswith("pipeline status at ")
    assert lines[1].split()[:4] == ["stage", "ready", "delayed", "dead"]
    assert [line.split()[0] for line in lines[2:8]] == [
        "validate",
        "extract",
        "ocr",
        "chunk",
        "embed",
        "index",
    ]
    index_row = lines[7].split()
    assert int(index_row[7]) >= 1  # ok/5m
    assert lines[8].startswith("documents: ")
    assert "succeeded" in lines[8]
