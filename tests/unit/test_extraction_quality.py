"""Extraction quality on the fixture set: word recall and precision per document type.

Every case under ``tests/fixtures/quality/<type>/`` goes through the built-in stages in
memory up to the text that chunking reads (so any stage between extract and chunk, OCR
for one, is covered), with the sandbox the workers use, and is scored against its
``<case>.expected.txt`` by ``bench/extraction_metrics.py``. A type fails when its micro
averaged recall or precision is under its bar; a case whose stage raises counts as an
empty output. The benchmark (``bench/extraction.py``) reports the same scores with
speeds, and MarkItDown's beside them.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Final

import pytest
from tests.support.bench_modules import load_bench

from pipeline.faults import Faults
from pipeline.settings import Settings
from pipeline.stages import StageContext
from pipeline.stages.artifacts import TEXT, Upload
from pipeline.stages.builtin import PIPELINE
from pipeline.stages.in_memory import InMemoryPipeline
from pipeline.wiring import make_sandbox

metrics = load_bench("extraction_metrics.py")
quality = load_bench("extraction_cases.py")

BARS: Final[dict[str, float]] = {
    "pdf": 0.95,
    "docx": 0.95,
    "html": 0.95,
    "markdown": 0.95,
    "text": 0.95,
    "image": 0.95,
}
#: Imperfect cases listed in a failure message, worst first.
WORST_SHOWN: Final = 5

SETTINGS = Settings().replace(embedding={"embedder": "hashing", "dimensions": 16})


@pytest.fixture(scope="module")
def chain() -> InMemoryPipeline:
    context = StageContext(settings=SETTINGS, faults=Faults(), isolation=make_sandbox(SETTINGS))
    return InMemoryPipeline(PIPELINE, context)


def extracted(chain: InMemoryPipeline, case: Path) -> tuple[str, str | None]:
    """The text chunking would read, or ``""`` and the reason a stage refused the case."""
    upload = Upload(data=case.read_bytes(), filename=case.name, declared_content_type=None)
    try:
        return chain.run(upload, until="chunk")[TEXT.name].text, None
    except Exception as exc:  # a refusal or a crash: scored as empty output
        return "", f"{type(exc).__name__}: {exc}"


def test_every_folder_is_a_type_with_a_bar() -> None:
    folders = {path.name for path in quality.QUALITY.iterdir() if path.is_dir()}
    assert folders <= set(quality.TYPES)
    assert set(BARS) == set(quality.TYPES)


def test_every_case_has_a_reference_and_every_reference_a_case() -> None:
    for kind in quality.types():
        inputs = quality.cases(kind)
        references = sorted((quality.QUALITY / kind).glob("*.expected.txt"))
        assert sorted(quality.reference_of(case) for case in inputs) == references, kind


@pytest.mark.parametrize("kind", quality.types())
def test_extraction_quality(chain: InMemoryPipeline, kind: str) -> None:
    scored: list[tuple[Any, str, str | None]] = []
    for case in quality.cases(kind):
        text, error = extracted(chain, case)
        reference = quality.reference_of(case).read_text("utf-8")
        scored.append((metrics.overlap(reference, text), case.name, error))
    total = metrics.micro(result for result, _, _ in scored)
    bar = BARS[kind]
    imperfect = [item for item in scored if item[0].f1 < 1.0]
    worst = sorted(imperfect, key=lambda item: item[0].f1)[:WORST_SHOWN]
    report = "\n".join(
        f"  {name}: recall {result.recall:.3f}, precision {result.precision:.3f}"
        + (f" ({error})" if error else "")
        for result, name, error in worst
    )
    assert min(total.recall, total.precision) >= bar, (
        f"{kind}: recall {total.recall:.3f}, precision {total.precision:.3f} over "
        f"{len(scored)} cases, bar {bar}; worst cases:\n{report}"
    )
