"""Worker memory over a long run: resident set size of each worker process, sampled.

    uv run python bench/memory.py [--documents 100000] [--batch 2000]

Loads documents in batches (so Redis and Postgres never hold the whole run at once),
runs `pipeline worker` (2 processes x 4 threads) throughout, and samples the RSS of
its worker processes after each batch. Flat after warm-up means no leak per document.
"""

from __future__ import annotations

import argparse
import tempfile
import time
import uuid
from pathlib import Path

from common import (
    bench_env,
    clear_namespace,
    dramatiq_args,
    process,
    scratch_database,
)
from e2e import forget, load_documents, succeeded

from pipeline.settings import Settings


def rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def children(pid: int) -> list[int]:
    found: list[int] = []
    for task in Path(f"/proc/{pid}/task").glob("*"):
        found.extend(int(c) for c in (task / "children").read_text().split())
    return found


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--documents", type=int, default=100_000)
    parser.add_argument("--batch", type=int, default=2000)
    options = parser.parse_args()
    namespace = f"bench-mem-{uuid.uuid4().hex[:6]}"
    logs = Path(tempfile.mkdtemp(prefix="bench-memory-"))
    with scratch_database("memory") as database_url:
        env = bench_env(database_url, namespace, pool_size=6)
        settings = Settings.from_env(env)
        args = dramatiq_args("pipeline.actors.worker", 2, 4)
        with process(args, env, logs / "worker.log") as main_process:
            time.sleep(3)
            workers = [
                pid
                for pid in children(main_process.pid)
                if "dramatiq" in Path(f"/proc/{pid}/cmdline").read_text(errors="ignore")
            ]
            print(
                "| documents done | "
                + " | ".join(f"worker {i} RSS MiB" for i in range(len(workers)))
                + " |"
            )
            print("|---|" + "---|" * len(workers))
            done = 0
            started = time.monotonic()
            while done < options.documents:
                load_documents(settings, options.batch)
                done += options.batch
                while succeeded(database_url) < done:
                    time.sleep(0.2)
                sizes = " | ".join(f"{rss_mib(pid):.1f}" for pid in workers)
                print(f"| {done} | {sizes} |", flush=True)
            elapsed = time.monotonic() - started
            forget(database_url)
    clear_namespace(namespace)
    print(f"\n{options.documents} documents in {elapsed:.0f} s")


if __name__ == "__main__":
    main()
