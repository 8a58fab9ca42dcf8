"""Environment failures are one-line errors with exit code 1, not tracebacks."""

from __future__ import annotations

from pathlib import Path

from click.testing import CliRunner

from pipeline.cli import main

DOWN = {
    "DATABASE_URL": "postgresql://postgres@127.0.0.1:1/nowhere",
    "REDIS_URL": "redis://127.0.0.1:1/0",
}


def test_unreachable_postgres() -> None:
    result = CliRunner().invoke(main, ["status"], env=DOWN)
    assert result.exit_code == 1
    assert "Error: cannot reach Postgres (DATABASE_URL): connection failed" in result.output
    assert "Traceback" not in result.output


def test_unreachable_api(tmp_path: Path) -> None:
    document = tmp_path / "a.txt"
    document.write_text("hello")
    result = CliRunner().invoke(main, ["ingest", str(document), "--url", "http://127.0.0.1:1"])
    assert result.exit_code == 1
    assert "Error: cannot reach http://127.0.0.1:1/documents" in result.output


def test_bad_setting() -> None:
    result = CliRunner().invoke(main, ["status"], env={"PIPELINE_CHUNK_TIME_LIMIT_S": "soon"})
    assert result.exit_code == 1
    assert "Error: configuration: PIPELINE_CHUNK_TIME_LIMIT_S must be a number of seconds" in (
        result.output
    )
