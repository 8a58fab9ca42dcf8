"""Log lines: JSON with the stage context for machines, readable text for people."""

from __future__ import annotations

import json
import logging
import sys

from pipeline.logs import (
    ContextFilter,
    JSONFormatter,
    TextFormatter,
    log_context,
    update_log_context,
)


def record(message: str, *, exc: bool = False) -> logging.LogRecord:
    exc_info = None
    if exc:
        try:
            raise ValueError("boom")
        except ValueError:
            exc_info = sys.exc_info()
    rec = logging.LogRecord("pipeline.test", logging.WARNING, __file__, 1, message, None, exc_info)
    ContextFilter().filter(rec)
    return rec


def test_json_lines_carry_the_stage_context() -> None:
    with log_context(stage="extract", message_id="m-1", document_id="d-1"):
        update_log_context(attempt=2)
        line = JSONFormatter().format(record("slow page"))
    entry = json.loads(line)
    assert entry["message"] == "slow page"
    assert entry["level"] == "warning"
    assert entry["logger"] == "pipeline.test"
    assert (entry["stage"], entry["message_id"], entry["document_id"], entry["attempt"]) == (
        "extract",
        "m-1",
        "d-1",
        2,
    )
    assert entry["ts"].endswith("+00:00")


def test_context_ends_with_its_block_and_exceptions_are_kept() -> None:
    with log_context(stage="chunk"):
        pass
    entry = json.loads(JSONFormatter().format(record("after", exc=True)))
    assert "stage" not in entry
    assert "ValueError: boom" in entry["exc"]


def test_text_lines_are_readable() -> None:
    with log_context(stage="embed", attempt=1):
        line = TextFormatter().format(record("hello"))
    assert "WARNING" in line
    assert line.endswith("hello [stage=embed attempt=1]")
