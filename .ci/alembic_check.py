"""Run ``alembic check`` against a scratch database migrated to head.

``alembic check`` compares the models with a database that is already at the newest
revision, so CI creates one, migrates it, checks, and drops it.
"""

from __future__ import annotations

import os
import tempfile
import uuid
from pathlib import Path

from alembic import command
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url

from pipeline.db.migrate import alembic_config, upgrade
from pipeline.local.embedded import EmbeddedPostgres
from pipeline.settings import Settings, to_sqlalchemy_url


def main() -> None:
    embedded = None
    database_url = os.environ.get("DATABASE_URL")
    if not database_url:  # a machine without Postgres: check against the embedded server
        embedded = EmbeddedPostgres(Path(tempfile.mkdtemp(prefix="alembic-check-")))
        database_url = embedded.start()
    try:
        check(database_url)
    finally:
        if embedded is not None:
            embedded.stop()


def check(database_url: str) -> None:
    server = make_url(to_sqlalchemy_url(database_url))
    name = f"pipeline_alembic_check_{uuid.uuid4().hex[:8]}"
    admin = create_engine(server.set(database="postgres"), isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    try:
        url = server.set(database=name).render_as_string(hide_password=False)
        settings = Settings().replace(database={"url": url})
        upgrade(settings)
        command.check(alembic_config(settings))
    finally:
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


if __name__ == "__main__":
    main()
