"""The whole pipeline on one machine: servers, schema, api, a worker group per stage, reconciler.

Authentication stays on: the stack makes an API key for tenant ``default`` with every
scope (or reuses the one it made before, if it still works) and leaves it in
``<data dir>/api-key``, readable by the user alone. ``auth=False`` (``--no-auth``)
switches authentication off instead, which the API and the banner say loudly.
"""

from __future__ import annotations

import contextlib
import logging
import os
import threading
import time
from collections.abc import Callable, Mapping
from pathlib import Path

import httpx
import msgspec

from pipeline.access.keys import ALL_SCOPES, create_key, verify_key
from pipeline.db.engine import make_engine
from pipeline.db.migrate import upgrade
from pipeline.local.embedded import EmbeddedPostgres, EmbeddedRedis
from pipeline.local.supervisor import ChildSpec, Supervisor
from pipeline.settings import Settings
from pipeline.wiring import Wiring

logger = logging.getLogger(__name__)


class StackOptions(msgspec.Struct, frozen=True, kw_only=True):
    data_dir: Path = Path(".pipeline")
    host: str = "127.0.0.1"
    port: int = 8000
    processes_per_stage: int = 1
    threads: int = 2
    metrics_port: int = 9191
    """Worker groups expose Prometheus metrics on consecutive ports from here (0: off)."""
    auth: bool = True
    """False: ``PIPELINE_AUTH=disabled`` for the API (``pipeline up --no-auth``)."""


class StackInfo(msgspec.Struct, frozen=True):
    api_url: str
    database_url: str
    redis_url: str
    embedded_postgres: bool
    embedded_redis: bool
    api_key: str | None = None
    """Tenant ``default``, every scope; None when authentication is disabled."""
    key_file: Path | None = None


class LocalStack:
    """Starts what is missing and supervises the rest; ``stop`` undoes all of it."""

    def __init__(
        self,
        options: StackOptions,
        environ: Mapping[str, str] | None = None,
        echo: Callable[[str], None] | None = None,
    ) -> None:
        self.options = options
        self.environ = dict(os.environ if environ is None else environ)
        self.echo = echo or (lambda line: print(line, flush=True))
        self.postgres = EmbeddedPostgres(options.data_dir)
        self.redis = EmbeddedRedis(options.data_dir)
        self.supervisor: Supervisor | None = None

    def start(self) -> StackInfo:
        env = dict(self.environ)
        embedded_postgres = not env.get("DATABASE_URL")
        embedded_redis = not env.get("REDIS_URL")
        try:
            if embedded_postgres:
                env["DATABASE_URL"] = self.postgres.start()
            if embedded_redis:
                env["REDIS_URL"] = self.redis.start()
            if not self.options.auth:
                env["PIPELINE_AUTH"] = "disabled"
            settings = Settings.from_env(env)
            stages = Wiring(settings).definition.names  # an invalid definition stops here
            upgrade(settings)
            api_key = None if settings.access.auth == "disabled" else self._local_key(settings)
            self.supervisor = Supervisor(self._children(stages), env, echo=self.echo)
            self.supervisor.start()
        except BaseException:
            self.stop()
            raise
        return StackInfo(
            api_url=f"http://{self.options.host}:{self.options.port}",
            database_url=env["DATABASE_URL"],
            redis_url=env["REDIS_URL"],
            embedded_postgres=embedded_postgres,
            embedded_redis=embedded_redis,
            api_key=api_key,
            key_file=self.key_file if api_key else None,
        )

    @property
    def key_file(self) -> Path:
        return self.options.data_dir / "api-key"

    def _local_key(self, settings: Settings) -> str:
        """The key in ``key_file`` if it still opens everything, else a new one written there."""
        engine = make_engine(settings, application_name="pipeline-up")
        try:
            with engine.begin() as conn:
                known = self._read_key_file()
                principal = verify_key(conn, known) if known else None
                if principal and principal.tenant == "default" and principal.scopes == ALL_SCOPES:
                    return known
                created = create_key(
                    conn, tenant="default", scopes=sorted(ALL_SCOPES), name="pipeline up (local)"
                )
        finally:
            engine.dispose()
        self._write_key_file(created.key)
        return created.key

    def _read_key_file(self) -> str:
        with contextlib.suppress(OSError):
            return self.key_file.read_text().strip()
        return ""

    def _write_key_file(self, key: str) -> None:
        """Readable by the user alone (0600), like an SSH key."""
        self.key_file.parent.mkdir(parents=True, exist_ok=True)
        descriptor = os.open(self.key_file, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(descriptor, "w") as handle:
            handle.write(key + "\n")
        self.key_file.chmod(0o600)  # if it existed with looser bits

    def _children(self, stages: tuple[str, ...]) -> list[ChildSpec]:
        """The API, the reconciler and one worker group per stage of the definition."""
        options = self.options
        specs = [
            ChildSpec("api", ["api", "--host", options.host, "--port", str(options.port)]),
            ChildSpec("reconciler", ["reconciler"]),
        ]
        for stage in stages:
            args = [
                "worker",
                "--stage",
                stage,
                "--processes",
                str(options.processes_per_stage),
                "--threads",
                str(options.threads),
            ]
            if stage == stages[0]:
                # one group also carries bulk operator jobs and webhook deliveries
                args += ["--operations", "--webhooks"]
            specs.append(ChildSpec(stage, args))
        return specs

    def wait_ready(self, api_url: str, timeout: float = 60.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                if httpx.get(f"{api_url}/ready", timeout=2).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.25)
        raise TimeoutError(f"the API at {api_url} was not ready within {timeout:g} s")

    def run(self, stop: threading.Event) -> None:
        assert self.supervisor is not None
        try:
            self.supervisor.run(stop)
        finally:
            self.stop()

    def stop(self) -> None:
        if self.supervisor is not None:
            self.supervisor.stop()
            self.supervisor = None
        self.redis.stop()
        self.postgres.stop()
