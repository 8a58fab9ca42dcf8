"""Alembic environment: the URL comes from the pipeline's settings, never from a file."""

from __future__ import annotations

from alembic import context
from sqlalchemy import create_engine, pool

from pipeline.db.models import Base
from pipeline.settings import Settings

config = context.config
# ``pipeline db upgrade`` passes its settings' URL; the plain ``alembic`` command reads the env.
url: str = config.attributes.get("sqlalchemy_url") or Settings.from_env().database.sqlalchemy_url


def include_object(
    obj: object, name: str | None, type_: str, reflected: bool, compare_to: object
) -> bool:
    """Leave out what ``pipeline.db.vectors`` sets up outside the revisions, where it can."""
    return not (type_ == "table" and name == "chunk_vectors")


def run_migrations_offline() -> None:
    context.configure(
        url=url, target_metadata=Base.metadata, literal_binds=True, include_object=include_object
    )
    with context.begin_transaction():
        context.run_migrations()


def run_migrations_online() -> None:
    engine = create_engine(url, poolclass=pool.NullPool)
    with engine.connect() as connection:
        context.configure(
            connection=connection, target_metadata=Base.metadata, include_object=include_object
        )
        with context.begin_transaction():
            context.run_migrations()
    engine.dispose()


if context.is_offline_mode():
    run_migrations_offline()
else:
    run_migrations_online()
