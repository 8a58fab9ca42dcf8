"""The example custom stage on its fixtures (tests/fixtures/language): input → expected.

A stage of your own is tested like this: its compute function on fixture inputs, and
the whole definition in memory (no database, no broker) with ``InMemoryPipeline``.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from tests.support.acme.ingest import LANGUAGE, LANGUAGE_STAGE, PIPELINE, detect_language

from pipeline.errors import PermanentError
from pipeline.faults import Faults
from pipeline.processing.extract import Extracted
from pipeline.settings import Settings
from pipeline.stages import Inputs, StageContext
from pipeline.stages.artifacts import SEARCHABLE, Upload
from pipeline.stages.builtin import TEXT
from pipeline.stages.in_memory import InMemoryPipeline

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "language"
EXPECTED = {
    "english.txt": "en",
    "german.txt": "de",
    "french.txt": "fr",
    "spanish.txt": "es",
    "undetermined.txt": "und",
}


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_language_of_each_fixture(name: str) -> None:
    text = (FIXTURES / name).read_text()
    outputs = detect_language(Inputs({TEXT.name: Extracted(text=text)}))
    assert outputs[LANGUAGE].code == EXPECTED[name]
    assert LANGUAGE_STAGE.summarize(outputs)["language"] == EXPECTED[name]


def test_a_text_without_words_is_a_permanent_failure() -> None:
    text = (FIXTURES / "no-words.txt").read_text()
    with pytest.raises(PermanentError, match="no words"):
        detect_language(Inputs({TEXT.name: Extracted(text=text)}))


def test_the_whole_definition_in_memory() -> None:
    settings = Settings().replace(embedding={"embedder": "hashing", "dimensions": 16})
    chain = InMemoryPipeline(PIPELINE, StageContext(settings, Faults(), isolation=None))
    data = (FIXTURES / "german.txt").read_bytes()
    artifacts = chain.run(Upload(data=data, filename="german.txt", declared_content_type=None))
    assert artifacts[LANGUAGE.name].code == "de"
    assert [row.ordinal for row in artifacts[SEARCHABLE.name].rows] == [0]
    assert chain.run(Upload(data, "g.txt", None), until="language").keys() == {
        "upload",
        "validation",
        "text",
        "language",
    }
