"""Ingestion benchmark: uploads/s and latency of POST /documents, beside its floor.

    uv run python bench/ingest.py [--runs 3] [--seconds 10] [--connections 64]

Runs, alternately and in the same way, (a) the real API (`pipeline api`) and (b) the
floor (`bench/floor_app.py`: same uvicorn and Litestar, one handler doing only the raw
SQL inserts and one Redis push), each with 2 uvicorn workers, loaded by `wrk` (4 KiB
raw-body uploads). Prints the median of each and the ratio. Needs `wrk`
(`apt-get install wrk`), and Postgres and Redis (DATABASE_URL / REDIS_URL, default local).
"""

from __future__ import annotations

import argparse
import tempfile
import uuid
from pathlib import Path

from common import (
    PYTHON,
    ROOT,
    bench_env,
    clear_namespace,
    free_port,
    median,
    process,
    scratch_database,
    wait_http,
    wrk,
)


def measure(
    kind: str, database_url: str, seconds: int, connections: int, logs: Path
) -> tuple[float, float, float]:
    port = free_port()
    namespace = f"bench-{uuid.uuid4().hex[:6]}"
    env = bench_env(database_url, namespace)
    if kind == "pipeline":
        args = [
            PYTHON,
            "-m",
            "pipeline",
            "--log-level",
            "WARNING",
            "api",
            "--port",
            str(port),
            "--workers",
            "2",
        ]
    else:
        args = [
            PYTHON,
            "-m",
            "uvicorn",
            "floor_app:app",
            "--port",
            str(port),
            "--workers",
            "2",
            "--log-level",
            "warning",
            "--no-access-log",
        ]
    with process(args, env, logs / f"{kind}.log"):
        wait_http(f"http://127.0.0.1:{port}/health")
        script = ["-s", str(ROOT / "bench" / "post.lua"), f"http://127.0.0.1:{port}"]
        wrk(script, connections=connections, seconds=2)  # warm-up
        result = wrk(script, connections=connections, seconds=seconds)
    clear_namespace(namespace)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--seconds", type=int, default=10)
    parser.add_argument("--connections", type=int, default=64)
    options = parser.parse_args()
    logs = Path(tempfile.mkdtemp(prefix="bench-ingest-"))
    results: dict[str, list[tuple[float, float, float]]] = {"pipeline": [], "floor": []}
    with scratch_database("ingest") as database_url:
        for _ in range(options.runs):
            for kind in ("pipeline", "floor"):
                results[kind].append(
                    measure(kind, database_url, options.seconds, options.connections, logs)
                )
                print(kind, results[kind][-1], flush=True)
    summary = {
        kind: tuple(median([r[i] for r in runs]) for i in range(3))
        for kind, runs in results.items()
    }
    ratio = summary["pipeline"][0] / summary["floor"][0]
    print("\n| | uploads/s | p50 ms | p99 ms |\n|---|---|---|---|")
    for kind in ("pipeline", "floor"):
        rate, p50, p99 = summary[kind]
        print(f"| {kind} | {rate:.0f} | {p50:.1f} | {p99:.1f} |")
    print(
        f"\npipeline / floor = {ratio:.2f} (median of {options.runs} runs, "
        f"{options.seconds} s each, {options.connections} connections)"
    )


if __name__ == "__main__":
    main()
