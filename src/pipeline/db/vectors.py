"""pgvector, where the database has it: a ``vector(384)`` copy of each chunk's embedding
with an HNSW index, for nearest-neighbour search.

``chunks.embedding`` (``REAL[]``) stays the record; ``chunk_vectors`` is derived from it
by a trigger, like the lexical postings. Whether a database has pgvector is not known
when the migrations are written (the embedded Postgres ships it, many managed services
offer it, a stock Debian server does not), so this is not an Alembic revision: every
``upgrade`` calls :func:`ensure`, which creates the extension, the table, its index and
its trigger when it can (and fills the table from the chunks already there), and leaves
the database as it is when it cannot. The table is outside the SQLAlchemy models, and
``migrations/env.py`` leaves it out of ``alembic check``.

Only vectors of ``VECTOR_DIMENSIONS`` are copied (the model's): another embedder's
vectors are searched exactly, in the API process.
"""

from __future__ import annotations

import logging
from typing import Final

from sqlalchemy import Connection, Engine, text
from sqlalchemy.exc import DBAPIError

logger = logging.getLogger(__name__)

TABLE: Final = "chunk_vectors"
VECTOR_DIMENSIONS: Final = 384
"""all-MiniLM-L6-v2's; another model of another size needs this table rebuilt."""

_SCHEMA = f"""
CREATE TABLE {TABLE} (
    chunk_id bigint PRIMARY KEY REFERENCES chunks (id) ON DELETE CASCADE,
    tenant varchar(200) NOT NULL,
    model varchar(64) NOT NULL,
    embedding vector({VECTOR_DIMENSIONS}) NOT NULL
);
CREATE INDEX ix_chunk_vectors_tenant_model ON {TABLE} (tenant, model);

CREATE FUNCTION search_vector_chunks() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO {TABLE} (chunk_id, tenant, model, embedding)
    SELECT id, tenant, embedding_model, embedding::vector({VECTOR_DIMENSIONS})
    FROM new_chunks WHERE cardinality(embedding) = {VECTOR_DIMENSIONS};
    RETURN NULL;
END $$;

INSERT INTO {TABLE} (chunk_id, tenant, model, embedding)
SELECT id, tenant, embedding_model, embedding::vector({VECTOR_DIMENSIONS})
FROM chunks WHERE cardinality(embedding) = {VECTOR_DIMENSIONS};

CREATE INDEX ix_chunk_vectors_hnsw ON {TABLE} USING hnsw (embedding vector_cosine_ops);

CREATE TRIGGER chunks_search_vectors AFTER INSERT ON chunks
    REFERENCING NEW TABLE AS new_chunks
    FOR EACH STATEMENT EXECUTE FUNCTION search_vector_chunks();
"""  # noqa: S608 (only this module's constants are interpolated)


def available(conn: Connection) -> bool:
    """Whether this database has the vector table (checked once per process by search)."""
    return bool(conn.execute(text("SELECT to_regclass(:t) IS NOT NULL"), {"t": TABLE}).scalar())


def ensure(engine: Engine) -> bool:
    """Set up the vector table where pgvector can be had; True when it is there."""
    with engine.begin() as conn:
        if available(conn):
            return True
        offered = conn.execute(
            text("SELECT count(*) FROM pg_available_extensions WHERE name = 'vector'")
        ).scalar()
        if not offered:
            logger.info("pgvector is not installed on this server: semantic search is exact")
            return False
    try:
        with engine.begin() as conn:
            # Locks chunks for the backfill and index build: done once, at an upgrade.
            conn.execute(text("CREATE EXTENSION IF NOT EXISTS vector"))
            conn.execute(text("LOCK TABLE chunks IN SHARE MODE"))
            conn.exec_driver_sql(_SCHEMA)
    except DBAPIError as error:  # not allowed to create the extension; or set up meanwhile
        with engine.connect() as conn:
            if available(conn):
                return True
        logger.warning("cannot set up pgvector (%s): semantic search is exact", error.orig)
        return False
    logger.info("pgvector set up: semantic search uses its HNSW index")
    return True
