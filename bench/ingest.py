"""Ingestion benchmark: uploads/s and latency of POST /documents, beside its floor.

    uv run python bench/ingest.py [--runs 3] [--seconds 10] [--connections 64]
                                  [--servers uvicorn[,granian]]

Runs, alternately and in the same way, (a) the real API (`pipeline api`) and (b) the
floor (`bench/floor_app.py`: same ASGI server and Litestar, one handler doing only the
raw SQL inserts and one Redis push), each with 2 server workers, loaded by `wrk` (4 KiB
raw-body uploads). Prints the median of each and the ratio.

`--servers uvicorn,granian` measures both under each ASGI server (`pipeline api
--server X`; the floor under `uvicorn` or `granian` with the same workers and backlog),
all in the same run, alternating (the order is reversed on every other run, so a drift
of the machine weighs on both sides alike); it prints each median, pipeline / floor per
server, every pipeline-on-X / floor-on-Y, each side on each server against the first,
the CPU time per upload of each side's processes (`bench/cpu.py`: less disturbed than
uploads/s by whatever else runs on the machine), and the load average before and after.

Needs `wrk` (`apt-get install wrk`), and Postgres and Redis (DATABASE_URL / REDIS_URL,
default local).
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
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
from cpu import per_document_ms, sample
from sqlalchemy.engine import make_url

from pipeline.http.servers import BACKLOG, SERVERS

KINDS = ("pipeline", "floor")
WORKERS = 2
Result = tuple[float, float, float]


def command(kind: str, server: str, port: int) -> list[str]:
    """The process that serves ``kind`` on ``server`` with 2 workers."""
    if kind == "pipeline":
        return [
            *(PYTHON, "-m", "pipeline", "--log-level", "WARNING", "api"),
            *("--port", str(port), "--workers", str(WORKERS), "--server", server),
        ]
    if server == "granian":
        return [
            *(PYTHON, "-m", "granian", "--interface", "asgi", "floor_app:app"),
            *("--port", str(port), "--workers", str(WORKERS), "--backlog", str(BACKLOG)),
            *("--log-level", "warning", "--no-access-log"),
        ]
    return [
        *(PYTHON, "-m", "uvicorn", "floor_app:app"),
        *("--port", str(port), "--workers", str(WORKERS), "--backlog", str(BACKLOG)),
        *("--log-level", "warning", "--no-access-log"),
    ]


def measure(
    kind: str, server: str, database_url: str, seconds: int, connections: int, logs: Path
) -> tuple[Result, dict[str, float]]:
    """wrk's rate, p50 and p99, and the CPU ms per upload of the server's processes, the
    database's backends and Redis during the measured part (not the warm-up)."""
    port = free_port()
    namespace = f"bench-{uuid.uuid4().hex[:6]}"
    env = bench_env(database_url, namespace)
    log = logs / f"{kind}-{server}-{port}.log"
    database = str(make_url(database_url).database)
    with process(command(kind, server, port), env, log) as proc:
        wait_http(f"http://127.0.0.1:{port}/health")
        if kind == "pipeline":  # both workers up, not only the first (a slow start here)
            wait_log(log, ": started (pools open)", WORKERS)
        script = ["-s", str(ROOT / "bench" / "post.lua"), f"http://127.0.0.1:{port}"]
        wrk(script, connections=connections, seconds=2)  # warm-up
        first = sample(proc.pid, database)
        result = wrk(script, connections=connections, seconds=seconds)
        used = sample(proc.pid, database) - first
    clear_namespace(namespace)
    return result, per_document_ms(used, max(1, round(result[0] * seconds)))


def wait_log(log: Path, needle: str, count: int, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while log.read_text(errors="replace").count(needle) < count:
        if time.monotonic() > deadline:
            raise TimeoutError(f"{count} x {needle!r} in {log}")
        time.sleep(0.1)


def summarise(runs: list[Result]) -> Result:
    rate, p50, p99 = (median([r[i] for r in runs]) for i in range(3))
    return rate, p50, p99


def load_average() -> str:
    return " ".join(f"{value:.2f}" for value in os.getloadavg())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--seconds", type=int, default=10)
    parser.add_argument("--connections", type=int, default=64)
    parser.add_argument(
        "--servers",
        default="uvicorn",
        help=f"comma-separated ASGI servers to measure both sides on ({', '.join(SERVERS)})",
    )
    options = parser.parse_args()
    servers = [name.strip() for name in options.servers.split(",") if name.strip()]
    unknown = sorted(set(servers) - set(SERVERS))
    if unknown or not servers:
        parser.error(f"--servers: each must be one of {', '.join(SERVERS)}, not {unknown}")
    logs = Path(tempfile.mkdtemp(prefix="bench-ingest-"))
    results: dict[tuple[str, str], list[Result]] = {
        (server, kind): [] for server in servers for kind in KINDS
    }
    cpu: dict[tuple[str, str], list[dict[str, float]]] = {key: [] for key in results}
    order = list(results)
    before = load_average()
    with scratch_database("ingest") as database_url:
        for run in range(options.runs):
            # One server: pipeline then floor, as always; several: reversed every other run.
            for server, kind in order if len(servers) == 1 or run % 2 == 0 else order[::-1]:
                result, used = measure(
                    kind, server, database_url, options.seconds, options.connections, logs
                )
                results[server, kind].append(result)
                cpu[server, kind].append(used)
                if len(servers) == 1:
                    print(kind, result, flush=True)
                else:
                    parts = ", ".join(f"{part} {ms:.2f}" for part, ms in used.items())
                    print(f"{server} {kind} {result}; CPU ms/upload: {parts}", flush=True)
    summary = {key: summarise(runs) for key, runs in results.items()}
    footnote = (
        f"median of {options.runs} runs, {options.seconds} s each, "
        f"{options.connections} connections"
    )
    if len(servers) == 1:
        (server,) = servers
        print("\n| | uploads/s | p50 ms | p99 ms |\n|---|---|---|---|")
        for kind in KINDS:
            rate, p50, p99 = summary[server, kind]
            print(f"| {kind} | {rate:.0f} | {p50:.1f} | {p99:.1f} |")
        ratio = summary[server, "pipeline"][0] / summary[server, "floor"][0]
        print(f"\npipeline / floor = {ratio:.2f} ({footnote})")
        return
    print("\n| server | | uploads/s | p50 ms | p99 ms |\n|---|---|---|---|---|")
    for server, kind in order:
        rate, p50, p99 = summary[server, kind]
        print(f"| {server} | {kind} | {rate:.0f} | {p50:.1f} | {p99:.1f} |")
    print(f"\npipeline / floor, same server ({footnote}):")
    for server in servers:
        ratios = [
            p[0] / f[0]
            for p, f in zip(results[server, "pipeline"], results[server, "floor"], strict=True)
        ]
        each = ", ".join(f"{r:.2f}" for r in ratios)
        medians = summary[server, "pipeline"][0] / summary[server, "floor"][0]
        print(f"  {server}: {medians:.2f} (runs: {each})")
    print("\npipeline on X / floor on Y (medians):")
    print("| pipeline on \\ floor on | " + " | ".join(servers) + " |")
    print("|---|" + "---|" * len(servers))
    for x in servers:
        cells = [f"{summary[x, 'pipeline'][0] / summary[y, 'floor'][0]:.2f}" for y in servers]
        print(f"| {x} | " + " | ".join(cells) + " |")
    first = servers[0]
    for other in servers[1:]:
        print(f"\n{other} / {first}, same side (uploads/s; per run, measured side by side):")
        for kind in KINDS:
            pairs = zip(results[other, kind], results[first, kind], strict=True)
            each = ", ".join(f"{o[0] / f[0]:.2f}" for o, f in pairs)
            medians = summary[other, kind][0] / summary[first, kind][0]
            print(f"  {kind}: {medians:.2f} (runs: {each})")
    print(
        "\nCPU ms per upload (medians; the server's processes, the database's Postgres "
        "backends, Redis: shared, an upper bound):"
    )
    print("| server | | server processes | Postgres | Redis |\n|---|---|---|---|---|")
    for server, kind in order:
        parts = [median([run[part] for run in cpu[server, kind]]) for part in cpu[server, kind][0]]
        print(f"| {server} | {kind} | " + " | ".join(f"{ms:.2f}" for ms in parts) + " |")
    print(f"\nload average (1, 5, 15 min): before {before}, after {load_average()}")


if __name__ == "__main__":
    main()
