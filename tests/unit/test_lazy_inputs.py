"""The engine's inputs are loaded when a stage reads them, and an artifact a stage gives
back unchanged is not stored again (OCR passing a text-layer document through)."""

from __future__ import annotations

import uuid
from typing import Any

from pipeline.engine.artifacts import Artifacts
from pipeline.processing.extract import Extracted
from pipeline.stages import Inputs, Outputs
from pipeline.stages.artifacts import TEXT, UPLOAD
from pipeline.stages.builtin import OCR, PIPELINE


class Recorder:
    def __init__(self, value: Any = None) -> None:
        self.value = value
        self.loads = 0
        self.stored: list[Any] = []

    def load(self, conn: Any, document_id: uuid.UUID) -> Any:
        self.loads += 1
        return self.value

    def store(self, conn: Any, document_id: uuid.UUID, generation: int, stage: str, value: Any):
        self.stored.append(value)


def test_an_input_is_loaded_only_when_read_and_once() -> None:
    calls: list[str] = []
    inputs = Inputs(loaders={"text": lambda: calls.append("text") or Extracted(text="x")})
    assert calls == []
    assert inputs[TEXT].text == "x"
    assert inputs[TEXT].text == "x"
    assert calls == ["text"]
    assert inputs.loaded("upload") is None
    assert sorted(inputs.names()) == ["text"]


def test_an_unchanged_revision_is_not_stored_again_and_a_new_one_is() -> None:
    artifacts = Artifacts(PIPELINE)
    text, upload = Recorder(Extracted(text="page one")), Recorder()
    artifacts.stores["text"], artifacts.stores["upload"] = text, upload
    inputs = artifacts.load(None, uuid.uuid4(), OCR)  # type: ignore[arg-type]
    same = inputs[TEXT]
    artifacts.store(None, uuid.uuid4(), 1, OCR, Outputs({TEXT: same}), inputs)  # type: ignore[arg-type]
    assert text.stored == []
    assert upload.loads == 0  # never read: never loaded
    revised = Extracted(text="page one\n\npage two")
    artifacts.store(None, uuid.uuid4(), 1, OCR, Outputs({TEXT: revised}), inputs)  # type: ignore[arg-type]
    assert text.stored == [revised]
    assert UPLOAD.name in inputs.names()
