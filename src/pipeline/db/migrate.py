"""Applying the Alembic migrations from code (``pipeline db upgrade``, ``pipeline up``, tests)."""

from __future__ import annotations

from pathlib import Path

from alembic import command
from alembic.config import Config
from sqlalchemy import create_engine, pool

from pipeline.db import vectors
from pipeline.errors import PipelineError
from pipeline.settings import Settings


class MigrationsNotFound(PipelineError):
    """Neither the packaged nor the checkout's migrations folder exists."""


def migrations_dir() -> Path:
    """The Alembic scripts: inside the wheel when installed, beside ``src/`` in a checkout."""
    package = Path(__file__).resolve().parent.parent
    for candidate in (package / "_migrations", package.parent.parent / "migrations"):
        if (candidate / "env.py").is_file():
            return candidate
    raise MigrationsNotFound("cannot find the migrations folder")


def alembic_config(settings: Settings) -> Config:
    config = Config()
    config.set_main_option("script_location", str(migrations_dir()))
    config.attributes["sqlalchemy_url"] = settings.database.sqlalchemy_url
    return config


def upgrade(settings: Settings, revision: str = "head") -> None:
    """Migrate to ``revision``; at the head, also set up pgvector where the server has it
    (see :mod:`pipeline.db.vectors`: not a revision, since not every server can)."""
    command.upgrade(alembic_config(settings), revision)
    if revision == "head":
        engine = create_engine(settings.database.sqlalchemy_url, poolclass=pool.NullPool)
        try:
            vectors.ensure(engine)
        finally:
            engine.dispose()
