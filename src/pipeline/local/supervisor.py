"""A small process supervisor for ``pipeline up``: start, prefix output, restart, stop.

Each child is a ``pipeline`` subcommand in its own process. Its output is prefixed with
its name. A child that exits while the supervisor is running is restarted after a
backoff (1 s, doubling to 30 s); on stop every child gets SIGTERM (so workers finish
in-flight stages) and, after a timeout, SIGKILL.
"""

from __future__ import annotations

import subprocess
import sys
import threading
import time
from collections.abc import Callable
from typing import IO

import msgspec

MAX_BACKOFF_S = 30.0


class ChildSpec(msgspec.Struct, frozen=True):
    name: str
    args: list[str]
    """Arguments after ``python -m pipeline``."""


class _Child:
    def __init__(self, spec: ChildSpec) -> None:
        self.spec = spec
        self.process: subprocess.Popen[bytes] | None = None
        self.restarts = 0
        self.backoff = 1.0
        self.restart_at: float | None = None


class Supervisor:
    def __init__(
        self,
        specs: list[ChildSpec],
        env: dict[str, str],
        *,
        echo: Callable[[str], None] | None = None,
        stop_timeout: float = 30.0,
    ) -> None:
        self.children = [_Child(spec) for spec in specs]
        self.env = env
        self.echo = echo or (lambda line: print(line, flush=True))
        self.stop_timeout = stop_timeout
        self._lock = threading.Lock()

    def start(self) -> None:
        for child in self.children:
            self._spawn(child)

    def run(self, stop: threading.Event, poll: float = 0.5) -> None:
        """Watch the children until ``stop`` is set, restarting those that die."""
        while not stop.wait(poll):
            now = time.monotonic()
            for child in self.children:
                self._watch(child, now)
        self.stop()

    def _watch(self, child: _Child, now: float) -> None:
        process = child.process
        if process is not None and process.poll() is not None:
            self.echo(
                f"[supervisor] {child.spec.name} exited with code {process.returncode}; "
                f"restarting in {child.backoff:g} s"
            )
            child.process = None
            child.restart_at = now + child.backoff
            child.backoff = min(child.backoff * 2, MAX_BACKOFF_S)
        if child.process is None and child.restart_at is not None and now >= child.restart_at:
            child.restarts += 1
            self._spawn(child)

    def _spawn(self, child: _Child) -> None:
        process = subprocess.Popen(  # noqa: S603 - our own interpreter and subcommands
            [sys.executable, "-m", "pipeline", *child.spec.args],
            env=self.env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
        )
        child.process = process
        child.restart_at = None
        assert process.stdout is not None
        threading.Thread(
            target=self._relay, args=(child.spec.name, process.stdout), daemon=True
        ).start()

    def _relay(self, name: str, stream: IO[bytes]) -> None:
        for raw in iter(stream.readline, b""):
            self.echo(f"[{name}] {raw.decode(errors='replace').rstrip()}")

    def stop(self) -> None:
        running = [child.process for child in self.children if child.process is not None]
        for process in running:
            if process.poll() is None:
                process.terminate()
        deadline = time.monotonic() + self.stop_timeout
        for process in running:
            try:
                process.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        for child in self.children:
            child.process = None

    def pids(self) -> dict[str, int | None]:
        return {c.spec.name: c.process.pid if c.process else None for c in self.children}
