"""One search request: the query's vector, the ranked lists, fusion, and the hits.

Lexical and semantic lists are each ``settings.search.candidates`` deep (deeper when collapsing
to documents, so that enough documents remain); hybrid fuses them by reciprocal rank.
The hits are then read with their documents' names and a snippet, in one query (which
also derives the snippet's terms from the query), and only for the chunks returned.
Search statements run with JIT off: compiling them cost about a second here and they are
short.

A search's statements (the lexical list, the semantic list, the hits) run in one
``REPEATABLE READ, READ ONLY`` transaction, so they all read one snapshot: a document
whose chunks are swapped (a replace, a rerun) or erased (a delete) while a hybrid search
runs shows either its old chunks or its new ones in the results, never a mix of both
and never neither. A read-only snapshot takes no locks and never fails to serialize.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Final

import anyio.to_thread
import numpy as np
from sqlalchemy import bindparam, text
from sqlalchemy.dialects.postgresql import ARRAY
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine
from sqlalchemy.types import BigInteger

from pipeline.db.models import TEXT_SEARCH_CONFIG
from pipeline.embedding import Embedder
from pipeline.search import lexical
from pipeline.search.fusion import (
    Candidate,
    Fused,
    ListName,
    best_per_document,
    reciprocal_rank_fusion,
    single,
)
from pipeline.search.results import SearchHit, SearchMode, SearchRequest, SearchResults
from pipeline.search.semantic import SemanticSearchUnavailable, Vector, VectorSearch

logger = logging.getLogger(__name__)

PER_DOCUMENT_DEPTH: Final = 3
"""How many chunks per wanted document a list reads before collapsing to documents."""

_HITS = text(
    """
WITH q AS (
    -- The query's lexemes OR-ed, as tsquery text (quoted: not normalised again); empty
    -- when the query has none (only stop words, say).
    SELECT coalesce(string_agg(quote_literal(lexeme), ' | '), '') AS terms
    FROM unnest(to_tsvector(CAST(:config AS regconfig), :query))
)
SELECT c.id, c.document_id, c.ordinal, d.filename,
       coalesce(
           CASE WHEN q.terms <> '' THEN ts_headline(
               CAST(:config AS regconfig), c.text, CAST(q.terms AS tsquery),
               'MaxFragments=2, MaxWords=24, MinWords=8, StartSel=**, StopSel=**')
           END,
           left(c.text, 200)) AS snippet
FROM q, chunks AS c JOIN documents AS d ON d.id = c.document_id
WHERE c.id = ANY(:ids) AND c.tenant = :tenant
"""
).bindparams(bindparam("ids", type_=ARRAY(BigInteger)))


class SearchService:
    def __init__(
        self,
        engine: AsyncEngine,
        embedder: Embedder,
        vectors: VectorSearch,
        *,
        candidates: int,
    ) -> None:
        self.engine = engine
        self.embedder = embedder
        self.vectors = vectors
        self.candidates = candidates

    @property
    def default_mode(self) -> SearchMode:
        return "hybrid" if self.embedder.semantic else "lexical"

    async def search(self, request: SearchRequest) -> SearchResults:
        """Raises :class:`SemanticSearchUnavailable` for ``semantic`` mode where it is."""
        mode = request.mode or self.default_mode
        depth = max(self.candidates, request.limit)
        if request.per_document:
            depth *= PER_DOCUMENT_DEPTH
        # The query's embedding is computed in a thread while Postgres ranks by BM25.
        embedding = None
        if mode != "lexical":
            embedding = asyncio.ensure_future(anyio.to_thread.run_sync(self._embed, request.query))
        try:
            return await self._search(request, mode, depth, embedding)
        finally:
            if embedding is not None and not embedding.done():
                embedding.cancel()  # an error before it was needed: nobody waits for it

    async def _search(
        self,
        request: SearchRequest,
        mode: SearchMode,
        depth: int,
        embedding: asyncio.Future[Vector] | None,
    ) -> SearchResults:
        warnings: list[str] = []
        lists: dict[ListName, list[Candidate]] = {}
        async with self.engine.connect() as conn:
            # One snapshot for every statement of the search (the module docstring).
            await conn.execution_options(
                isolation_level="REPEATABLE READ", postgresql_readonly=True
            )
            async with conn.begin():
                await conn.exec_driver_sql("SET LOCAL jit = off")
                if mode != "semantic":
                    lists["lexical"] = await lexical.bm25(
                        conn, request.query, tenant=request.tenant, limit=depth
                    )
                if embedding is not None:
                    vector = await embedding
                    try:
                        lists["semantic"] = await self.vectors.nearest(
                            conn,
                            vector,
                            tenant=request.tenant,
                            model=self.embedder.name,
                            limit=depth,
                        )
                    except SemanticSearchUnavailable as error:
                        if mode == "semantic":
                            raise
                        warnings.append(error.reason)
                fused = self._fuse(lists, request)
                hits = await self._hits(conn, fused, request)
        return SearchResults(
            query=request.query,
            mode=mode,
            embedding_model=None if mode == "lexical" else self.embedder.name,
            per_document=request.per_document,
            hits=hits,
            warnings=warnings,
        )

    def _embed(self, query: str) -> Vector:
        return np.asarray(self.embedder.embed([query])[0], dtype=np.float32)

    def _fuse(self, lists: dict[ListName, list[Candidate]], request: SearchRequest) -> list[Fused]:
        if request.per_document:
            lists = {name: best_per_document(found) for name, found in lists.items()}
        lists = {name: found[: self.candidates] for name, found in lists.items()}
        if len(lists) == 1:
            [(name, found)] = lists.items()
            fused = single(name, found)
        else:
            fused = reciprocal_rank_fusion(lists, by_document=request.per_document)
        return fused[: request.limit]

    async def _hits(
        self, conn: AsyncConnection, fused: list[Fused], request: SearchRequest
    ) -> list[SearchHit]:
        if not fused:
            return []
        params = {
            "ids": [f.chunk_id for f in fused],
            "tenant": request.tenant,
            "query": request.query,
            "config": TEXT_SEARCH_CONFIG,
        }
        rows = {row.id: row for row in (await conn.execute(_HITS, params)).all()}
        hits = []
        for item in fused:
            row = rows.get(item.chunk_id)
            if row is None:  # deleted since the lists were read
                continue
            hits.append(
                SearchHit(
                    document_id=row.document_id,
                    filename=row.filename,
                    chunk_ordinal=row.ordinal,
                    snippet=row.snippet,
                    score=round(item.score, 6),
                    found_by=sorted(item.ranks),
                    lexical_rank=item.ranks.get("lexical"),
                    semantic_rank=item.ranks.get("semantic"),
                )
            )
        return hits
