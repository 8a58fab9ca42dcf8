"""A stage with nothing to do is skipped at the previous stage's completion.

OCR has nothing to do for a document with a text layer: extract's completion claims and
completes it in its own transaction, and sends chunk's message. Real worker processes,
each consuming some stages' queues, show that no message ever reaches OCR's queue for
such a document (no OCR consumer runs at all), while a scan waits there for one; that a
paused OCR stage is not skipped; and that a rerun from OCR runs it.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine, text

from pipeline.operations.common import Operator, RunContext
from pipeline.operations.requests import RerunRequest
from pipeline.settings import Settings
from pipeline.wiring import Wiring
from tests.support.processes import ProcessStack, stack_maker, wait_until

pytestmark = pytest.mark.slow

CLI = RunContext(operator=Operator(name="tests@here", via="cli"))
IMAGE = Path(__file__).parents[1] / "fixtures" / "quality" / "image" / "receipt.png"
NOT_OCR = ("validate", "extract", "chunk", "embed", "index")


class Stack(ProcessStack):
    def rows(self, document_id: str) -> dict[str, tuple[str, int]]:
        with self.engine.connect() as conn:
            found = conn.execute(
                text("SELECT stage, status, generation FROM stage_runs WHERE document_id = :id"),
                {"id": document_id},
            ).all()
        return {row.stage: (row.status, row.generation) for row in found}

    def ocr_events(self, document_id: str) -> list[tuple[str, int, dict[str, Any]]]:
        with self.engine.connect() as conn:
            found = conn.execute(
                text(
                    "SELECT event, generation, detail FROM stage_events "
                    "WHERE document_id = :id AND stage = 'ocr' ORDER BY id"
                ),
                {"id": document_id},
            ).all()
        return [(row.event, row.generation, row.detail) for row in found]


@pytest.fixture
def make_stack(settings: Settings, engine: Engine, tmp_path: Path, api_key: str) -> Iterator[Any]:
    with stack_maker(settings, engine, tmp_path, api_key, Stack) as make:
        yield make


def _stage_args(stages: tuple[str, ...]) -> list[str]:
    return [arg for stage in stages for arg in ("--stage", stage)]


def test_a_text_document_never_sends_ocr_a_message(make_stack: Any) -> None:
    stack: Stack = make_stack()
    stack.processes.worker(*_stage_args(NOT_OCR), name="no-ocr")
    text_id = stack.upload("skip-me.txt")
    scan_id = stack.upload("receipt.png", IMAGE.read_bytes())
    wait_until(lambda: stack.status(text_id) == "succeeded", 60, "the text document")
    # Nothing consumes OCR's queue, yet the text document went through it.
    rows = stack.rows(text_id)
    assert rows["ocr"] == ("succeeded", 1)
    events = stack.ocr_events(text_id)
    assert [event for event, _, _ in events] == ["queued", "claimed", "succeeded"]
    assert events[1][2]["skipped"] is True
    assert events[1][2]["fused"] is True
    assert events[2][2] == {"skipped": True, "duration_ms": 0}
    # The image has work for OCR: it waits there, queued, for a consumer.
    wait_until(lambda: stack.rows(scan_id)["ocr"][0] == "queued", 30, "the scan at ocr")
    assert stack.rows(scan_id)["chunk"][0] == "pending"
    stack.processes.worker("--stage", "ocr", name="ocr")
    wait_until(lambda: stack.status(scan_id) == "succeeded", 90, "the scan")
    scan_events = stack.ocr_events(scan_id)
    claimed = [detail for event, _, detail in scan_events if event == "claimed"]
    assert claimed
    assert all("skipped" not in detail for detail in claimed)


def test_a_paused_ocr_is_not_skipped_and_a_rerun_from_ocr_runs_it(
    make_stack: Any, controls: Any, engine: Engine
) -> None:
    stack: Stack = make_stack()
    stack.processes.worker()
    stack.processes.reconciler()  # re-sends the rows a resume finds waiting
    controls.pause("ocr", CLI, "tesseract upgrade")
    held = stack.upload("held.txt")
    wait_until(lambda: stack.rows(held)["ocr"][0] == "queued", 30, "the row waiting at ocr")
    assert stack.rows(held)["chunk"][0] == "pending"
    assert "claimed" not in [event for event, _, _ in stack.ocr_events(held)]
    # The skip was refused, so extract sent OCR its message, which the paused stage dropped.
    wait_until(
        lambda: "dropped" in [event for event, _, _ in stack.ocr_events(held)], 30, "the drop"
    )
    controls.resume("ocr", CLI)
    wait_until(lambda: stack.status(held) == "succeeded", 60, "the drain after resume")
    claimed = [detail for event, _, detail in stack.ocr_events(held) if event == "claimed"]
    assert len(claimed) == 1
    assert "skipped" not in claimed[0]  # it ran: the resumed message reached a worker

    # A rerun from OCR sends OCR its message: the stage runs (and passes the text through).
    rerun = RerunRequest(from_stage="ocr", ids=[uuid.UUID(held)])
    report = Wiring(stack.settings, engine=engine).rerun.rerun(rerun, CLI)  # its namespace
    assert report.items[0].action == "rerun"
    wait_until(lambda: stack.rows(held)["ocr"][1] == 2, 30, "the rerun's generation")
    wait_until(lambda: stack.status(held) == "succeeded", 60, "the rerun")
    second = [d for event, gen, d in stack.ocr_events(held) if event == "claimed" and gen == 2]
    assert len(second) == 1
    assert "skipped" not in second[0]
