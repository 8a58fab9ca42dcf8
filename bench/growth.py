"""Growth benchmark: does the pipeline slow down as its tables fill up?

    uv run python bench/growth.py lookups [--documents 1000000]
    uv run python bench/growth.py throughput [--small 1000] [--large 100000] [--batch 1000]

``lookups`` fills a database with N succeeded documents (each with its five stage rows),
then loads `GET /documents/{id}` (random ids) and `GET /documents?status=failed` with
`wrk` against `pipeline api --workers 2` and reports p50/p99 latency.

``throughput`` measures end-to-end documents/s (the real stages, as in `bench/e2e.py`)
for a batch loaded into a database that already holds SMALL, then LARGE, documents.
"""

from __future__ import annotations

import argparse
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
    process,
    scratch_database,
    wait_http,
    wrk,
)
from e2e import run_stages
from sqlalchemy import create_engine, text

from pipeline.settings import to_sqlalchemy_url

FILL_SQL = [
    """
    INSERT INTO documents (id, filename, declared_content_type, detected_content_type, kind,
                           size_bytes, sha256, status, created_at, updated_at, finished_at)
    SELECT gen_random_uuid(), 'filler-' || i || '.txt', 'text/plain', 'text/plain', 'text',
           4096, md5(i::text) || md5(i::text), 'succeeded',
           now() - (i || ' seconds')::interval, now(), now()
    FROM generate_series(1, :count) AS i
    """,
    """
    INSERT INTO stage_runs (document_id, stage, position, status, generation, attempts,
                            queued_at, started_at, finished_at, duration_ms, updated_at)
    SELECT d.id, s.stage, s.position - 1, 'succeeded', 1, 1, d.created_at, d.created_at,
           d.created_at, 3, d.created_at
    FROM documents d
    CROSS JOIN unnest(ARRAY['validate', 'extract', 'ocr', 'chunk', 'embed', 'index'])
         WITH ORDINALITY AS s(stage, position)
    WHERE d.filename LIKE 'filler-%'
    """,
    "ANALYZE",
]


def fill(database_url: str, count: int) -> float:
    started = time.monotonic()
    engine = create_engine(to_sqlalchemy_url(database_url))
    with engine.begin() as conn:
        conn.execute(text(FILL_SQL[0]), {"count": count})
        conn.execute(text(FILL_SQL[1]))
    with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
        conn.execute(text(FILL_SQL[2]))
    engine.dispose()
    return time.monotonic() - started


def wrk_latency(args: list[str], connections: int = 16) -> tuple[float, float, float]:
    return wrk(args, connections=connections, seconds=10)


def lookups(count: int) -> None:
    logs = Path(tempfile.mkdtemp(prefix="bench-growth-"))
    with scratch_database("lookups") as database_url:
        print(f"filled {count} documents in {fill(database_url, count):.0f} s", flush=True)
        engine = create_engine(to_sqlalchemy_url(database_url))
        with engine.connect() as conn:
            ids = (
                conn.execute(text("SELECT id FROM documents TABLESAMPLE SYSTEM (1) LIMIT 10000"))
                .scalars()
                .all()
            )
        engine.dispose()
        id_file = logs / "ids.txt"
        id_file.write_text("\n".join(str(i) for i in ids) + "\n")
        port = free_port()
        namespace = f"bench-{uuid.uuid4().hex[:6]}"
        env = bench_env(database_url, namespace)
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
        base = f"http://127.0.0.1:{port}"
        with process(args, env, logs / "api.log"):
            wait_http(f"{base}/health")
            script = str(ROOT / "bench" / "get_random.lua")
            wrk_latency(["-s", script, base, "--", str(id_file)])  # warm-up
            one = wrk_latency(["-s", script, base, "--", str(id_file)])
            one_light = wrk_latency(["-s", script, base, "--", str(id_file)], connections=2)
            listing = wrk_latency([f"{base}/documents?status=failed&limit=50"])
            listing_ok = wrk_latency([f"{base}/documents?status=succeeded&limit=50"])
        clear_namespace(namespace)
    print(f"\n{count} documents in the database (wrk -t2 -d10s)\n")
    print("| request | connections | requests/s | p50 ms | p99 ms |\n|---|---|---|---|---|")
    for label, connections, (rate, p50, p99) in (
        ("GET /documents/{id}", 16, one),
        ("GET /documents/{id}", 2, one_light),
        ("GET /documents?status=failed&limit=50", 16, listing),
        ("GET /documents?status=succeeded&limit=50", 16, listing_ok),
    ):
        print(f"| `{label}` | {connections} | {rate:.0f} | {p50:.2f} | {p99:.2f} |")


def throughput(small: int, large: int, batch: int) -> None:
    rates = {}
    for existing in (small, large):
        with scratch_database("growth") as database_url:
            fill(database_url, existing)
            rates[existing], _ = run_stages(database_url, batch, processes=2, threads=4)
            print(f"{existing} existing: {rates[existing]:.0f} docs/s", flush=True)
    change = rates[large] / rates[small] - 1
    print("\n| documents already stored | documents/s |\n|---|---|")
    for existing, rate in rates.items():
        print(f"| {existing} | {rate:.0f} |")
    print(f"\nchange: {change:+.1%} (batches of {batch}, 2 processes x 4 threads)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    one = sub.add_parser("lookups")
    one.add_argument("--documents", type=int, default=1_000_000)
    two = sub.add_parser("throughput")
    two.add_argument("--small", type=int, default=1000)
    two.add_argument("--large", type=int, default=100_000)
    two.add_argument("--batch", type=int, default=1000)
    options = parser.parse_args()
    if options.command == "lookups":
        lookups(options.documents)
    else:
        throughput(options.small, options.large, options.batch)


if __name__ == "__main__":
    main()
