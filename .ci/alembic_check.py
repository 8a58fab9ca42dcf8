"""Run ``alembic check`` against a scratch database migrated to head.

``alembic check`` compares the models with a database that is already at the newest
revision, so CI creates one, migrates it, checks, and drops it.
"""

from __future__ import annotations

import os
import uuid

from alembic import command
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url

from pipeline.db.migrate import alembic_config, upgrade
from pipeline.settings import Settings, to_sqlalchemy_url


def main() -> None:
    server = make_url(to_sqlalchemy_url(Settings.from_env(os.environ).database_url))
    name = f"pipeline_alembic_check_{uuid.uuid4().hex[:8]}"
    admin = create_engine(server.set(database="postgres"), isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    try:
        url = server.set(database=name).render_as_string(hide_password=False)
        settings = Settings(database_url=url)
        upgrade(settings)
        command.check(alembic_config(settings))
    finally:
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


if __name__ == "__main__":
    main()
