"""The retrieval benchmark's scoring: pure functions over rankings, judgements and latencies.

Kept apart from ``bench/retrieval.py`` (processes, HTTP, the database) so that every
number the benchmark reports comes from code checked on hand-made rankings with
hand-computed values (``tests/unit/test_retrieval_metrics.py``). The definitions are
the usual BEIR/TREC ones, so the figures compare with published SciFact results:

- nDCG@k with binary gains (a judged document is relevant, any other is not), a
  ``log2(rank + 1)`` discount, and the ideal ranking built from the judgements (all
  relevant documents first, at most k of them);
- Recall@k: the share of a query's relevant documents found in its top k;
- latency percentiles by linear interpolation between the closest ranks (numpy's
  default), so p50 of an even number of samples is the mean of the middle two.
"""

from __future__ import annotations

import math
from collections.abc import Collection, Iterable, Sequence

import msgspec

from pipeline.errors import PipelineError


class MetricsError(PipelineError):
    """Input a metric is undefined on: a query without judgements, no samples, bad qrels."""


class QueryResult(msgspec.Struct, frozen=True):
    """One query's scores in one search mode."""

    query_id: str
    ndcg_at_10: float
    recall_at_100: float
    latency_ms: float
    hits: int


class ModeSummary(msgspec.Struct, frozen=True):
    """A mode's scores over every query: means of the per-query metrics, latency percentiles."""

    mode: str
    queries: int
    ndcg_at_10: float
    recall_at_100: float
    p50_ms: float
    p95_ms: float
    queries_without_hits: int


def unique(ids: Iterable[str]) -> list[str]:
    """Each id once, at its first (best) rank: a document returned twice (two of its chunks,
    or two uploads of one corpus file) must not be counted twice."""
    return list(dict.fromkeys(ids))


def ndcg_at_k(ranking: Sequence[str], relevant: Collection[str], k: int = 10) -> float:
    """nDCG@k of ``ranking`` (best first) against the set of relevant ids."""
    _check(relevant, k)
    top = unique(ranking)[:k]
    dcg = math.fsum(1.0 / math.log2(rank + 2) for rank, doc in enumerate(top) if doc in relevant)
    ideal = math.fsum(1.0 / math.log2(rank + 2) for rank in range(min(k, len(relevant))))
    return dcg / ideal


def recall_at_k(ranking: Sequence[str], relevant: Collection[str], k: int = 100) -> float:
    """Share of the relevant ids that appear in the first k of ``ranking``."""
    _check(relevant, k)
    found = set(unique(ranking)[:k]) & set(relevant)
    return len(found) / len(set(relevant))


def percentile(values: Sequence[float], q: float) -> float:
    """The q-th percentile (0..100) of ``values``, interpolating between closest ranks."""
    if not values:
        raise MetricsError("a percentile of no values is undefined")
    if not 0 <= q <= 100:
        raise MetricsError(f"percentile {q} is outside 0..100")
    ordered = sorted(values)
    position = (len(ordered) - 1) * q / 100
    lower = math.floor(position)
    upper = min(lower + 1, len(ordered) - 1)
    return ordered[lower] + (ordered[upper] - ordered[lower]) * (position - lower)


def summarise(mode: str, results: Sequence[QueryResult]) -> ModeSummary:
    """Mean nDCG@10 and Recall@100, p50/p95 latency and the count of queries with no hit."""
    if not results:
        raise MetricsError(f"mode {mode!r} has no query results to summarise")
    latencies = [r.latency_ms for r in results]
    return ModeSummary(
        mode=mode,
        queries=len(results),
        ndcg_at_10=math.fsum(r.ndcg_at_10 for r in results) / len(results),
        recall_at_100=math.fsum(r.recall_at_100 for r in results) / len(results),
        p50_ms=percentile(latencies, 50),
        p95_ms=percentile(latencies, 95),
        queries_without_hits=sum(1 for r in results if r.hits == 0),
    )


def parse_qrels(lines: Iterable[str]) -> dict[str, set[str]]:
    """BEIR qrels (``query-id<TAB>corpus-id<TAB>score``, an optional header line) as the set
    of relevant corpus ids per query; a score of 0 or less judges a document not relevant."""
    relevant: dict[str, set[str]] = {}
    for number, line in enumerate(lines, start=1):
        fields = line.strip().split("\t")
        if fields == [""] or (number == 1 and fields[0] == "query-id"):
            continue
        if len(fields) != 3:
            raise MetricsError(f"qrels line {number}: expected 3 tab-separated fields: {line!r}")
        query_id, corpus_id, score = fields
        try:
            judged_relevant = int(score) > 0
        except ValueError:
            raise MetricsError(f"qrels line {number}: score {score!r} is not an integer") from None
        if judged_relevant:
            relevant.setdefault(query_id, set()).add(corpus_id)
    return relevant


def _check(relevant: Collection[str], k: int) -> None:
    if not relevant:
        raise MetricsError("a query without relevant documents has no nDCG or recall")
    if k < 1:
        raise MetricsError(f"k must be at least 1, not {k}")
