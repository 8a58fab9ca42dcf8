"""Shared pieces of the benchmarks: a scratch database, servers, process handling.

Every scratch database gets an API key (tenant ``default``, every scope) whose rate
limit is far above what a benchmark sends: the limiter's Redis round trip is still
measured, its throttling never. It is exported as ``PIPELINE_API_KEY`` for as long as
the database lives, and :func:`wrk` sends it with every request.
"""

from __future__ import annotations

import contextlib
import os
import re
import signal
import socket
import statistics
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import redis
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url

from pipeline.access.keys import create_key
from pipeline.db.engine import make_engine
from pipeline.db.migrate import upgrade
from pipeline.settings import Settings, to_sqlalchemy_url

ROOT = Path(__file__).resolve().parent.parent
SERVER_URL = os.environ.get("DATABASE_URL", "postgresql://postgres@127.0.0.1:5432/postgres")
REDIS_URL = os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/0")
BENCH_RATE_PER_S = 1_000_000.0
"""The benchmark key's upload limit: checked on every upload, never reached."""


@contextlib.contextmanager
def scratch_database(label: str, *, keep: bool = False) -> Iterator[str]:
    """A migrated database of its own, dropped afterwards unless ``keep`` (a benchmark
    whose ingest is slow leaves it behind so that later runs can reuse it)."""
    server = make_url(to_sqlalchemy_url(SERVER_URL))
    name = f"pipeline_bench_{label}_{uuid.uuid4().hex[:6]}"
    admin = create_engine(server.set(database="postgres"), isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    url = (
        server.set(database=name)
        .render_as_string(hide_password=False)
        .replace("postgresql+psycopg://", "postgresql://")
    )
    try:
        settings = Settings().replace(database={"url": url})
        upgrade(settings)
        os.environ["PIPELINE_API_KEY"] = bench_key(settings)
        yield url
    finally:
        os.environ.pop("PIPELINE_API_KEY", None)
        if not keep:
            with admin.connect() as conn:
                conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


def bench_key(settings: Settings) -> str:
    engine = make_engine(settings, application_name="bench")
    try:
        with engine.begin() as conn:
            scopes = ["ingest", "read", "admin"]
            return create_key(
                conn,
                tenant="default",
                scopes=scopes,
                name="bench",
                rate_limit_per_s=BENCH_RATE_PER_S,
            ).key
    finally:
        engine.dispose()


def clear_namespace(namespace: str) -> None:
    client = redis.Redis.from_url(REDIS_URL)
    keys = list(client.scan_iter(f"{namespace}*", count=1000))
    if keys:
        client.delete(*keys)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextlib.contextmanager
def process(args: list[str], env: dict[str, str], log: Path) -> Iterator[subprocess.Popen[bytes]]:
    with log.open("ab") as out:
        proc = subprocess.Popen(
            args, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
        )
    try:
        yield proc
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


def wait_http(url: str, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            httpx.get(url, timeout=1)
            return
        except httpx.HTTPError:
            time.sleep(0.1)
    raise TimeoutError(url)


def median(values: list[float]) -> float:
    return statistics.median(values)


PYTHON = sys.executable


def bench_env(database_url: str, namespace: str, *, pool_size: int | None = None) -> dict[str, str]:
    """The environment of a benchmarked process: its database, Redis namespace, JSON logs."""
    env = {
        **os.environ,
        "DATABASE_URL": database_url,
        "REDIS_URL": REDIS_URL,
        "PIPELINE_REDIS_NAMESPACE": namespace,
        "PIPELINE_LOG_FORMAT": "json",
        "PYTHONPATH": str(ROOT / "bench"),
    }
    if pool_size is not None:
        env["PIPELINE_DB_POOL_SIZE"] = str(pool_size)
    return env


def dramatiq_args(module: str, processes: int, threads: int) -> list[str]:
    """`dramatiq MODULE` consuming every stage queue."""
    from pipeline.stages.builtin import PIPELINE

    return [
        PYTHON,
        "-m",
        "dramatiq",
        module,
        "-p",
        str(processes),
        "-t",
        str(threads),
        "-Q",
        *PIPELINE.names,
    ]


def wrk(args: list[str], *, connections: int, seconds: int) -> tuple[float, float, float]:
    """Run wrk; returns requests/s, p50 ms and p99 ms, and fails on any non-2xx answer.

    Sends the scratch database's API key (``PIPELINE_API_KEY``) when there is one.
    """
    key = os.environ.get("PIPELINE_API_KEY")
    auth = ["-H", f"Authorization: Bearer {key}"] if key else []
    out = subprocess.run(
        ["wrk", "-t2", f"-c{connections}", f"-d{seconds}s", "--latency", *auth, *args],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    non2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    if non2xx:
        raise RuntimeError(f"{non2xx.group(1)} failed requests:\n{out}")

    def ms(label: str) -> float:
        found = re.search(rf"{label}%\s+([\d.]+)(us|ms|s)", out)
        assert found is not None, out
        value, unit = found.groups()
        return float(value) * {"us": 0.001, "ms": 1.0, "s": 1000.0}[unit]

    rate = re.search(r"Requests/sec:\s+([\d.]+)", out)
    assert rate is not None, out
    return float(rate.group(1)), ms("50"), ms("99")
