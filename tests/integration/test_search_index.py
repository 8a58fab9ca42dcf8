"""The lexical index and BM25, against real Postgres, on a database of the test's own.

The triggers on ``chunks`` keep ``chunk_terms`` and ``search_totals`` in step with every
insert and delete (whoever makes them); BM25 scores match values worked out by hand from
the formula; every statistic is the tenant's own.
"""

from __future__ import annotations

import concurrent.futures
import math
import uuid
from collections.abc import AsyncIterator, Iterator

import pytest
from alembic import command
from sqlalchemy import Connection, Engine, text
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncEngine

from pipeline.db.engine import make_async_engine, make_engine
from pipeline.db.migrate import alembic_config, upgrade
from pipeline.search import lexical
from pipeline.settings import Settings
from tests.support.databases import own_database

pytestmark = pytest.mark.anyio


@pytest.fixture(scope="module")
def search_settings(settings: Settings) -> Iterator[Settings]:
    with own_database(settings, "search") as own:
        yield own


@pytest.fixture(scope="module")
def db(search_settings: Settings) -> Iterator[Engine]:
    engine = make_engine(search_settings)
    yield engine
    engine.dispose()


@pytest.fixture
async def async_db(search_settings: Settings) -> AsyncIterator[AsyncEngine]:
    engine = make_async_engine(search_settings)
    yield engine
    await engine.dispose()


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


def add_document(conn: Connection, tenant: str, texts: list[str]) -> uuid.UUID:
    """A document of ``tenant`` with one chunk per text, written as the index stage does."""
    document_id = uuid.uuid4()
    conn.execute(
        text(
            "INSERT INTO documents (id, tenant, filename, size_bytes, sha256) "
            "VALUES (:id, :tenant, :name, 1, repeat('0', 64))"
        ),
        {"id": document_id, "tenant": tenant, "name": f"{document_id}.txt"},
    )
    conn.execute(
        text(
            "INSERT INTO chunks (document_id, tenant, ordinal, text, start_offset, end_offset, "
            "token_count, embedding, embedding_model) "
            "VALUES (:id, :tenant, :ordinal, :text, 0, 1, 1, '{}', 'none')"
        ),
        [
            {"id": document_id, "tenant": tenant, "ordinal": i, "text": t}
            for i, t in enumerate(texts)
        ],
    )
    return document_id


def totals(conn: Connection, tenant: str) -> tuple[int, int]:
    found = conn.execute(
        text(
            "SELECT coalesce(sum(chunks), 0), coalesce(sum(length), 0) FROM search_totals "
            "WHERE tenant = :t"
        ),
        {"t": tenant},
    ).one()
    return int(found[0]), int(found[1])


def postings(conn: Connection, tenant: str) -> dict[tuple[str, int], tuple[int, int]]:
    rows = conn.execute(
        text(
            "SELECT p.term, c.ordinal, p.tf, p.length FROM chunk_terms p "
            "JOIN chunks c ON c.id = p.chunk_id WHERE p.tenant = :t"
        ),
        {"t": tenant},
    ).all()
    return {(row.term, row.ordinal): (row.tf, row.length) for row in rows}


def test_postings_and_totals_follow_inserts_and_deletes(db: Engine) -> None:
    tenant = f"t-{uuid.uuid4().hex[:8]}"
    with db.begin() as conn:
        document = add_document(conn, tenant, ["otter otter river", "the otters of the lake"])
        add_document(conn, tenant, ["stone"])
    with db.connect() as conn:
        # "the" and "of" are stop words; "otters" stems to "otter".
        assert postings(conn, tenant) == {
            ("otter", 0): (2, 3),
            ("river", 0): (1, 3),
            ("otter", 1): (1, 2),
            ("lake", 1): (1, 2),
            ("stone", 0): (1, 1),
        }
        assert totals(conn, tenant) == (3, 6)
    with db.begin() as conn:  # a cascade from the document, as a delete would make
        conn.execute(text("DELETE FROM documents WHERE id = :id"), {"id": document})
    with db.connect() as conn:
        assert postings(conn, tenant) == {("stone", 0): (1, 1)}
        assert totals(conn, tenant) == (1, 1)


def test_an_update_of_what_the_index_derives_from_is_refused(db: Engine) -> None:
    tenant = f"t-{uuid.uuid4().hex[:8]}"
    with db.begin() as conn:
        document = add_document(conn, tenant, ["otter"])
    with pytest.raises(DBAPIError, match="chunks are replaced, never updated"), db.begin() as conn:
        conn.execute(
            text("UPDATE chunks SET text = 'beaver' WHERE document_id = :id"), {"id": document}
        )
    with db.begin() as conn:  # what the index does not derive from may change
        conn.execute(text("UPDATE chunks SET page = 2 WHERE document_id = :id"), {"id": document})
    with db.connect() as conn:
        assert postings(conn, tenant) == {("otter", 0): (1, 1)}


def test_concurrent_index_transactions_of_one_tenant_keep_exact_totals(db: Engine) -> None:
    """Many transactions adding and removing chunks of one tenant at once (threads, each
    on its own connection): the sharded totals end exactly at the sum."""
    tenant = f"t-{uuid.uuid4().hex[:8]}"

    def work(i: int) -> None:
        with db.begin() as conn:
            document = add_document(conn, tenant, [f"word{i} common", "common common"])
        if i % 3 == 0:
            with db.begin() as conn:
                conn.execute(text("DELETE FROM documents WHERE id = :id"), {"id": document})

    with concurrent.futures.ThreadPoolExecutor(max_workers=4) as pool:
        list(pool.map(work, range(30)))
    with db.connect() as conn:
        kept = 30 - len(range(0, 30, 3))
        assert totals(conn, tenant) == (2 * kept, 4 * kept)
        assert (
            conn.execute(
                text("SELECT count(*) FROM chunk_terms WHERE tenant = :t AND term = 'common'"),
                {"t": tenant},
            ).scalar()
            == 2 * kept
        )


def bm25_by_hand(tf: int, length: int, df: int, n: int, mean: float) -> float:
    k1, b = 0.9, 0.4
    idf = math.log(1 + (n - df + 0.5) / (df + 0.5))
    return idf * tf * (k1 + 1) / (tf + k1 * (1 - b + b * length / mean))


async def test_bm25_scores_match_the_formula(db: Engine, async_db: AsyncEngine) -> None:
    tenant = f"t-{uuid.uuid4().hex[:8]}"
    other = f"t-{uuid.uuid4().hex[:8]}"
    with db.begin() as conn:
        first = add_document(conn, tenant, ["otter otter river"])
        second = add_document(conn, tenant, ["otter lake"])
        add_document(conn, tenant, ["lake stone stone stone"])
        # Another tenant's chunks: full of otters, and no part of this tenant's statistics.
        add_document(conn, other, ["otter"] * 5)

    async with async_db.connect() as conn:
        hits = await lexical.bm25(conn, "otters?", tenant=tenant, limit=10)
    # N = 3 chunks, mean length 3; "otter" is in 2 of them.
    # idf = ln(1 + 1.5 / 2.5) = ln 1.6 = 0.4700036
    # first:  tf 2, length 3: 0.470004 * 2 * 1.9 / (2 + 0.9 * (0.6 + 0.4 * 3/3)) = 0.615867
    # second: tf 1, length 2: 0.470004 * 1.9 / (1 + 0.9 * (0.6 + 0.4 * 2/3))    = 0.501689
    assert [hit.document_id for hit in hits] == [first, second]
    assert hits[0].score == pytest.approx(0.615867, abs=1e-6)
    assert hits[1].score == pytest.approx(0.501689, abs=1e-6)
    assert hits[0].score == pytest.approx(bm25_by_hand(2, 3, 2, 3, 3.0))

    async with async_db.connect() as conn:
        # Terms are OR-ed: a chunk with only one of them still scores, for that one.
        both = await lexical.bm25(conn, "river stone", tenant=tenant, limit=10)
        # Only stop words: no term, no hit (and no error).
        none = await lexical.bm25(conn, "the of and", tenant=tenant, limit=10)
        theirs = await lexical.bm25(conn, "otter", tenant=other, limit=10)
    assert len(both) == 2
    stone = bm25_by_hand(3, 4, 1, 3, 3.0)
    river = bm25_by_hand(1, 3, 1, 3, 3.0)
    assert [hit.score for hit in both] == pytest.approx([stone, river], abs=1e-6)
    assert none == []
    # The other tenant's five otter chunks: its own N and df (a term in every chunk).
    assert [hit.score for hit in theirs] == pytest.approx(
        [bm25_by_hand(1, 1, 5, 5, 1.0)] * 5, abs=1e-6
    )


def test_the_migration_indexes_chunks_that_were_there_before_it(
    settings: Settings,
) -> None:
    """Chunks written before revision 0006 get their postings and totals at the upgrade."""
    with own_database(settings, "search_upgrade") as own:
        command.downgrade(alembic_config(own), "0005")  # the downgrade works too
        engine = make_engine(own)
        try:
            with engine.begin() as conn:
                document_id = uuid.uuid4()
                conn.execute(
                    text(
                        "INSERT INTO documents (id, tenant, filename, size_bytes, sha256) "
                        "VALUES (:id, 'old', 'old.txt', 1, repeat('0', 64))"
                    ),
                    {"id": document_id},
                )
                conn.execute(
                    text(
                        "INSERT INTO chunks (document_id, ordinal, text, start_offset, "
                        "end_offset, token_count, embedding, embedding_model) "
                        "VALUES (:id, 0, 'otter river river', 0, 1, 1, '{}', 'none')"
                    ),
                    {"id": document_id},
                )
            upgrade(own)
            with engine.connect() as conn:
                assert postings(conn, "old") == {("otter", 0): (1, 3), ("river", 0): (2, 3)}
                assert totals(conn, "old") == (1, 3)
        finally:
            engine.dispose()
