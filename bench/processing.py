"""The pure processing chain alone: what the five stages compute, without I/O.

    uv run python bench/processing.py [--iterations 500]

Runs validate → extract → chunk → embed → index's compute steps on the end-to-end
benchmark's 4 KiB text document, in one thread, and prints the time per document.
"""

from __future__ import annotations

import argparse
import time

from e2e import BODY

from pipeline.faults import Faults
from pipeline.settings import Settings
from pipeline.stages import StageContext
from pipeline.stages.artifacts import SEARCHABLE, Upload
from pipeline.stages.builtin import PIPELINE
from pipeline.stages.in_memory import InMemoryPipeline


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--iterations", type=int, default=500)
    options = parser.parse_args()
    chain_of = InMemoryPipeline(
        PIPELINE, StageContext(settings=Settings(), faults=Faults(), isolation=None)
    )
    upload = Upload(
        data=f"Document 1. {BODY}".encode(), filename="bench.txt", declared_content_type=None
    )

    def chain() -> int:
        return len(chain_of.run(upload)[SEARCHABLE.name].rows)

    chunks = chain()
    started = time.perf_counter()
    for _ in range(options.iterations):
        chain()
    per_document = (time.perf_counter() - started) / options.iterations * 1000
    print(f"{per_document:.2f} ms per 4 KiB document ({chunks} chunks), one thread")


if __name__ == "__main__":
    main()
