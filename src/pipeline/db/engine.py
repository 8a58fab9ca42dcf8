"""Engine construction: one sync engine per worker process, one async engine per API process."""

from __future__ import annotations

from sqlalchemy import Engine, create_engine
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from pipeline.settings import Settings


def make_engine(settings: Settings, *, application_name: str = "pipeline") -> Engine:
    """A pooled sync engine (``PIPELINE_DB_PRE_PING`` decides whether checkouts are pinged).

    ``application_name`` shows in ``pg_stat_activity``, so an operator can tell
    workers, API and reconciler connections apart.
    """
    return create_engine(
        settings.database.sqlalchemy_url,
        pool_size=settings.database.pool_size,
        max_overflow=0,  # a fixed pool: no connect/disconnect churn under load
        pool_pre_ping=settings.database.pre_ping,
        connect_args={"application_name": application_name[:63]},
    )


def make_async_engine(settings: Settings) -> AsyncEngine:
    """The API's engine: a pool as large as the requests one process serves at once."""
    return create_async_engine(
        settings.database.sqlalchemy_url,
        pool_size=settings.database.api_pool_size,
        max_overflow=0,  # a fixed pool: no connect/disconnect churn under load
        pool_pre_ping=settings.database.pre_ping,
    )
