"""Shared test infrastructure: a fresh database and Redis namespace per test run.

The tests talk to real Postgres and Redis: ``DATABASE_URL`` and ``REDIS_URL`` name
the servers (default: the local ones). Each run creates its own database and uses
its own Redis key namespace, and removes both at the end.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator

import pytest
import redis
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url

from pipeline.db.migrate import upgrade
from pipeline.settings import Settings, to_sqlalchemy_url
from pipeline.stages import StagePolicy

RUN_ID = uuid.uuid4().hex[:10]


def _server_settings() -> Settings:
    return Settings.from_env(os.environ)


@pytest.fixture(scope="session")
def database_url() -> Iterator[str]:
    """A database of this run's own, migrated to the newest revision."""
    server = make_url(to_sqlalchemy_url(_server_settings().database_url))
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


FAST = StagePolicy(max_retries=2, min_backoff_ms=100, max_backoff_ms=400, time_limit_ms=20_000)


@pytest.fixture(scope="session")
def settings(database_url: str) -> Iterator[Settings]:
    base = _server_settings()
    namespace = f"pipeline-test-{RUN_ID}"
    policies = {
        "validate": FAST,
        "extract": FAST,
        # A short limit so that the time-limit test runs in seconds.
        "chunk": StagePolicy(
            max_retries=2, min_backoff_ms=100, max_backoff_ms=400, time_limit_ms=2_000
        ),
        "embed": FAST,
        "index": FAST,
    }
    settings = Settings(
        database_url=database_url,
        redis_url=base.redis_url,
        redis_namespace=namespace,
        max_upload_bytes=1024 * 1024,
        db_pool_size=4,
        policies=policies,  # type: ignore[arg-type]
    )
    upgrade(settings)
    yield settings
    client = redis.Redis.from_url(settings.redis_url)
    keys = list(client.scan_iter(f"{namespace}*", count=1000))
    if keys:
        client.delete(*keys)
    client.close()
