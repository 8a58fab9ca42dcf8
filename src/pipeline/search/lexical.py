"""BM25 in plain SQL, over the postings that the chunk triggers derive from ``chunks.tsv``.

The query's terms are its lexemes under the same text-search configuration as the
chunks (stemmed, stop words dropped), OR-ed: a chunk scores for every query term it
holds, weighted by how rare the term is in the tenant's chunks. For a chunk ``c``:

    score(c) = Σ_t idf(t) * tf(t, c) * (k1 + 1) / (tf(t, c) + k1 * (1 - b + b * |c| / avg|c|))
    idf(t)   = ln(1 + (N - df(t) + 0.5) / (df(t) + 0.5))

with ``N`` the tenant's chunks and ``avg|c|`` their mean length (from
``search_totals``), and ``df(t)`` the postings of ``t`` in the tenant (counted from the
same index scan that reads them). Every statistic is the tenant's own: one tenant's
documents never change another's scores. ``k1`` and ``b`` are Anserini's BEIR settings.
"""

from __future__ import annotations

from typing import Final

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection

from pipeline.db.models import TEXT_SEARCH_CONFIG
from pipeline.search.fusion import Candidate, candidate

K1: Final = 0.9
B: Final = 0.4

_BM25 = text(
    """
WITH terms AS (
    SELECT DISTINCT lexeme AS term
    FROM unnest(to_tsvector(CAST(:config AS regconfig), :query))
),
totals AS (
    SELECT coalesce(sum(chunks), 0)::float8 AS n,
           coalesce(sum(length), 0)::float8 / greatest(coalesce(sum(chunks), 0), 1) AS mean
    FROM search_totals WHERE tenant = :tenant
),
postings AS (
    SELECT p.chunk_id, p.tf, p.length, count(*) OVER (PARTITION BY p.term) AS df
    FROM terms AS t JOIN chunk_terms AS p ON p.tenant = :tenant AND p.term = t.term
),
scored AS (
    SELECT p.chunk_id,
           sum(ln(1 + greatest(o.n - p.df + 0.5, 0.5) / (p.df + 0.5))
               * p.tf * (CAST(:k1 AS float8) + 1)
               / (p.tf + CAST(:k1 AS float8) * (1 - CAST(:b AS float8)
                  + CAST(:b AS float8) * p.length / greatest(o.mean, 1)))) AS score
    FROM postings AS p CROSS JOIN totals AS o
    GROUP BY p.chunk_id
    ORDER BY score DESC, p.chunk_id
    LIMIT :limit
)
SELECT s.chunk_id, c.document_id, s.score
FROM scored AS s JOIN chunks AS c ON c.id = s.chunk_id
ORDER BY s.score DESC, s.chunk_id
"""
)


async def bm25(conn: AsyncConnection, query: str, *, tenant: str, limit: int) -> list[Candidate]:
    """The tenant's ``limit`` best chunks for ``query`` by BM25, best first."""
    params = {
        "config": TEXT_SEARCH_CONFIG,
        "query": query,
        "tenant": tenant,
        "limit": limit,
        "k1": K1,
        "b": B,
    }
    rows = (await conn.execute(_BM25, params)).all()
    return [candidate(row) for row in rows]
