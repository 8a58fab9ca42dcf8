"""Embedding throughput and memory of all-MiniLM-L6-v2, per batch size and thread count.

    uv run python bench/embedding.py [--texts 256] [--batch-sizes 8,16,32] [--threads 1,2]
        [--corpus /work/shared/data/scifact/corpus.jsonl]

The texts are chunk-sized: the first 200 words of SciFact abstracts of at least 200
words (read from ``--corpus`` at run time; nothing of it is kept). Each configuration
runs in a process of its own, so its peak resident set size is its own: the model
loaded, one warm-up batch, then every text embedded in batches, as the embed stage
does. Prints chunks per second, the average word pieces per text (the model stops
at 256), the RSS once the model is loaded and the peak RSS.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time
from pathlib import Path

from pipeline.embedding import embed_batched, make_embedder
from pipeline.embedding.minilm import MiniLMEmbedder
from pipeline.settings import Settings

DEFAULT_CORPUS = Path("/work/shared/data/scifact/corpus.jsonl")
WORDS_PER_TEXT = 200


def load_texts(corpus: Path, count: int) -> list[str]:
    """The first ``count`` abstracts of at least 200 words, cut to 200 words."""
    texts: list[str] = []
    with corpus.open(encoding="utf-8") as lines:
        for line in lines:
            words = json.loads(line)["text"].split()
            if len(words) >= WORDS_PER_TEXT:
                texts.append(" ".join(words[:WORDS_PER_TEXT]))
                if len(texts) == count:
                    return texts
    raise SystemExit(f"{corpus} has only {len(texts)} abstracts of {WORDS_PER_TEXT}+ words")


def rss_mib() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def measure(corpus: Path, count: int, batch_size: int, threads: int) -> dict[str, float]:
    """One configuration, in this process: run by the parent as a child of its own."""
    texts = load_texts(corpus, count)
    embedder = make_embedder(
        Settings().replace(
            embedding={"embedder": "minilm", "threads": threads, "shared_batches": False}
        )
    )
    assert isinstance(embedder, MiniLMEmbedder)
    loaded = rss_mib()
    pieces = sum(embedder.encode(texts).word_pieces) / len(texts)
    embedder.embed(texts[:batch_size])  # warm-up: first-call allocations
    started = time.perf_counter()
    embedded = sum(len(batch) for batch in embed_batched(embedder, texts, batch_size))
    elapsed = time.perf_counter() - started
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux
    return {
        "batch": batch_size,
        "threads": threads,
        "chunks_per_s": embedded / elapsed,
        "pieces": pieces,
        "loaded_mib": loaded,
        "peak_mib": peak,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--texts", type=int, default=256)
    parser.add_argument("--batch-sizes", default="8,16,32")
    parser.add_argument("--threads", default="1,2")
    parser.add_argument("--corpus", type=Path, default=DEFAULT_CORPUS)
    parser.add_argument("--one", action="store_true", help=argparse.SUPPRESS)
    options = parser.parse_args()
    batch_sizes = [int(size) for size in options.batch_sizes.split(",")]
    thread_counts = [int(count) for count in options.threads.split(",")]
    if options.one:
        print(json.dumps(measure(options.corpus, options.texts, batch_sizes[0], thread_counts[0])))
        return
    print(f"{options.texts} texts of {WORDS_PER_TEXT} words from {options.corpus}")
    print("threads  batch  chunks/s  pieces/text  RSS loaded MiB  peak RSS MiB")
    for threads in thread_counts:
        for batch_size in batch_sizes:
            child = subprocess.run(
                [
                    sys.executable,
                    __file__,
                    "--one",
                    f"--texts={options.texts}",
                    f"--batch-sizes={batch_size}",
                    f"--threads={threads}",
                    f"--corpus={options.corpus}",
                ],
                capture_output=True,
                text=True,
                check=True,
            )
            row = json.loads(child.stdout)
            print(
                f"{row['threads']:>7}  {row['batch']:>5}  {row['chunks_per_s']:>8.1f}"
                f"  {row['pieces']:>11.0f}  {row['loaded_mib']:>14.0f}  {row['peak_mib']:>12.0f}"
            )


if __name__ == "__main__":
    main()
