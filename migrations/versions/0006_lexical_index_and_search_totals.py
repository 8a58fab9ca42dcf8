"""the lexical index for BM25: chunk tenants, postings and per-tenant totals

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-01 13:00:00.000000

``chunks.tenant`` copies the document's tenant (it never changes), so that search
filters one table. ``chunk_terms`` holds one posting per (tenant, term, chunk) with the
term's frequency in the chunk and the chunk's length, both carried in the primary key's
index so that BM25 reads no heap row. ``search_totals`` holds each tenant's chunk count
and total length, spread over 16 rows per tenant (by a hash of the document id): an
index transaction updates one of them, so concurrent ones rarely wait for each other.

Triggers on ``chunks`` keep both in step with every insert and delete, whatever the
writer (the index stage, a cascade from a deleted document, a rerun); an update of what
they derive from is refused, since chunks are replaced, never edited. A TRUNCATE of
``chunks`` empties both. The existing chunks are indexed here.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0006"
down_revision: str | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

FUNCTIONS = """
CREATE FUNCTION search_shard(document_id uuid) RETURNS integer
LANGUAGE sql IMMUTABLE PARALLEL SAFE
AS $$ SELECT hashtext(document_id::text) & 15 $$;

CREATE FUNCTION chunk_lexemes(tsv tsvector) RETURNS TABLE (term text, tf integer)
LANGUAGE sql IMMUTABLE PARALLEL SAFE
AS $$ SELECT lexeme, coalesce(array_length(positions, 1), 1) FROM unnest(tsv) $$;

CREATE FUNCTION chunk_length(tsv tsvector) RETURNS integer
LANGUAGE sql IMMUTABLE PARALLEL SAFE
AS $$ SELECT coalesce(sum(tf), 0)::integer FROM chunk_lexemes(tsv) $$;

-- Postings and totals of the inserted chunks (one statement: the rows of its table).
CREATE FUNCTION search_index_chunks() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    -- Each chunk's length once (not once per posting: that re-read the whole tsvector
    -- for every term), then its postings, then the totals in (tenant, shard) order, so
    -- that two transactions never lock two rows in opposite orders.
    WITH measured AS (
        SELECT n.id, n.tenant, n.document_id, n.tsv, chunk_length(n.tsv) AS length
        FROM new_chunks AS n
    ), postings AS (
        INSERT INTO chunk_terms (tenant, term, chunk_id, tf, length)
        SELECT m.tenant, t.term, m.id, t.tf, m.length
        FROM measured AS m CROSS JOIN LATERAL chunk_lexemes(m.tsv) AS t
    )
    INSERT INTO search_totals AS s (tenant, shard, chunks, length)
    SELECT tenant, search_shard(document_id), count(*), sum(length)
    FROM measured GROUP BY 1, 2 ORDER BY 1, 2
    ON CONFLICT (tenant, shard) DO UPDATE
        SET chunks = s.chunks + excluded.chunks, length = s.length + excluded.length;
    RETURN NULL;
END $$;

-- A deleted chunk's postings, found by primary key from its own lexemes (per row: a
-- join with a transition table has no statistics to plan with).
CREATE FUNCTION search_unindex_chunk() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    DELETE FROM chunk_terms
    WHERE tenant = OLD.tenant AND term = ANY (tsvector_to_array(OLD.tsv)) AND chunk_id = OLD.id;
    RETURN NULL;
END $$;

CREATE FUNCTION search_uncount_chunks() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO search_totals AS s (tenant, shard, chunks, length)
    SELECT tenant, search_shard(document_id), -count(*), -sum(chunk_length(tsv))
    FROM old_chunks GROUP BY 1, 2 ORDER BY 1, 2
    ON CONFLICT (tenant, shard) DO UPDATE
        SET chunks = s.chunks + excluded.chunks, length = s.length + excluded.length;
    RETURN NULL;
END $$;

CREATE FUNCTION search_refuse_chunk_update() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'chunks are replaced, never updated: delete the chunk and insert it anew'
        USING ERRCODE = 'feature_not_supported';
END $$;

CREATE FUNCTION search_truncate() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    TRUNCATE chunk_terms, search_totals;
    RETURN NULL;
END $$;
"""

TRIGGERS = """
CREATE TRIGGER chunks_search_index AFTER INSERT ON chunks
    REFERENCING NEW TABLE AS new_chunks
    FOR EACH STATEMENT EXECUTE FUNCTION search_index_chunks();
CREATE TRIGGER chunks_search_unindex AFTER DELETE ON chunks
    FOR EACH ROW EXECUTE FUNCTION search_unindex_chunk();
CREATE TRIGGER chunks_search_uncount AFTER DELETE ON chunks
    REFERENCING OLD TABLE AS old_chunks
    FOR EACH STATEMENT EXECUTE FUNCTION search_uncount_chunks();
CREATE TRIGGER chunks_search_no_update BEFORE UPDATE ON chunks
    FOR EACH ROW
    WHEN (OLD.text IS DISTINCT FROM NEW.text OR OLD.tenant IS DISTINCT FROM NEW.tenant
          OR OLD.document_id IS DISTINCT FROM NEW.document_id
          OR OLD.embedding IS DISTINCT FROM NEW.embedding
          OR OLD.embedding_model IS DISTINCT FROM NEW.embedding_model)
    EXECUTE FUNCTION search_refuse_chunk_update();
CREATE TRIGGER chunks_search_truncate AFTER TRUNCATE ON chunks
    FOR EACH STATEMENT EXECUTE FUNCTION search_truncate();
"""

BACKFILL = """
INSERT INTO chunk_terms (tenant, term, chunk_id, tf, length)
SELECT m.tenant, t.term, m.id, t.tf, m.length
FROM (SELECT id, tenant, tsv, chunk_length(tsv) AS length FROM chunks) AS m
CROSS JOIN LATERAL chunk_lexemes(m.tsv) AS t;
INSERT INTO search_totals (tenant, shard, chunks, length)
SELECT tenant, search_shard(document_id), count(*), sum(chunk_length(tsv))
FROM chunks GROUP BY 1, 2;
"""


def upgrade() -> None:
    op.add_column("chunks", sa.Column("tenant", sa.String(200), nullable=True))
    op.execute(
        "UPDATE chunks AS c SET tenant = d.tenant FROM documents AS d WHERE d.id = c.document_id"
    )
    op.alter_column("chunks", "tenant", nullable=False)
    op.create_index("ix_chunks_tenant_model_id", "chunks", ["tenant", "embedding_model", "id"])
    op.create_table(
        "chunk_terms",
        sa.Column("tenant", sa.String(200), nullable=False),
        sa.Column("term", sa.Text(), nullable=False),
        sa.Column("chunk_id", sa.BigInteger(), nullable=False),
        sa.Column("tf", sa.Integer(), nullable=False),
        sa.Column("length", sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint(
            "tenant", "term", "chunk_id", name="pk_chunk_terms", postgresql_include=["tf", "length"]
        ),
    )
    op.create_table(
        "search_totals",
        sa.Column("tenant", sa.String(200), nullable=False),
        sa.Column("shard", sa.Integer(), nullable=False),
        sa.Column("chunks", sa.BigInteger(), nullable=False),
        sa.Column("length", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("tenant", "shard", name="pk_search_totals"),
    )
    op.execute(FUNCTIONS)
    op.execute(BACKFILL)
    op.execute(TRIGGERS)


def downgrade() -> None:
    for trigger in (
        "chunks_search_truncate",
        "chunks_search_no_update",
        "chunks_search_uncount",
        "chunks_search_unindex",
        "chunks_search_index",
    ):
        op.execute(f"DROP TRIGGER {trigger} ON chunks")
    for function in (
        "search_truncate()",
        "search_refuse_chunk_update()",
        "search_uncount_chunks()",
        "search_unindex_chunk()",
        "search_index_chunks()",
        "chunk_length(tsvector)",
        "chunk_lexemes(tsvector)",
        "search_shard(uuid)",
    ):
        op.execute(f"DROP FUNCTION {function}")
    op.drop_table("search_totals")
    op.drop_table("chunk_terms")
    op.drop_index("ix_chunks_tenant_model_id", table_name="chunks")
    op.drop_column("chunks", "tenant")
