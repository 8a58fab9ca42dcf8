"""Real pipeline processes for failure tests: workers and reconcilers as subprocesses."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeVar

import httpx
from litestar.testing import TestClient
from sqlalchemy import Engine, text

from pipeline.http.app import create_app
from pipeline.settings import Settings
from pipeline.stages import DEFAULT_DEFINITION, load_definition

from .api import bearer, upload

S = TypeVar("S")

PIPELINE = [sys.executable, "-m", "pipeline"]


class Processes:
    """Starts ``pipeline`` subcommands in their own process groups and cleans them up."""

    def __init__(self, env: dict[str, str], logs: Path) -> None:
        self.env = env
        self.logs = logs
        self.running: list[subprocess.Popen[bytes]] = []

    def start(
        self, *args: str, name: str, env: dict[str, str] | None = None
    ) -> subprocess.Popen[bytes]:
        log = (self.logs / f"{name}.log").open("ab")
        process = subprocess.Popen(
            [*PIPELINE, *args],
            env={**self.env, **(env or {})},
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # its own group: signals reach dramatiq's children too
        )
        log.close()
        self.running.append(process)
        return process

    def worker(
        self, *extra: str, name: str = "worker", env: dict[str, str] | None = None
    ) -> subprocess.Popen[bytes]:
        return self.start(
            "worker", "--processes", "1", "--threads", "2", *extra, name=name, env=env
        )

    def reconciler(self, *extra: str, name: str = "reconciler") -> subprocess.Popen[bytes]:
        return self.start("reconciler", *extra, name=name)

    @staticmethod
    def signal_group(process: subprocess.Popen[bytes], signum: int) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signum)

    def kill(self, process: subprocess.Popen[bytes]) -> None:
        self.signal_group(process, signal.SIGKILL)
        process.wait(timeout=10)

    def stop_all(self) -> None:
        for process in self.running:
            self.signal_group(process, signal.SIGTERM)
        deadline = time.monotonic() + 15
        for process in self.running:
            try:
                process.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                self.signal_group(process, signal.SIGKILL)
                process.wait(timeout=10)
        # Dramatiq's worker children can outlive a killed parent: sweep the groups.
        for process in self.running:
            self.signal_group(process, signal.SIGKILL)

    def log(self, name: str) -> str:
        path = self.logs / f"{name}.log"
        return path.read_text(errors="replace") if path.exists() else ""


class ProcessStack:
    """What a test's stack of real processes holds (see :func:`stack_maker`), and what
    every such test does with it; test modules subclass it with their own steps."""

    body: bytes = b"A test document. It has a few sentences.\n\nAnd a second paragraph."
    """What :meth:`upload` sends unless told otherwise."""

    def __init__(
        self,
        env: dict[str, str],
        client: TestClient[Any],
        processes: Processes,
        engine: Engine,
        settings: Settings,
    ) -> None:
        self.env = env
        self.client = client
        self.processes = processes
        self.engine = engine
        self.settings = settings
        self.namespace = settings.broker.namespace

    def upload(self, name: str, body: bytes | None = None) -> str:
        response = upload(self.client, self.body if body is None else body, name)
        assert response.status_code == 202, response.text
        return str(response.json()["id"])

    def status(self, document_id: str) -> str:
        with self.engine.connect() as conn:
            found = conn.execute(
                text("SELECT status FROM documents WHERE id = :id"), {"id": document_id}
            ).scalar()
        return str(found)


def free_port() -> int:
    """A TCP port nothing listens on now (for a ``pipeline api`` a test starts)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def ready(url: str) -> bool:
    """Whether the API at ``url`` answers ``/ready`` with 200."""
    try:
        return httpx.get(url + "/ready", timeout=1).status_code == 200
    except httpx.HTTPError:
        return False


def wait_until(
    condition: Callable[[], bool], timeout: float, what: str, interval: float = 0.1
) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(interval)


def stack_env(
    settings: Settings, faults: list[dict[str, Any]] | None = None, **extra: str
) -> dict[str, str]:
    """The environment of a stack of real processes: this run's database, a Redis
    namespace of its own, and short recovery settings (queued grace 2 s, running slack
    1 s, a sweep every 0.5 s, chunk's time limit 4 s, backoffs of 0.1-0.5 s for every
    stage of the definition ``PIPELINE_DEFINITION`` names, the built-in one by default)."""
    env = {
        **os.environ,
        "DATABASE_URL": settings.database.url,
        "REDIS_URL": settings.broker.url,
        "PIPELINE_REDIS_NAMESPACE": f"{settings.broker.namespace}-{uuid.uuid4().hex[:6]}",
        "PIPELINE_QUEUED_GRACE_S": "2",
        "PIPELINE_RUNNING_SLACK_S": "1",
        "PIPELINE_RECONCILER_INTERVAL_S": "0.5",
        "PIPELINE_CHUNK_TIME_LIMIT_S": "4",
        "PIPELINE_DB_POOL_SIZE": "4",
    }
    definition = load_definition(extra.get("PIPELINE_DEFINITION") or DEFAULT_DEFINITION)
    for stage in definition.names:  # every stage of the stack's definition
        env[f"PIPELINE_{stage.upper()}_MIN_BACKOFF_S"] = "0.1"
        env[f"PIPELINE_{stage.upper()}_MAX_BACKOFF_S"] = "0.5"
    if faults:
        env["PIPELINE_FAULTS"] = json.dumps(faults)
        env["PIPELINE_FAULT_INJECTION"] = "enabled-for-testing"
    env.update(extra)
    return env


@contextmanager
def stack_maker(
    settings: Settings,
    engine: Engine,
    logs: Path,
    api_key: str,
    build: Callable[[dict[str, str], TestClient[Any], Processes, Engine, Settings], S],
) -> Iterator[Callable[..., S]]:
    """``make(faults, **env)`` builds a stack (``build(env, client, processes, engine,
    settings)``): its own environment (:func:`stack_env`), an API client with ``api_key``
    and a process manager; every stack made is stopped on the way out."""
    created: list[tuple[Processes, TestClient[Any]]] = []

    def make(faults: list[dict[str, Any]] | None = None, **extra: str) -> S:
        env = stack_env(settings, faults, **extra)
        stack_settings = Settings.from_env(env)
        client = TestClient(create_app(stack_settings))
        client.__enter__()
        client.headers.update(bearer(api_key))
        processes = Processes(env, logs)
        created.append((processes, client))
        return build(env, client, processes, engine, stack_settings)

    try:
        yield make
    finally:
        for processes, client in created:
            processes.stop_all()
            client.__exit__(None, None, None)
