"""Shared test infrastructure: a fresh database and Redis namespace per test run.

The tests talk to real Postgres and Redis. ``DATABASE_URL`` and ``REDIS_URL`` name the
servers; when one is not set, the run starts an embedded server for it (the same
ones ``pipeline up`` uses), so ``uv run pytest`` works on a machine with nothing but
Python and uv. Each run creates its own database and Redis key namespace, and removes
both at the end.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator

import msgspec
import pytest
import redis
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url

from pipeline.db.migrate import upgrade
from pipeline.local.embedded import EmbeddedPostgres, EmbeddedRedis
from pipeline.settings import PolicyOverride, Settings, to_sqlalchemy_url
from pipeline.stages.builtin import PIPELINE
from tests.support import split

RUN_ID = uuid.uuid4().hex[:10]


@pytest.fixture(scope="session")
def servers(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Settings]:
    """The Postgres and Redis servers of this run: from the environment, or embedded."""
    env = dict(os.environ)
    data_dir = tmp_path_factory.mktemp("embedded")
    postgres, redis_server = EmbeddedPostgres(data_dir), EmbeddedRedis(data_dir)
    try:
        if not env.get("DATABASE_URL"):
            env["DATABASE_URL"] = postgres.start()
        if not env.get("REDIS_URL"):
            env["REDIS_URL"] = redis_server.start()
        yield Settings.from_env(env)
    finally:
        redis_server.stop()
        postgres.stop()


@pytest.fixture(scope="session")
def database_url(servers: Settings) -> Iterator[str]:
    """A database of this run's own, migrated to the newest revision."""
    server = make_url(to_sqlalchemy_url(servers.database.url))
    name = f"pipeline_test_{RUN_ID}"
    admin = create_engine(server.set(database="postgres"), isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    url = server.set(database=name).render_as_string(hide_password=False)
    try:
        yield url
    finally:
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


FAST = PolicyOverride(max_retries=2, min_backoff_ms=100, max_backoff_ms=400, time_limit_ms=20_000)
"""Every stage of the definition retries fast in tests."""
SHORT_LIMITED = "chunk"
"""The stage with a short time limit, so that the time-limit test runs in seconds."""
SHORT_LIMIT_MS = 2_000


@pytest.fixture(scope="session")
def settings(database_url: str, servers: Settings) -> Iterator[Settings]:
    base = servers
    namespace = f"pipeline-test-{RUN_ID}"
    policies = {spec.name: FAST for spec in PIPELINE}
    policies[SHORT_LIMITED] = msgspec.structs.replace(FAST, time_limit_ms=SHORT_LIMIT_MS)
    settings = Settings().replace(
        database={"url": database_url, "pool_size": 4},
        broker={"url": base.broker.url, "namespace": namespace},
        limits={"max_upload_bytes": 1024 * 1024},
        stages={"policy_overrides": policies},
    )
    upgrade(settings)
    yield settings
    client = redis.Redis.from_url(settings.broker.url)
    keys = list(client.scan_iter(f"{namespace}*", count=1000))
    if keys:
        client.delete(*keys)
    client.close()


def pytest_configure(config: pytest.Config) -> None:
    split.configure(config)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    split.deselect(config, items)


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    split.finish(session)
