"""The ingestion floor: the same ASGI server and framework, doing only the raw work.

One handler: read the body, run the equivalent raw SQL inserts (document, blob, five
stage rows, two events) in one transaction through a psycopg async pool, and push one
message to Redis. No validation, no ORM, no problem details: what any implementation
of the upload must at least do.
"""

from __future__ import annotations

import hashlib
import json
import os
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import redis.asyncio as aioredis
from litestar import Litestar, Request, post
from psycopg_pool import AsyncConnectionPool

STAGES = ("validate", "extract", "ocr", "chunk", "embed", "index")
DSN = os.environ["DATABASE_URL"]
REDIS_URL = os.environ["REDIS_URL"]
NAMESPACE = os.environ.get("PIPELINE_REDIS_NAMESPACE", "pipeline")
state: dict[str, object] = {}


@asynccontextmanager
async def lifespan(_: Litestar) -> AsyncIterator[None]:
    pool = AsyncConnectionPool(DSN, min_size=8, max_size=8, open=False)
    await pool.open()
    state["pool"] = pool
    state["redis"] = aioredis.from_url(REDIS_URL)
    yield
    await pool.close()


@post("/documents", status_code=202)
async def upload(request: Request[object, object, object]) -> dict[str, str]:
    data = await request.body()
    document_id = uuid.uuid4()
    message_id = str(uuid.uuid4())
    digest = hashlib.sha256(data).hexdigest()
    pool: AsyncConnectionPool = state["pool"]  # type: ignore[assignment]
    async with pool.connection() as conn, conn.transaction():
        await conn.execute(
            "INSERT INTO documents (id, filename, declared_content_type, size_bytes, sha256) "
            "VALUES (%s, %s, %s, %s, %s)",
            (document_id, "bench.txt", "text/plain", len(data), digest),
        )
        await conn.execute(
            "INSERT INTO document_blobs (document_id, data) VALUES (%s, %s)", (document_id, data)
        )
        await conn.execute(
            "INSERT INTO stage_runs (document_id, stage, position, status, queued_at, "
            "deadline_at, message_id) SELECT %s, s.stage, s.position - 1, "
            "CASE WHEN s.position = 1 THEN 'queued' ELSE 'pending' END, "
            "CASE WHEN s.position = 1 THEN now() END, "
            "CASE WHEN s.position = 1 THEN now() + interval '60 seconds' END, "
            "CASE WHEN s.position = 1 THEN %s END "
            "FROM unnest(%s::text[]) WITH ORDINALITY AS s(stage, position)",
            (document_id, message_id, list(STAGES)),
        )
        await conn.execute(
            "INSERT INTO stage_events (document_id, stage, generation, event, message_id) "
            "VALUES (%s, NULL, 1, 'accepted', NULL), (%s, 'validate', 1, 'queued', %s)",
            (document_id, document_id, message_id),
        )
    message = {
        "queue_name": "validate",
        "actor_name": "validate",
        "message_id": message_id,
        "args": [{"document_id": str(document_id), "stage": "validate", "generation": 1}],
        "kwargs": {},
        "options": {},
        "message_timestamp": 0,
    }
    client: aioredis.Redis = state["redis"]  # type: ignore[assignment]
    await client.rpush(f"{NAMESPACE}:floor", json.dumps(message))
    return {"id": str(document_id), "status": "pending"}


app = Litestar(route_handlers=[upload], lifespan=[lifespan], request_max_body_size=26_000_000)
