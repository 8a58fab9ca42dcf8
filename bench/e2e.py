"""End-to-end benchmark: documents/s through all five stages, beside a raw Dramatiq chain.

    uv run python bench/e2e.py [--documents 2000] [--runs 3] [--processes 2] [--threads 4]
                               [--embedder hashing|minilm]

Each run loads K documents (4 KiB of text) with their validate messages while no worker
runs, then starts the workers and times until every document has succeeded. Three
variants, alternated in each run, with the same broker, processes and threads:

- ``floor``: a raw chain of five Dramatiq actors that only send the next message;
- ``noop``: the pipeline's executor, stage rows, events and messages, stages doing no work;
- ``real``: the pipeline as deployed (``pipeline worker``).

Prints the median documents/s of each, the ratios, and each stage's p50 duration.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import redis
from common import (
    REDIS_URL,
    bench_env,
    clear_namespace,
    dramatiq_args,
    median,
    process,
    scratch_database,
)
from cpu import CpuSample, per_document_ms, sample
from sqlalchemy import Engine, create_engine, text
from sqlalchemy.engine import make_url

from pipeline.broker import make_broker
from pipeline.engine import transitions
from pipeline.engine.dispatch import Dispatcher
from pipeline.messages import StageMessage
from pipeline.settings import Settings, to_sqlalchemy_url
from pipeline.stages.builtin import PIPELINE

STAGES = PIPELINE.names

BODY = (" ".join(["river delta harbour glacier tide estuary basin current."] * 80))[:4096]


def load_documents(settings: Settings, count: int) -> None:
    """K accepted documents and their validate messages, as the API would leave them."""
    engine = create_engine(settings.database.sqlalchemy_url)
    dispatcher = Dispatcher(make_broker(settings))
    envelopes = []
    with engine.begin() as conn:
        for i in range(count):
            document_id = uuid.uuid4()
            envelope = dispatcher.build(StageMessage(document_id, "validate", 1))
            data = f"Document {i}. {BODY}".encode()
            conn.exec_driver_sql(
                transitions.ACCEPT_SQL,
                {
                    "id": document_id,
                    "tenant": "default",
                    "filename": f"bench-{i}.txt",
                    "declared": "text/plain",
                    "size": len(data),
                    "sha256": "0" * 64,
                    "key": None,
                    "external_id": None,
                    "data": data,
                    "grace": "10 minutes",
                    "message_id": envelope.message_id,
                    "stages": list(STAGES),
                    "first_stage": "validate",
                    "version": PIPELINE.version,
                    "accepted": "{}",
                },
            )
            envelopes.append(envelope)
    with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
        # A deployed database has statistics (autovacuum analyzes a table within a
        # minute of a bulk load); without them the planner may pick a status index
        # over the primary key for the stage statements, and the run measures that.
        conn.exec_driver_sql("ANALYZE")
    for envelope in envelopes:
        dispatcher.send(envelope)
    engine.dispose()


def load_floor(settings: Settings, count: int) -> None:
    dispatcher = Dispatcher(make_broker(settings))
    for _ in range(count):
        dispatcher.send(dispatcher.build(StageMessage(uuid.uuid4(), "validate", 1)))


class Stall:
    """Fails a run that makes no progress for a minute: on a Redis shared with test
    runs, a ``FLUSHALL`` takes the run's messages and it would wait forever."""

    LIMIT_S = 60.0

    def __init__(self) -> None:
        self.seen = -1
        self.since = time.monotonic()

    def check(self, done: int) -> None:
        if done != self.seen:
            self.seen, self.since = done, time.monotonic()
        elif time.monotonic() - self.since > self.LIMIT_S:
            raise RuntimeError(f"no progress for {self.LIMIT_S:.0f} s at {done} (messages lost?)")


_ENGINES: dict[str, Engine] = {}


def succeeded(database_url: str) -> int:
    """Documents succeeded so far; polled every 50 ms, so over one kept connection (a new
    connection per poll costs the machine a backend start 20 times a second)."""
    if database_url not in _ENGINES:
        _ENGINES[database_url] = create_engine(to_sqlalchemy_url(database_url), pool_size=1)
    with _ENGINES[database_url].connect() as conn:
        value = conn.execute(text("SELECT count(*) FROM documents WHERE status = 'succeeded'"))
        return int(value.scalar_one())


def forget(database_url: str) -> None:
    """Close the polling connection before the database is dropped."""
    engine = _ENGINES.pop(database_url, None)
    if engine is not None:
        engine.dispose()


def stage_p50(database_url: str) -> dict[str, float]:
    engine = create_engine(to_sqlalchemy_url(database_url))
    with engine.connect() as conn:
        rows = conn.execute(
            text(
                "SELECT stage, percentile_cont(0.5) WITHIN GROUP (ORDER BY duration_ms) "
                "FROM stage_runs GROUP BY stage"
            )
        ).all()
    engine.dispose()
    return {stage: float(p50 or 0) for stage, p50 in rows}


def row_updates(database_url: str) -> dict[str, tuple[int, int]]:
    """Row updates and how many of them were HOT, per hot-path table (read once the
    workers have exited: a backend reports its counts when it ends)."""
    engine = create_engine(to_sqlalchemy_url(database_url))
    with engine.connect() as conn:
        rows = conn.execute(
            text(
                "SELECT relname, n_tup_upd, n_tup_hot_upd FROM pg_stat_user_tables "
                "WHERE relname IN ('stage_runs', 'documents')"
            )
        ).all()
    engine.dispose()
    return {name: (int(updates), int(hot)) for name, updates, hot in rows}


def run(kind: str, documents: int, processes: int, threads: int, logs: Path) -> dict[str, Any]:
    with scratch_database("e2e") as database_url:
        if kind == "floor":
            namespace = f"bench-e2e-{uuid.uuid4().hex[:6]}"
            env = bench_env(database_url, namespace, pool_size=threads + 2)
            load_floor(Settings.from_env(env), documents)
            client = redis.Redis.from_url(REDIS_URL)
            counter = f"{namespace}:floor-done"
            started = time.monotonic()
            args = dramatiq_args("floor_chain", processes, threads)
            with process(args, env, logs / "floor.log") as proc:
                first = sample(proc.pid, _name(database_url))
                stalled = Stall()
                while (done := int(client.get(counter) or 0)) < documents:
                    stalled.check(done)
                    time.sleep(0.05)
                elapsed = time.monotonic() - started
                used = sample(proc.pid, _name(database_url)) - first
            clear_namespace(namespace)
            return {"docs_per_s": documents / elapsed, "p50": {}, "cpu": _cpu(used, documents)}
        module = "noop_worker" if kind == "noop" else "pipeline.actors.worker"
        rate, used = run_stages(
            database_url,
            documents,
            processes=processes,
            threads=threads,
            module=module,
            log=logs / f"{kind}.log",
        )
        time.sleep(0.5)  # the backends' statistics, reported as they exit
        return {
            "docs_per_s": rate,
            "p50": stage_p50(database_url),
            "cpu": _cpu(used, documents),
            "updates": row_updates(database_url),
        }


def _name(database_url: str) -> str:
    return str(make_url(database_url).database)


def _cpu(used: CpuSample, documents: int) -> dict[str, float]:
    return per_document_ms(used, documents)


def run_stages(
    database_url: str,
    documents: int,
    *,
    processes: int,
    threads: int,
    module: str = "pipeline.actors.worker",
    log: Path | None = None,
) -> tuple[float, CpuSample]:
    """Documents/s of a worker module for a batch loaded into a (possibly full) database,
    and the CPU the workers, their Postgres backends and Redis used meanwhile."""
    namespace = f"bench-e2e-{uuid.uuid4().hex[:6]}"
    env = bench_env(database_url, namespace, pool_size=threads + 2)
    before = succeeded(database_url)
    load_documents(Settings.from_env(env), documents)
    log = log or Path(tempfile.mkdtemp(prefix="bench-stages-")) / "worker.log"
    started = time.monotonic()
    with process(dramatiq_args(module, processes, threads), env, log) as proc:
        first = sample(proc.pid, _name(database_url))
        stalled = Stall()
        while (done := succeeded(database_url)) < before + documents:
            stalled.check(done)
            time.sleep(0.05)
        elapsed = time.monotonic() - started
        used = sample(proc.pid, _name(database_url)) - first
    clear_namespace(namespace)
    forget(database_url)
    return documents / elapsed, used


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--documents", type=int, default=2000)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--processes", type=int, default=2)
    parser.add_argument("--threads", type=int, default=4)
    parser.add_argument(
        "--embedder",
        choices=("hashing", "minilm"),
        default="hashing",
        help="the real variant's embedder: hashing measures the engine (and compares with "
        "earlier runs); minilm the model, which then bounds the rate",
    )
    options = parser.parse_args()
    os.environ["PIPELINE_EMBEDDER"] = options.embedder  # the workers inherit it
    logs = Path(tempfile.mkdtemp(prefix="bench-e2e-"))
    results: dict[str, list[dict[str, Any]]] = {"floor": [], "noop": [], "real": []}
    for _ in range(options.runs):
        for kind in results:
            results[kind].append(
                run(kind, options.documents, options.processes, options.threads, logs)
            )
            result = results[kind][-1]
            cpu = ", ".join(f"{k} {v:.2f}" for k, v in result["cpu"].items())
            updates = "".join(
                f"; {table} updates {n} ({hot} HOT)"
                for table, (n, hot) in sorted(result.get("updates", {}).items())
            )
            print(
                kind, f"{result['docs_per_s']:.0f} docs/s; CPU ms/doc: {cpu}{updates}", flush=True
            )
    rates = {kind: median([r["docs_per_s"] for r in runs]) for kind, runs in results.items()}
    print("\n| variant | documents/s |\n|---|---|")
    for kind, rate in rates.items():
        print(f"| {kind} | {rate:.0f} |")
    ratio = rates["noop"] / rates["floor"]
    print(
        f"\nnoop / floor = {ratio:.2f}; real = {rates['real']:.0f} docs/s "
        f"(median of {options.runs} runs of {options.documents} documents, "
        f"{options.processes} processes x {options.threads} threads)"
    )
    print("\n| variant | CPU ms per document: workers | Postgres backends | Redis (shared) |")
    print("|---|---|---|---|")
    for kind, runs in results.items():
        cpu = {part: median([r["cpu"][part] for r in runs]) for part in runs[0]["cpu"]}
        print(f"| {kind} | {cpu['workers']:.2f} | {cpu['postgres']:.2f} | {cpu['redis']:.2f} |")
    p50 = results["real"][-1]["p50"]
    print("real stage p50 ms: " + ", ".join(f"{s} {p50.get(s, 0):.1f}" for s in STAGES))


if __name__ == "__main__":
    main()
