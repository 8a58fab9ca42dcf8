"""Extraction quality and speed per document type on the quality fixture set, beside MarkItDown.

    uv sync --group markitdown        # once: MarkItDown is an optional group
    uv run python bench/extraction.py [--repetitions 5] [--sandbox] [--no-markitdown]
                                      [--corpus DIR] [--worst N]

Every case under ``tests/fixtures/quality/<type>/`` (input + ``<case>.expected.txt``) is
read by the built-in stages in memory up to the text chunking reads (validate, extract
and whatever stage sits between extract and chunk), and by Microsoft's MarkItDown on
the same file. Each output is scored against the reference with
``bench/extraction_metrics.py`` (word recall and precision, micro averaged per type, the
scores ``tests/unit/test_extraction_quality.py`` checks), and each type's whole set is
timed ``--repetitions`` times: the median gives documents/s and MB/s (10^6 bytes of
input), one thread. ``--corpus DIR`` reads another set of the same layout instead, such
as the real-world one ``bench/found_corpus.py`` builds; ``--worst N`` lists each
extractor's N lowest-scoring cases per type. ``--sandbox`` runs the pipeline's
untrusted parsers in the sandbox child process as the workers do; by default they run
in this process (the parsers' own cost, as ``bench/processing.py`` measures it). A case
that raises scores as empty.
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from extraction_cases import QUALITY, cases, reference_of, types
from extraction_metrics import Overlap, micro, overlap

Extractor = Callable[[Path], str]


def pipeline_extractor(*, sandboxed: bool) -> Extractor:
    """The built-in stages up to the one before chunk: the text chunking would read."""
    # Imported here, not at the top: each sandbox child re-runs this script as
    # ``__mp_main__`` (see pipeline.engine.sandbox), and with these imports at the top
    # that costs ~300 ms a document, which the workers (``python -m dramatiq``) never pay.
    from pipeline.faults import Faults
    from pipeline.settings import Settings
    from pipeline.stages import StageContext
    from pipeline.stages.artifacts import TEXT, Upload
    from pipeline.stages.builtin import PIPELINE
    from pipeline.stages.in_memory import InMemoryPipeline
    from pipeline.wiring import make_sandbox

    settings = Settings().replace(embedding={"embedder": "hashing", "dimensions": 16})
    isolation = make_sandbox(settings) if sandboxed else None
    chain = InMemoryPipeline(
        PIPELINE, StageContext(settings=settings, faults=Faults(), isolation=isolation)
    )
    names = list(PIPELINE.names)
    last = names[names.index("chunk") - 1]

    def extract(case: Path) -> str:
        upload = Upload(data=case.read_bytes(), filename=case.name, declared_content_type=None)
        text: str = chain.run(upload, until=last)[TEXT.name].text
        return text

    return extract


def markitdown_extractor() -> Extractor | None:
    """MarkItDown's Markdown of a file (plugins off), or None when it is not installed."""
    try:
        from markitdown import MarkItDown
    except ImportError:
        return None
    converter = MarkItDown(enable_plugins=False)

    def extract(case: Path) -> str:
        text: str = converter.convert(str(case)).text_content
        return text

    return extract


def _output(extract: Extractor, case: Path) -> str:
    try:
        return extract(case)
    except Exception:  # a refusal or a crash scores as empty output
        return ""


@dataclass(frozen=True)
class Row:
    """One extractor's figures on one type: its score and the median time of the set."""

    score: Overlap
    documents: int
    size: int
    seconds: float

    def cells(self) -> list[str]:
        return [
            f"{self.score.recall:.3f}",
            f"{self.score.precision:.3f}",
            f"{self.documents / self.seconds:,.0f}",
            f"{self.size / self.seconds / 1e6:.2f}",
        ]


def measure(
    extract: Extractor, files: list[Path], repetitions: int, worst: int = 0
) -> tuple[Row, list[str]]:
    """The type's row, and its ``worst`` lowest-scoring cases as printable lines."""
    references = [reference_of(case).read_text("utf-8") for case in files]
    scores = [
        overlap(reference, _output(extract, case))
        for case, reference in zip(files, references, strict=True)
    ]
    score = micro(scores)
    ranked = sorted(zip(scores, files, strict=True), key=lambda pair: pair[0].f1)
    lows = [
        f"{case.name}: recall {one.recall:.3f} precision {one.precision:.3f}"
        for one, case in ranked[:worst]
    ]
    timings = []
    for _ in range(repetitions):
        started = time.perf_counter()
        for case in files:
            _output(extract, case)
        timings.append(time.perf_counter() - started)
    size = sum(case.stat().st_size for case in files)
    return Row(score, len(files), size, statistics.median(timings)), lows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repetitions", type=int, default=5)
    parser.add_argument("--sandbox", action="store_true", help="parsers in the sandbox child")
    parser.add_argument("--no-markitdown", action="store_true")
    parser.add_argument("--corpus", type=Path, default=QUALITY, help="a set of the same layout")
    parser.add_argument("--worst", type=int, default=0, help="list the N worst cases per type")
    options = parser.parse_args()
    extractors: dict[str, Extractor] = {"pipeline": pipeline_extractor(sandboxed=options.sandbox)}
    if not options.no_markitdown:
        other = markitdown_extractor()
        if other is None:
            print("MarkItDown is not installed (uv sync --group markitdown): pipeline only")
        else:
            extractors["MarkItDown"] = other
    header = ["type", "cases"]
    for name in extractors:
        header += [f"{name} recall", "precision", "docs/s", "MB/s"]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    worst: list[str] = []
    for kind in types(options.corpus):
        files = cases(kind, options.corpus)
        cells = [kind, str(len(files))]
        for name, extract in extractors.items():
            row, lows = measure(extract, files, options.repetitions, options.worst)
            cells += row.cells()
            worst += [f"{kind} / {name}: {low}" for low in lows]
        lines.append("| " + " | ".join(cells) + " |")
    print("\n".join(lines))
    if worst:
        print("\nworst cases:\n" + "\n".join(worst))


if __name__ == "__main__":
    main()
