"""Semantic search's two paths, against real databases: pgvector's HNSW index on the
embedded Postgres (it ships pgvector) and the exact scan in process on the system one.

Both must rank like an exact cosine ranking done here with numpy, keep tenants apart
(pgvector's index filters after its scan: a small tenant beside a big one still gets
all its neighbours), and never compare vectors of two models.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import numpy as np
import pytest
from sqlalchemy import Connection, Engine, text
from sqlalchemy.ext.asyncio import AsyncEngine

from pipeline.db import vectors
from pipeline.db.engine import make_async_engine, make_engine
from pipeline.db.migrate import upgrade
from pipeline.local.embedded import EmbeddedPostgres
from pipeline.search.semantic import (
    ChosenVectorSearch,
    ExactSearch,
    PgvectorSearch,
    SemanticSearchUnavailable,
    VectorSearch,
)
from pipeline.settings import Settings
from tests.support.databases import own_database

pytestmark = [
    pytest.mark.anyio,
    # pgserver's platformdirs, on a machine without XDG_RUNTIME_DIR: not ours.
    pytest.mark.filterwarnings("ignore::UserWarning:platformdirs"),
]
DIMS = vectors.VECTOR_DIMENSIONS
MODEL = "all-MiniLM-L6-v2"
RNG = np.random.default_rng(20261201)


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture(scope="module")
def pgvector_settings(
    settings: Settings, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Settings]:
    """The run's settings on an embedded Postgres 16 with pgvector, migrated to head."""
    server = EmbeddedPostgres(Path(tmp_path_factory.mktemp("pgvector")))
    url = server.start()
    try:
        own = settings.replace(database={"url": url})
        upgrade(own)
        yield own
    finally:
        server.stop()


@pytest.fixture(scope="module")
def exact_settings(settings: Settings) -> Iterator[Settings]:
    with own_database(settings, "vectors") as own:
        yield own


def unit(vector: np.ndarray) -> np.ndarray:  # type: ignore[type-arg]
    return (vector / np.linalg.norm(vector)).astype(np.float32)


def add_chunks(
    conn: Connection,
    tenant: str,
    matrix: np.ndarray,
    model: str = MODEL,  # type: ignore[type-arg]
) -> list[int]:
    """One document of ``tenant`` holding one chunk per row of ``matrix``; the chunk ids."""
    document_id = uuid.uuid4()
    conn.execute(
        text(
            "INSERT INTO documents (id, tenant, filename, size_bytes, sha256) "
            "VALUES (:id, :tenant, 'v.txt', 1, repeat('0', 64))"
        ),
        {"id": document_id, "tenant": tenant},
    )
    ids = []
    for ordinal, row in enumerate(matrix):
        ids.append(
            conn.execute(
                text(
                    "INSERT INTO chunks (document_id, tenant, ordinal, text, start_offset, "
                    "end_offset, token_count, embedding, embedding_model) VALUES (:id, :tenant, "
                    ":ordinal, 'x', 0, 1, 1, :embedding, :model) RETURNING id"
                ),
                {
                    "id": document_id,
                    "tenant": tenant,
                    "ordinal": ordinal,
                    "embedding": [float(x) for x in row],
                    "model": model,
                },
            ).scalar_one()
        )
    return ids


def exact_order(ids: list[int], matrix: np.ndarray, query: np.ndarray, k: int) -> list[int]:  # type: ignore[type-arg]
    scores = matrix @ query
    order = sorted(range(len(ids)), key=lambda i: (-float(scores[i]), ids[i]))
    return [ids[i] for i in order[:k]]


async def nearest(
    engine: AsyncEngine,
    search: VectorSearch,
    query: np.ndarray,
    tenant: str,
    k: int,
    model: str = MODEL,  # type: ignore[type-arg]
) -> list[int]:
    async with engine.connect() as conn, conn.begin():
        found = await search.nearest(conn, query, tenant=tenant, model=model, limit=k)
    return [c.chunk_id for c in found]


@pytest.fixture
async def pg_async(pgvector_settings: Settings) -> AsyncIterator[AsyncEngine]:
    engine = make_async_engine(pgvector_settings)
    yield engine
    await engine.dispose()


@pytest.fixture
async def exact_async(exact_settings: Settings) -> AsyncIterator[AsyncEngine]:
    engine = make_async_engine(exact_settings)
    yield engine
    await engine.dispose()


@pytest.fixture(scope="module")
def pg_sync(pgvector_settings: Settings) -> Iterator[Engine]:
    engine = make_engine(pgvector_settings)
    yield engine
    engine.dispose()


@pytest.fixture(scope="module")
def exact_sync(exact_settings: Settings) -> Iterator[Engine]:
    engine = make_engine(exact_settings)
    yield engine
    engine.dispose()


async def test_pgvector_is_set_up_and_fed_by_the_trigger(
    pg_sync: Engine, pg_async: AsyncEngine
) -> None:
    with pg_sync.connect() as conn:
        assert vectors.available(conn)
    tenant = f"big-{uuid.uuid4().hex[:6]}"
    small = f"small-{uuid.uuid4().hex[:6]}"
    big_matrix = np.stack([unit(RNG.standard_normal(DIMS)) for _ in range(600)])
    small_matrix = np.stack([unit(RNG.standard_normal(DIMS)) for _ in range(5)])
    with pg_sync.begin() as conn:
        big_ids = add_chunks(conn, tenant, big_matrix)
        small_ids = add_chunks(conn, small, small_matrix)
        # Another model's vectors in the small tenant: never compared with MODEL's.
        add_chunks(conn, small, small_matrix, model="another-model")
        copied = conn.execute(
            text("SELECT count(*) FROM chunk_vectors WHERE tenant IN (:a, :b)"),
            {"a": tenant, "b": small},
        ).scalar()
    assert copied == 600 + 5 + 5

    search = PgvectorSearch()
    hits = 0
    for _ in range(10):
        query = unit(RNG.standard_normal(DIMS))
        found = await nearest(pg_async, search, query, tenant, 20)
        expected = exact_order(big_ids, big_matrix, query, 20)
        hits += len(set(found) & set(expected))
    assert hits / 200 >= 0.95, f"HNSW recall {hits / 200:.2f}"

    # The small tenant: the index's candidates are almost all the big tenant's, so the
    # filtered list is short and the exact ranking takes over: all 5, in exact order.
    query = unit(RNG.standard_normal(DIMS))
    assert await nearest(pg_async, search, query, small, 10) == exact_order(
        small_ids, small_matrix, query, 10
    )
    # Vectors of a model nobody has: nothing, not the other model's.
    assert await nearest(pg_async, search, query, small, 10, model="third-model") == []


async def test_deleted_chunks_leave_the_vector_index(
    pg_sync: Engine, pg_async: AsyncEngine
) -> None:
    tenant = f"del-{uuid.uuid4().hex[:6]}"
    matrix = np.stack([unit(RNG.standard_normal(DIMS)) for _ in range(3)])
    with pg_sync.begin() as conn:
        ids = add_chunks(conn, tenant, matrix)
        conn.execute(text("DELETE FROM chunks WHERE id = :id"), {"id": ids[0]})
    found = await nearest(pg_async, PgvectorSearch(), matrix[0], tenant, 10)
    assert sorted(found) == sorted(ids[1:])


async def test_the_choice_follows_the_database(
    pg_async: AsyncEngine, exact_async: AsyncEngine
) -> None:
    with_pgvector = ChosenVectorSearch(max_vectors=10, dimensions=DIMS)
    without = ChosenVectorSearch(max_vectors=10, dimensions=DIMS)
    other_size = ChosenVectorSearch(max_vectors=10, dimensions=256)
    query = unit(RNG.standard_normal(DIMS))
    await nearest(pg_async, with_pgvector, query, "nobody", 1)
    await nearest(exact_async, without, query, "nobody", 1)
    await nearest(pg_async, other_size, unit(RNG.standard_normal(256)), "nobody", 1)
    assert isinstance(with_pgvector.chosen, PgvectorSearch)
    assert isinstance(without.chosen, ExactSearch)
    assert isinstance(other_size.chosen, ExactSearch)  # the hashing embedder's vectors


async def test_exact_search_ranks_exactly_and_follows_changes(
    exact_sync: Engine, exact_async: AsyncEngine
) -> None:
    with exact_sync.connect() as conn:
        assert not vectors.available(conn)  # the system Postgres 15 has no pgvector
    tenant = f"ex-{uuid.uuid4().hex[:6]}"
    other = f"ex-{uuid.uuid4().hex[:6]}"
    search = ExactSearch(max_vectors=1000, dimensions=DIMS)
    matrix = np.stack([unit(RNG.standard_normal(DIMS)) for _ in range(50)])
    with exact_sync.begin() as conn:
        ids = add_chunks(conn, tenant, matrix)
        add_chunks(conn, other, matrix)  # the same vectors, another tenant
        add_chunks(conn, tenant, matrix[:5], model="another-model")
    query = unit(RNG.standard_normal(DIMS))
    assert await nearest(exact_async, search, query, tenant, 10) == exact_order(
        ids, matrix, query, 10
    )
    assert search.held_vectors() == 50  # this tenant's, of this model

    # New chunks are read (only they), deleted ones are forgotten.
    extra = np.stack([unit(query + 0.01 * RNG.standard_normal(DIMS))])  # nearly the query
    with exact_sync.begin() as conn:
        new_ids = add_chunks(conn, tenant, extra)
        conn.execute(text("DELETE FROM chunks WHERE id = ANY(:ids)"), {"ids": ids[:10]})
    found = await nearest(exact_async, search, query, tenant, 10)
    assert found[0] == new_ids[0]
    assert not set(found) & set(ids[:10])
    assert found == exact_order(ids[10:] + new_ids, np.concatenate([matrix[10:], extra]), query, 10)
    assert search.held_vectors() == 41


async def test_exact_search_refuses_a_tenant_above_its_limit(
    exact_sync: Engine, exact_async: AsyncEngine
) -> None:
    tenant = f"lim-{uuid.uuid4().hex[:6]}"
    with exact_sync.begin() as conn:
        add_chunks(conn, tenant, np.stack([unit(RNG.standard_normal(DIMS)) for _ in range(4)]))
    search = ExactSearch(max_vectors=3, dimensions=DIMS)
    with pytest.raises(SemanticSearchUnavailable, match="at most 3 vectors"):
        await nearest(exact_async, search, unit(RNG.standard_normal(DIMS)), tenant, 1)
    assert search.held_vectors() == 0
