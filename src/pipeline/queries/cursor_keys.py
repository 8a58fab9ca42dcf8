"""Where the API's cursor key comes from: the configured secret, else one in Postgres.

Several API processes serve one deployment, and a client's next page may reach any
of them, so the key must be the same in all of them and survive restarts: a random
key per process would refuse most cursors. Refusing to start without
``PIPELINE_CURSOR_SECRET`` would make every laptop and test set one up for a
safeguard of pagination's integrity only (cursors hide nothing: the tenant filter
keeps tenants apart). So, unless configured, the first process that needs the key
stores 32 random bytes in ``server_secrets`` and every process reads that row.
Whoever can read that table can read every document anyway.

The key is loaded on first use, not at startup, so that an API process starts (and
answers ``/ready`` with 503) while Postgres is down, as it always has.
"""

from __future__ import annotations

import asyncio
import secrets
from typing import Final

from sqlalchemy import select
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncEngine

from pipeline.db.models import ServerSecret
from pipeline.queries.cursors import CursorCodec

SECRET_NAME: Final = "cursor-signing"  # noqa: S105 (the row's name, not a secret)
SECRET_BYTES: Final = 32


async def stored_secret(engine: AsyncEngine) -> bytes:
    """The deployment's cursor secret, created if no process has made it yet.

    Racing processes both insert; the primary key keeps the first, the other's insert
    waits for it and does nothing, and its read (a new snapshot) returns the winner's.
    """
    async with engine.begin() as conn:
        await conn.execute(
            insert(ServerSecret)
            .values(name=SECRET_NAME, secret=secrets.token_bytes(SECRET_BYTES))
            .on_conflict_do_nothing(index_elements=[ServerSecret.name])
        )
        secret = (
            await conn.execute(select(ServerSecret.secret).where(ServerSecret.name == SECRET_NAME))
        ).scalar_one()
    return bytes(secret)


class CursorKeys:
    """The API process's :class:`CursorCodec`, made once, on first use."""

    def __init__(self, engine: AsyncEngine, configured: str | None) -> None:
        self._engine = engine
        self._codec = CursorCodec(configured.encode()) if configured is not None else None
        self._lock = asyncio.Lock()

    async def codec(self) -> CursorCodec:
        if self._codec is None:
            async with self._lock:
                if self._codec is None:
                    self._codec = CursorCodec(await stored_secret(self._engine))
        return self._codec
