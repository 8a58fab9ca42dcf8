"""Nearest chunks to a query vector, of one tenant and one embedding model.

Two ways, chosen once per process by whether the database has ``chunk_vectors``
(:mod:`pipeline.db.vectors`):

- :class:`PgvectorSearch`: pgvector's HNSW index (cosine). pgvector 0.6 has no iterative
  index scan: the index yields ``hnsw.ef_search`` candidates of every tenant, and the
  tenant filter is applied after. So the search asks for more candidates than it needs
  and, when the tenant's filter leaves too few, ranks the tenant's vectors exactly.
- :class:`ExactSearch`: without pgvector, the tenant's vectors are held in this process
  as one float32 matrix and ranked with one matrix product (a few milliseconds for
  100k vectors). The matrix is refreshed from what changed: new chunks (ids only grow)
  are fetched, deleted ones found by count. ``settings.search.exact_max_vectors`` bounds what one
  process holds, across tenants (least recently used first out); a tenant with more
  vectors than that is refused semantic search, with a reason.

Vectors of one model are compared only with vectors of the same model (``model``).
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any, Final, Protocol

import anyio.to_thread
import numpy as np
import numpy.typing as npt
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection

from pipeline.db.vectors import VECTOR_DIMENSIONS
from pipeline.errors import PipelineError
from pipeline.search.fusion import Candidate, candidate

logger = logging.getLogger(__name__)

Vector = npt.NDArray[np.float32]
MAX_EF_SEARCH: Final = 1000
"""pgvector's upper bound for ``hnsw.ef_search``."""


class SemanticSearchUnavailable(PipelineError):
    """Semantic search cannot serve this tenant here (too many vectors without pgvector)."""


class VectorSearch(Protocol):
    async def nearest(
        self, conn: AsyncConnection, vector: Vector, *, tenant: str, model: str, limit: int
    ) -> list[Candidate]: ...


def vector_literal(vector: Vector) -> str:
    """pgvector's text form: ``[x1,x2,...]``."""
    return "[" + ",".join(f"{float(x):.7g}" for x in vector) + "]"


class ChosenVectorSearch:
    """pgvector where the database has ``chunk_vectors`` (and the model's vectors fit it),
    the exact scan otherwise; asked of the database at the first semantic search, so that
    the API starts while the database is down."""

    def __init__(self, *, max_vectors: int, dimensions: int) -> None:
        self.max_vectors = max_vectors
        self.dimensions = dimensions
        self.chosen: VectorSearch | None = None

    async def nearest(
        self, conn: AsyncConnection, vector: Vector, *, tenant: str, model: str, limit: int
    ) -> list[Candidate]:
        if self.chosen is None:
            self.chosen = await self._choose(conn)
        return await self.chosen.nearest(conn, vector, tenant=tenant, model=model, limit=limit)

    async def _choose(self, conn: AsyncConnection) -> VectorSearch:
        found = (
            await conn.execute(text("SELECT to_regclass('chunk_vectors') IS NOT NULL"))
        ).scalar()
        if found and self.dimensions == VECTOR_DIMENSIONS:
            logger.info("semantic search: pgvector's HNSW index")
            return PgvectorSearch()
        logger.info("semantic search: an exact scan in this process (no pgvector)")
        return ExactSearch(self.max_vectors, self.dimensions)


# -- pgvector ----------------------------------------------------------------------------

_SET_EF_SEARCH = "SET LOCAL hnsw.ef_search = {ef}"
_NEAREST = text(
    """
WITH near AS (
    SELECT chunk_id, embedding <=> CAST(:vector AS vector) AS distance
    FROM chunk_vectors
    WHERE tenant = :tenant AND model = :model
    ORDER BY embedding <=> CAST(:vector AS vector)
    LIMIT :limit
)
SELECT n.chunk_id, c.document_id, 1 - n.distance AS score
FROM near AS n JOIN chunks AS c ON c.id = n.chunk_id
ORDER BY n.distance, n.chunk_id
"""
)
_EXACT = text(
    """
WITH scan AS MATERIALIZED (
    SELECT chunk_id, embedding <=> CAST(:vector AS vector) AS distance
    FROM chunk_vectors
    WHERE tenant = :tenant AND model = :model
), near AS (
    SELECT chunk_id, distance FROM scan ORDER BY distance, chunk_id LIMIT :limit
)
SELECT n.chunk_id, c.document_id, 1 - n.distance AS score
FROM near AS n JOIN chunks AS c ON c.id = n.chunk_id
ORDER BY n.distance, n.chunk_id
"""
)
"""The same ranking without the index (a materialised scan cannot use it): exact."""


class PgvectorSearch:
    """HNSW first, with over-fetching; exact when the tenant's filter left too few."""

    def __init__(self, *, overfetch: int = 4) -> None:
        self.overfetch = overfetch

    async def nearest(
        self, conn: AsyncConnection, vector: Vector, *, tenant: str, model: str, limit: int
    ) -> list[Candidate]:
        ef = min(MAX_EF_SEARCH, max(100, limit * self.overfetch))
        await conn.exec_driver_sql(_SET_EF_SEARCH.format(ef=int(ef)))
        params = {"vector": vector_literal(vector), "tenant": tenant, "model": model}
        rows = (await conn.execute(_NEAREST, {**params, "limit": limit})).all()
        if len(rows) < limit:
            # Fewer than asked: either the tenant has no more, or other tenants' vectors
            # took the index's candidates. The exact ranking tells them apart.
            rows = (await conn.execute(_EXACT, {**params, "limit": limit})).all()
        return [candidate(row) for row in rows]


# -- exact, in this process --------------------------------------------------------------

_FINGERPRINT = text(
    "SELECT count(*) AS n, coalesce(max(id), 0) AS last FROM chunks "
    "WHERE tenant = :tenant AND embedding_model = :model"
)
_NEWER = text(
    "SELECT id, document_id, embedding FROM chunks "
    "WHERE tenant = :tenant AND embedding_model = :model AND id > :after ORDER BY id"
)
_IDS = text("SELECT id FROM chunks WHERE tenant = :tenant AND embedding_model = :model ORDER BY id")


@dataclass
class _Held:
    """One tenant's vectors of one model, as this process last read them."""

    ids: npt.NDArray[np.int64]
    documents: list[uuid.UUID]
    matrix: Vector
    last: int

    @property
    def count(self) -> int:
        return int(self.ids.shape[0])


class ExactSearch:
    """Exact cosine ranking over matrices held in memory (see the module docstring)."""

    def __init__(self, max_vectors: int, dimensions: int) -> None:
        self.max_vectors = max_vectors
        self.dimensions = dimensions
        # Read and written on the event loop only (the ranking threads get one _Held,
        # which is never changed once made): no lock but the one that keeps two
        # requests from refreshing at once.
        self._held: OrderedDict[tuple[str, str], _Held] = OrderedDict()
        self._refresh = asyncio.Lock()

    async def nearest(
        self, conn: AsyncConnection, vector: Vector, *, tenant: str, model: str, limit: int
    ) -> list[Candidate]:
        held = await self._current(conn, tenant, model)
        if held.count == 0:
            return []
        return await anyio.to_thread.run_sync(_rank, held, vector, limit)

    def held_vectors(self) -> int:
        """How many vectors this process holds now (for tests and metrics)."""
        return sum(held.count for held in self._held.values())

    async def _current(self, conn: AsyncConnection, tenant: str, model: str) -> _Held:
        key = (tenant, model)
        params = {"tenant": tenant, "model": model}
        found = (await conn.execute(_FINGERPRINT, params)).one()
        count, last = int(found.n), int(found.last)
        if count > self.max_vectors:
            raise SemanticSearchUnavailable(
                f"semantic search without pgvector holds at most {self.max_vectors} vectors "
                f"in memory and this tenant has {count}; install pgvector in the database "
                "(then run `pipeline db upgrade`) or raise PIPELINE_SEARCH_EXACT_MAX_VECTORS"
            )
        held = self._held.get(key)
        if held is not None and (held.count, held.last) == (count, last):
            self._held.move_to_end(key)
            return held
        async with self._refresh:
            held = self._held.get(key)
            if held is not None and held.last > last:
                # What is held was read from a newer snapshot than this search's (the
                # search reads one snapshot: ``search.service``): this search gets its
                # own snapshot's vectors, and what is held stays as it is.
                return await self._refreshed(conn, params, None, count)
            view = await self._refreshed(conn, params, held, count)
            if view.count != count:
                # Ids are taken at insert and committed in any order, so a chunk with
                # an id below what was held may have committed since: read afresh.
                view = await self._refreshed(conn, params, None, count)
            self._held[key] = view
            self._held.move_to_end(key)
            self._evict(keep=key)
            return view

    async def _refreshed(
        self, conn: AsyncConnection, params: dict[str, Any], held: _Held | None, count: int
    ) -> _Held:
        if held is None:
            held = _Held(
                np.empty(0, dtype=np.int64), [], np.empty((0, self.dimensions), np.float32), 0
            )
        rows = (await conn.execute(_NEWER, {**params, "after": held.last})).all()
        if rows:
            matrix = np.asarray([row.embedding for row in rows], dtype=np.float32)
            if matrix.shape[1] != self.dimensions:
                raise SemanticSearchUnavailable(
                    f"stored vectors have {matrix.shape[1]} dimensions, the model "
                    f"{self.dimensions}: re-run the documents from the embed stage"
                )
            held = _Held(
                np.concatenate([held.ids, np.asarray([row.id for row in rows], np.int64)]),
                held.documents + [_uuid(row.document_id) for row in rows],
                np.concatenate([held.matrix, matrix]),
                int(rows[-1].id),
            )
        if held.count != count:  # chunks were deleted since: keep those still there
            present = np.asarray((await conn.execute(_IDS, params)).scalars().all(), np.int64)
            keep = np.isin(held.ids, present)
            held = _Held(
                held.ids[keep],
                [d for d, k in zip(held.documents, keep.tolist(), strict=True) if k],
                held.matrix[keep],
                held.last,
            )
        return held

    def _evict(self, *, keep: tuple[str, str]) -> None:
        total = sum(held.count for held in self._held.values())
        for key in list(self._held):
            if total <= self.max_vectors:
                break
            if key != keep:
                total -= self._held.pop(key).count


def _rank(held: _Held, vector: Vector, limit: int) -> list[Candidate]:
    scores = held.matrix @ vector.astype(np.float32)
    if limit < scores.shape[0]:
        top = np.argpartition(-scores, limit - 1)[:limit]
    else:
        top = np.arange(scores.shape[0])
    order = sorted(top.tolist(), key=lambda i: (-float(scores[i]), int(held.ids[i])))
    return [Candidate(int(held.ids[i]), held.documents[i], float(scores[i])) for i in order]


def _uuid(value: object) -> uuid.UUID:
    return value if isinstance(value, uuid.UUID) else uuid.UUID(str(value))
