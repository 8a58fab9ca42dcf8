"""The pure processing chain alone: what the five stages compute, without I/O.

    uv run python bench/processing.py [--iterations 500]

Runs validate → extract → chunk → embed → index's compute steps on the end-to-end
benchmark's 4 KiB text document, in one thread, and prints the time per document.
"""

from __future__ import annotations

import argparse
import time

from e2e import BODY

from pipeline.settings import Settings
from pipeline.stages.builtin import make_handlers
from pipeline.stages.chunk import ChunkInput
from pipeline.stages.extract import ExtractInput
from pipeline.stages.index import IndexInput


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--iterations", type=int, default=500)
    options = parser.parse_args()
    handlers = make_handlers(Settings(), sandbox=False)
    data = f"Document 1. {BODY}".encode()

    def chain() -> int:
        checked = handlers["validate"].compute(data)
        text = handlers["extract"].compute(ExtractInput(data, checked.kind, checked.encoding))
        plan = handlers["chunk"].compute(ChunkInput(text=text.text, pages=text.pages))
        vectors = handlers["embed"].compute(plan)
        return len(handlers["index"].compute(IndexInput(plan=plan, embeddings=vectors)))

    chunks = chain()
    started = time.perf_counter()
    for _ in range(options.iterations):
        chain()
    per_document = (time.perf_counter() - started) / options.iterations * 1000
    print(f"{per_document:.2f} ms per 4 KiB document ({chunks} chunks), one thread")


if __name__ == "__main__":
    main()
