"""Databases of a test's own, beside the run's shared one.

Most tests share the run's database (``tests/conftest.py``). A test whose outcome depends
on every row in the database — a reconciler sweep, an operator action by filter — gets
a fresh one, so that what other tests left behind (and when it falls due) cannot change
what it sees.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url

from pipeline.db.migrate import upgrade
from pipeline.settings import Settings, to_sqlalchemy_url


@contextmanager
def own_database(settings: Settings, suffix: str) -> Iterator[Settings]:
    """``settings`` on a new, migrated database (and a Redis namespace) named after the
    run's with ``suffix``; the database is dropped on the way out."""
    server = make_url(to_sqlalchemy_url(settings.database.url))
    name = f"{server.database}_{suffix}"
    admin = create_engine(server.set(database="postgres"), isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    own = settings.replace(
        database={"url": server.set(database=name).render_as_string(hide_password=False)},
        broker={"namespace": f"{settings.broker.namespace}-{suffix}"},
    )
    try:
        upgrade(own)
        yield own
    finally:
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()
