"""Idle latency: one small document through every stage, beside the raw chain, measured alike.

    uv run python bench/latency.py [--samples 40] [--gap 1.5] [--processes 1] [--threads 2]
                                   [--idle-processes 1,4] [--timeout-ms 10,100]
                                   [--variants floor-poll,floor,pipeline-poll,...]

Nothing else runs: each variant starts its workers (``dramatiq MODULE -p P -t T -Q
<stages>``) on a **private Redis** (a ``redis-server`` of this run, so ``INFO
commandstats`` counts the variant's commands and nobody else's), lets them go idle, and
then, one document at a time with a pause of ``--gap`` seconds (jittered ±50%) between
them so that every consumer is back in its idle wait, sends a first-stage message and
times until the end of the last stage is announced:

- the raw chain (``bench/floor_chain.py`` in latency mode) publishes on a Redis channel
  from its last actor; the bench is subscribed before it sends;
- the pipeline's ``documents_outcome`` trigger writes ``document_succeeded``, whose
  ``stage_events`` row NOTIFYs ``pipeline_events``; the bench LISTENs and reads the
  document's status on each notification (one primary-key SELECT).

Both clocks start just before the first message is sent (after the pipeline's document
row is committed, as the API leaves it) and stop when the client is told. Variants:

- ``floor-poll`` / ``pipeline-poll``: Dramatiq's own consumer (``PIPELINE_BROKER_WAKEUP=false``):
  an empty fetch backs off up to the worker timeout (1 s) before the next;
- ``pipeline-timeout-MS``: the same with the worker timeout (``dramatiq_worker_timeout``)
  lowered to MS, for each of ``--timeout-ms``
  (latency bought with idle polling);
- ``floor`` / ``pipeline``: the broker as configured by default (the wake-up);
- ``noop``: the pipeline's executor with stages that do nothing (``bench/noop_worker.py``);
- ``pipeline-async-commit``: a measurement only, not a configuration to deploy: the
  workers' sessions with ``synchronous_commit=off`` (``PGOPTIONS``), to show how much of
  the latency is waiting for the WAL flush of each of the twelve commits;
- ``pipeline-switch-1ms``: a measurement only: the worker with a 1 ms GIL switch
  interval (``bench/switch_worker.py``), to show whether threads woken by I/O wait for
  the GIL long enough to matter.

For the pipeline variants it also splits the time, from the ``stage_events`` rows
(``created_at`` is each transaction's start): *in stage* (claim to the start of the
completion transaction: inputs, compute) and *hop* (start of a stage's completion
transaction to the next stage's claim: the commit, the send, the wake-up, the fetch,
the hand-over to a worker thread).

Idle Redis load: with every variant's workers idle, the delta of ``INFO commandstats``
over ``--idle-seconds`` (10 s), for each process count of ``--idle-processes`` (6 stage
queues and their 6 delay queues per process), beside the CPU the workers and the private
Redis burn meanwhile. Prints a Markdown table of medians/percentiles.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import random
import statistics
import subprocess
import tempfile
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psycopg
import redis
from common import bench_env, dramatiq_args, free_port, process, scratch_database
from cpu import TICKS
from cpu import sample as cpu_sample
from sqlalchemy import create_engine

from pipeline.broker import make_broker
from pipeline.engine import transitions
from pipeline.engine.dispatch import Dispatcher
from pipeline.messages import StageMessage
from pipeline.settings import Settings
from pipeline.stages.builtin import PIPELINE

STAGES = PIPELINE.names
BODY = b"A small document: one line of plain text about rivers and their deltas.\n"


@dataclass(frozen=True)
class Variant:
    name: str
    module: str
    wakeup: bool
    timeout_ms: int | None = None
    pgoptions: str | None = None

    @property
    def floor(self) -> bool:
        return self.module == "floor_chain"


@dataclass
class Result:
    latencies_ms: list[float] = field(default_factory=list)
    idle: dict[int, dict[str, float]] = field(default_factory=dict)
    breakdown: dict[str, float] = field(default_factory=dict)


def variants(timeouts_ms: list[int]) -> dict[str, Variant]:
    found = [
        Variant("floor-poll", "floor_chain", wakeup=False),
        Variant("floor", "floor_chain", wakeup=True),
        Variant("pipeline-poll", "pipeline.actors.worker", wakeup=False),
        *(
            Variant(f"pipeline-timeout-{ms}", "pipeline.actors.worker", wakeup=False, timeout_ms=ms)
            for ms in timeouts_ms
        ),
        Variant("pipeline", "pipeline.actors.worker", wakeup=True),
        Variant("noop", "noop_worker", wakeup=True),
        Variant("pipeline-switch-1ms", "switch_worker", wakeup=True),
        Variant(
            "pipeline-async-commit",
            "pipeline.actors.worker",
            wakeup=True,
            pgoptions="-c synchronous_commit=off",
        ),
    ]
    return {variant.name: variant for variant in found}


@contextlib.contextmanager
def private_redis(logs: Path) -> Iterator[str]:
    """A redis-server of this run only (no persistence), so its counters are ours."""
    port = free_port()
    args = ["redis-server", "--port", str(port), "--save", "", "--appendonly", "no"]
    with process(args, dict(os.environ), logs / "redis.log") as proc:
        url = f"redis://127.0.0.1:{port}/0"
        client = redis.Redis.from_url(url)
        deadline = time.monotonic() + 10
        while True:
            try:
                client.ping()
                break
            except redis.ConnectionError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.05)
        os.environ["BENCH_REDIS_PID"] = str(proc.pid)
        yield url


def command_calls(client: redis.Redis) -> dict[str, int]:
    stats: dict[str, Any] = client.info("commandstats")
    return {name.removeprefix("cmdstat_"): int(value["calls"]) for name, value in stats.items()}


def cpu_seconds(pid: int) -> float:
    stat = Path(f"/proc/{pid}/stat").read_text()
    fields = stat[stat.rindex(")") + 2 :].split()
    return (int(fields[11]) + int(fields[12])) / TICKS


def worker_env(
    variant: Variant, database_url: str, redis_url: str, namespace: str
) -> dict[str, str]:
    env = bench_env(database_url, namespace, pool_size=4)
    env["REDIS_URL"] = redis_url
    env["PIPELINE_BROKER_WAKEUP"] = "true" if variant.wakeup else "false"
    env["BENCH_FLOOR_NOTIFY"] = "1"
    if variant.pgoptions is not None:
        env["PGOPTIONS"] = variant.pgoptions
    if variant.timeout_ms is not None:  # Dramatiq's worker timeout (its CLI has no flag)
        env["dramatiq_worker_timeout"] = str(variant.timeout_ms)
    return env


def worker_args(variant: Variant, processes: int, threads: int) -> list[str]:
    return dramatiq_args(variant.module, processes, threads)


def wait_idle(client: redis.Redis, namespace: str, processes: int, settle: float) -> None:
    """Until every worker process has polled once (its heartbeat), then ``settle`` s more
    so that every consumer has backed off to its idle wait."""
    deadline = time.monotonic() + 60
    while client.zcard(f"{namespace}:__heartbeats__") < processes:
        if time.monotonic() > deadline:
            raise TimeoutError("the workers did not start")
        time.sleep(0.1)
    time.sleep(settle)


def measure_idle(
    client: redis.Redis, proc: subprocess.Popen[bytes], seconds: float
) -> dict[str, float]:
    redis_pid = int(os.environ["BENCH_REDIS_PID"])
    before, workers0, redis0 = (
        command_calls(client),
        cpu_sample(proc.pid, "-").workers,
        cpu_seconds(redis_pid),
    )
    started = time.monotonic()
    time.sleep(seconds)
    after, workers1, redis1 = (
        command_calls(client),
        cpu_sample(proc.pid, "-").workers,
        cpu_seconds(redis_pid),
    )
    elapsed = time.monotonic() - started
    # The two INFO calls themselves are not the workers'.
    deltas = {name: after.get(name, 0) - before.get(name, 0) for name in after}
    deltas["info"] = deltas.get("info", 0) - 1
    total = sum(deltas.values())
    return {
        "commands_per_s": total / elapsed,
        "scripts_per_s": (deltas.get("evalsha", 0) + deltas.get("eval", 0)) / elapsed,
        "workers_cpu_ms_per_s": (workers1 - workers0) * 1000 / elapsed,
        "redis_cpu_ms_per_s": (redis1 - redis0) * 1000 / elapsed,
    }


class PipelineClient:
    """Accepts a document as the API would, sends its first message, waits for its end."""

    def __init__(self, settings: Settings, database_url: str) -> None:
        self.settings = settings
        self.engine = create_engine(settings.database.sqlalchemy_url, pool_size=1)
        self.dispatcher = Dispatcher(make_broker(settings))
        self.listener = psycopg.connect(database_url, autocommit=True)
        self.listener.execute("LISTEN pipeline_events")
        self.reader = psycopg.connect(database_url, autocommit=True)
        self.documents: list[uuid.UUID] = []

    def one(self, timeout: float) -> float:
        document_id = uuid.uuid4()
        self.documents.append(document_id)
        envelope = self.dispatcher.build(StageMessage(document_id, STAGES[0], 1))
        with self.engine.begin() as conn:
            conn.exec_driver_sql(
                transitions.ACCEPT_SQL,
                {
                    "id": document_id,
                    "tenant": "default",
                    "filename": "latency.txt",
                    "declared": "text/plain",
                    "size": len(BODY),
                    "sha256": "0" * 64,
                    "key": None,
                    "external_id": None,
                    "data": BODY,
                    "grace": "10 minutes",
                    "message_id": envelope.message_id,
                    "stages": list(STAGES),
                    "first_stage": STAGES[0],
                    "version": PIPELINE.version,
                    "accepted": "{}",
                },
            )
        self._drain()
        started = time.perf_counter()
        self.dispatcher.send(envelope)
        deadline = started + timeout
        while True:
            remaining = deadline - time.perf_counter()
            if remaining <= 0:
                raise TimeoutError(f"document {document_id} did not finish")
            for _ in self.listener.notifies(timeout=remaining, stop_after=1):
                status = self._status(document_id)
                if status == "succeeded":
                    return (time.perf_counter() - started) * 1000
                if status == "failed":
                    raise RuntimeError(f"document {document_id} failed")

    def _drain(self) -> None:
        for _ in self.listener.notifies(timeout=0):
            pass

    def _status(self, document_id: uuid.UUID) -> str:
        row = self.reader.execute(
            "SELECT status FROM documents WHERE id = %s", (document_id,)
        ).fetchone()
        return str(row[0]) if row else ""

    def breakdown(self) -> dict[str, float]:
        """Median ms in each stage and on each hop into it, over the documents sent."""
        rows = self.reader.execute(
            "SELECT document_id, stage, event, created_at FROM stage_events "
            "WHERE document_id = ANY(%s) AND event IN ('claimed', 'succeeded') "
            "AND stage IS NOT NULL ORDER BY id",
            (self.documents[1:],),  # not the warm-up
        ).fetchall()
        at: dict[tuple[Any, str, str], Any] = {(d, s, e): t for d, s, e, t in rows}
        parts: dict[str, list[float]] = {}
        for document in self.documents[1:]:
            for position, stage in enumerate(STAGES):
                claimed, done = (
                    at.get((document, stage, "claimed")),
                    at.get((document, stage, "succeeded")),
                )
                if claimed is None or done is None:
                    continue
                parts.setdefault(stage, []).append((done - claimed).total_seconds() * 1000)
                before = at.get((document, STAGES[position - 1], "succeeded")) if position else None
                if before is not None:
                    parts.setdefault(f"→{stage}", []).append(
                        (claimed - before).total_seconds() * 1000
                    )
        return {name: statistics.median(values) for name, values in parts.items()}

    def close(self) -> None:
        self.listener.close()
        self.reader.close()
        self.engine.dispose()


class FloorClient:
    """Sends the raw chain's first message and waits for its last actor's publication."""

    def __init__(self, settings: Settings) -> None:
        self.dispatcher = Dispatcher(make_broker(settings))
        self.pubsub = redis.Redis.from_url(settings.broker.url).pubsub(
            ignore_subscribe_messages=True
        )
        self.pubsub.subscribe(f"{settings.broker.namespace}:floor-done")
        while self.pubsub.get_message(timeout=1) is None and not self.pubsub.subscribed:
            pass

    def one(self, timeout: float) -> float:
        document_id = str(uuid.uuid4())
        envelope = self.dispatcher.build(StageMessage(uuid.UUID(document_id), STAGES[0], 1))
        started = time.perf_counter()
        self.dispatcher.send(envelope)
        deadline = started + timeout
        while (remaining := deadline - time.perf_counter()) > 0:
            message = self.pubsub.get_message(timeout=remaining)
            if message is not None and message["data"].decode() == document_id:
                return (time.perf_counter() - started) * 1000
        raise TimeoutError(f"chain {document_id} did not finish")

    def close(self) -> None:
        self.pubsub.close()


def run_variant(
    variant: Variant,
    options: argparse.Namespace,
    database_url: str,
    redis_url: str,
    logs: Path,
) -> Result:
    result = Result()
    client = redis.Redis.from_url(redis_url)
    counts = sorted(set(options.idle_processes) | {options.processes})
    for processes in counts:
        namespace = f"bench-latency-{uuid.uuid4().hex[:6]}"
        env = worker_env(variant, database_url, redis_url, namespace)
        args = worker_args(
            variant, processes, options.threads if processes == options.processes else 1
        )
        with process(args, env, logs / f"{variant.name}-{processes}.log") as proc:
            wait_idle(client, namespace, processes, options.settle)
            if processes in options.idle_processes:
                result.idle[processes] = measure_idle(client, proc, options.idle_seconds)
            if processes == options.processes:
                settings = Settings.from_env(env)
                waiter: PipelineClient | FloorClient = (
                    FloorClient(settings)
                    if variant.floor
                    else PipelineClient(settings, database_url)
                )
                try:
                    waiter.one(timeout=30)  # warm-up: connections, prepared statements
                    for _ in range(options.samples):
                        time.sleep(options.gap * random.uniform(0.5, 1.5))
                        result.latencies_ms.append(waiter.one(timeout=30))
                    if isinstance(waiter, PipelineClient):
                        result.breakdown = waiter.breakdown()
                finally:
                    waiter.close()
        client.flushdb()
    return result


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    if len(ordered) == 1:
        return ordered[0]
    return statistics.quantiles(ordered, n=100, method="inclusive")[int(q) - 1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--samples", type=int, default=40)
    parser.add_argument("--gap", type=float, default=1.5, help="seconds between documents (±50%%)")
    parser.add_argument("--processes", type=int, default=1)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument(
        "--idle-processes", default="1,4", type=lambda s: [int(x) for x in s.split(",")]
    )
    parser.add_argument("--idle-seconds", type=float, default=10.0)
    parser.add_argument("--settle", type=float, default=3.0)
    parser.add_argument(
        "--timeout-ms",
        default=[10, 100],
        type=lambda s: [int(x) for x in s.split(",")],
        help="worker timeouts of the pipeline-timeout-MS variants",
    )
    parser.add_argument(
        "--variants",
        default="floor-poll,floor,pipeline-poll,pipeline-timeout-10,pipeline-timeout-100,pipeline",
    )
    options = parser.parse_args()
    chosen = variants(options.timeout_ms)
    names = options.variants.split(",")
    logs = Path(tempfile.mkdtemp(prefix="bench-latency-"))
    results: dict[str, Result] = {}
    load = os.getloadavg()[0]
    with private_redis(logs) as redis_url, scratch_database("latency") as database_url:
        for name in names:
            results[name] = run_variant(chosen[name], options, database_url, redis_url, logs)
            lat = results[name].latencies_ms
            print(
                f"{name}: p50 {percentile(lat, 50):.1f} ms, p99 {percentile(lat, 99):.1f} ms; idle "
                + "; ".join(
                    f"{p} proc {v['commands_per_s']:.0f} cmd/s"
                    for p, v in results[name].idle.items()
                ),
                flush=True,
            )
            if results[name].breakdown:
                parts = results[name].breakdown
                print(
                    "  median ms, in stage: "
                    + ", ".join(f"{s} {parts.get(s, 0):.1f}" for s in STAGES)
                    + "; hops: "
                    + ", ".join(f"{k} {v:.1f}" for k, v in parts.items() if k.startswith("→")),
                    flush=True,
                )
    print(
        f"\n{options.samples} documents per variant, {options.processes} process(es) x "
        f"{options.threads} thread(s), gap {options.gap} s ±50%; 1-min load at start {load:.2f}, "
        f"at end {os.getloadavg()[0]:.2f}; logs in {logs}\n"
    )
    counts = options.idle_processes
    header = " | ".join(f"idle Redis commands/s, {p} proc" for p in counts)
    print(
        f"| variant | p50 ms | p90 ms | p99 ms | max ms | {header} "
        f"| idle CPU ms/s, {counts[-1]} proc: workers / Redis |"
    )
    print("|---|---|---|---|---|" + "---|" * len(counts) + "---|")
    for name, result in results.items():
        lat = result.latencies_ms
        idle = " | ".join(f"{result.idle[p]['commands_per_s']:.0f}" for p in counts)
        last = result.idle[counts[-1]]
        print(
            f"| {name} | {percentile(lat, 50):.1f} | {percentile(lat, 90):.1f} | "
            f"{percentile(lat, 99):.1f} | {max(lat):.1f} | {idle} | "
            f"{last['workers_cpu_ms_per_s']:.1f} / {last['redis_cpu_ms_per_s']:.1f} |"
        )


if __name__ == "__main__":
    main()
