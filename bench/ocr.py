"""OCR speed: pages per second of the ocr stage on the OCR fixtures, one thread.

    uv run python bench/ocr.py [--runs 3]

Runs validate → extract → ocr in memory on each scanned PDF and image under
tests/fixtures/quality/ (tests/fixtures/builders/ocr.py makes them), as the workers run
them (each page in the sandbox), and prints the median seconds per document, the pages
read and the pages per second, with the word recall and precision of the text.
"""

from __future__ import annotations

import argparse
import re
import time
import unicodedata
from collections import Counter
from pathlib import Path

from pipeline.faults import Faults
from pipeline.processing.ocr import pages_to_render
from pipeline.settings import Settings
from pipeline.stages import StageContext
from pipeline.stages.artifacts import TEXT, Upload
from pipeline.stages.builtin import PIPELINE
from pipeline.stages.in_memory import InMemoryPipeline
from pipeline.wiring import make_sandbox

QUALITY = Path(__file__).resolve().parents[1] / "tests" / "fixtures" / "quality"


def words(text: str) -> Counter[str]:
    return Counter(re.findall(r"\w+", unicodedata.normalize("NFKC", text).lower()))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3)
    options = parser.parse_args()
    settings = Settings()
    context = StageContext(settings=settings, faults=Faults(), isolation=make_sandbox(settings))
    chain = InMemoryPipeline(PIPELINE, context)
    cases = sorted(QUALITY.glob("pdf/scanned_*.pdf")) + sorted(
        path for path in QUALITY.glob("image/*") if not path.name.endswith(".expected.txt")
    )
    print("| fixture | pages read | s per document | pages/s | recall | precision |")
    print("|---|---|---|---|---|---|")
    total_pages, total_seconds = 0, 0.0
    for path in cases:
        upload = Upload(data=path.read_bytes(), filename=path.name, declared_content_type=None)
        extracted = chain.run(upload, until="extract")[TEXT.name]
        pages = len(pages_to_render(extracted)) or len(
            chain.run(upload, until="ocr")[TEXT.name].pages
        )
        timings = []
        for _ in range(options.runs):
            started = time.perf_counter()
            text = chain.run(upload, until="ocr")[TEXT.name].text
            timings.append(time.perf_counter() - started)
        seconds = sorted(timings)[len(timings) // 2]
        expected = words(path.with_name(path.name.rsplit(".", 1)[0] + ".expected.txt").read_text())
        found = words(text)
        common = sum((expected & found).values())
        recall, precision = common / sum(expected.values()), common / max(1, sum(found.values()))
        total_pages, total_seconds = total_pages + pages, total_seconds + seconds
        print(
            f"| {path.name} | {pages} | {seconds:.2f} | {pages / seconds:.2f} | "
            f"{recall:.3f} | {precision:.3f} |"
        )
    print(f"| all | {total_pages} | | {total_pages / total_seconds:.2f} | | |")


if __name__ == "__main__":
    main()
