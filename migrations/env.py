"""Alembic environment: the URL comes from the pipeline's settings, never from a file."""

from __future__ import annotations

from alembic import context
from sqlalchemy import create_engine, pool

from pipeline.db.models import Base
from pipeline.settings import Settings

config = context.config
# ``pipeline db upgrade`` passes its settings' URL; the plain ``alembic`` command reads the env.
url: str = config.attributes.get("sqlalchemy_url") or Settings.from_env().sqlalchemy_url


def run_migrations_offline() -> None:
    context.configure(url=url, target_metadata=Base.metadata, literal_binds=True)
    with context.begin_transaction():
        context.run_migrations()


def run_migrations_online() -> None:
    engine = create_engine(url, poolclass=pool.NullPool)
    with engine.connect() as connection:
        context.configure(connection=connection, target_metadata=Base.metadata)
        with context.begin_transaction():
            context.run_migrations()
    engine.dispose()


if context.is_offline_mode():
    run_migrations_offline()
else:
    run_migrations_online()
