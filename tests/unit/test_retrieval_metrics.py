"""The retrieval benchmark's metrics on hand-made rankings, against values worked out by hand.

``bench/retrieval_metrics.py`` is loaded by path (bench/ is not a package), so the
benchmark and these tests share one copy of it.
"""

from __future__ import annotations

import pytest
from tests.support.bench_modules import load_bench

m = load_bench("retrieval_metrics.py")

# 1 / log2(3), the discount at rank 2: 0.6309298
# ideal DCG of two relevant documents: 1 + 0.6309298 = 1.6309298


def test_a_single_relevant_document_first_is_perfect() -> None:
    assert m.ndcg_at_k(["a", "x", "y"], {"a"}) == 1.0
    assert m.recall_at_k(["a", "x", "y"], {"a"}) == 1.0


def test_a_single_relevant_document_third() -> None:
    # DCG = 1 / log2(4) = 0.5; ideal = 1
    assert m.ndcg_at_k(["x", "y", "a"], {"a"}) == pytest.approx(0.5)


def test_two_relevant_documents_first_and_third() -> None:
    # DCG = 1 + 1/log2(4) = 1.5; ideal = 1.6309298; nDCG = 0.9197208
    assert m.ndcg_at_k(["a", "x", "b"], {"a", "b"}) == pytest.approx(0.9197208, abs=1e-6)
    assert m.recall_at_k(["a", "x", "b"], {"a", "b"}) == 1.0
    assert m.recall_at_k(["a", "x", "b"], {"a", "b"}, k=2) == 0.5


def test_two_relevant_documents_one_second_one_missed() -> None:
    # DCG = 1/log2(3) = 0.6309298; ideal = 1.6309298; nDCG = 0.3868528
    ranking = ["x", "a", "y", "z"]
    assert m.ndcg_at_k(ranking, {"a", "b"}) == pytest.approx(0.3868528, abs=1e-6)
    assert m.recall_at_k(ranking, {"a", "b"}) == 0.5


def test_a_complete_miss_scores_zero() -> None:
    assert m.ndcg_at_k(["x", "y"], {"a"}) == 0.0
    assert m.recall_at_k(["x", "y"], {"a"}) == 0.0
    assert m.ndcg_at_k([], {"a"}) == 0.0
    assert m.recall_at_k([], {"a"}) == 0.0


def test_only_the_top_k_counts() -> None:
    ranking = [f"x{i}" for i in range(10)] + ["a"]  # the relevant one at rank 11
    assert m.ndcg_at_k(ranking, {"a"}, k=10) == 0.0
    # DCG@11 = 1/log2(12) = 0.2789429
    assert m.ndcg_at_k(ranking, {"a"}, k=11) == pytest.approx(0.2789429, abs=1e-6)
    assert m.recall_at_k(ranking, {"a"}, k=10) == 0.0
    assert m.recall_at_k(ranking, {"a"}, k=100) == 1.0


def test_the_ideal_is_capped_at_k_relevant_documents() -> None:
    # 3 relevant, k=2: ideal = 1 + 0.6309298; ranking finds two of them in the top 2
    assert m.ndcg_at_k(["a", "b", "c"], {"a", "b", "c"}, k=2) == 1.0
    assert m.recall_at_k(["a", "b", "c"], {"a", "b", "c"}, k=2) == pytest.approx(2 / 3)


def test_a_document_ranked_twice_counts_once_at_its_best_rank() -> None:
    # unique: ["x", "a", "b"]: DCG = 0.6309298 + 0.5 = 1.1309298; ideal 1.6309298 → 0.6934264
    ranking = ["x", "a", "a", "b"]
    assert m.unique(ranking) == ["x", "a", "b"]
    assert m.ndcg_at_k(ranking, {"a", "b"}) == pytest.approx(0.6934264, abs=1e-6)
    assert m.recall_at_k(ranking, {"a", "b"}, k=3) == 1.0


def test_a_query_without_judgements_is_refused() -> None:
    with pytest.raises(m.MetricsError):
        m.ndcg_at_k(["a"], set())
    with pytest.raises(m.MetricsError):
        m.recall_at_k(["a"], set())
    with pytest.raises(m.MetricsError):
        m.ndcg_at_k(["a"], {"a"}, k=0)


def test_percentiles_interpolate_between_ranks() -> None:
    values = [40.0, 10.0, 30.0, 20.0]
    assert m.percentile(values, 50) == 25.0
    # position (4 - 1) * 0.95 = 2.85: 30 + 0.85 * (40 - 30)
    assert m.percentile(values, 95) == pytest.approx(38.5)
    assert m.percentile(values, 0) == 10.0
    assert m.percentile(values, 100) == 40.0
    assert m.percentile([7.0], 95) == 7.0
    with pytest.raises(m.MetricsError):
        m.percentile([], 50)
    with pytest.raises(m.MetricsError):
        m.percentile(values, 101)


def test_summary_averages_queries_and_counts_the_ones_without_hits() -> None:
    results = [
        m.QueryResult("q1", ndcg_at_10=1.0, recall_at_100=1.0, latency_ms=10.0, hits=5),
        m.QueryResult("q2", ndcg_at_10=0.5, recall_at_100=0.5, latency_ms=30.0, hits=2),
        m.QueryResult("q3", ndcg_at_10=0.0, recall_at_100=0.0, latency_ms=20.0, hits=0),
    ]
    summary = m.summarise("lexical", results)
    assert summary.mode == "lexical"
    assert summary.queries == 3
    assert summary.ndcg_at_10 == pytest.approx(0.5)
    assert summary.recall_at_100 == pytest.approx(0.5)
    assert summary.p50_ms == 20.0
    assert summary.p95_ms == pytest.approx(29.0)  # position 1.9: 20 + 0.9 * 10
    assert summary.queries_without_hits == 1
    with pytest.raises(m.MetricsError):
        m.summarise("lexical", [])


def test_qrels_with_a_header_and_a_zero_score() -> None:
    lines = ["query-id\tcorpus-id\tscore", "1\t10\t1", "1\t11\t1", "2\t20\t0", "3\t30\t2", ""]
    assert m.parse_qrels(lines) == {"1": {"10", "11"}, "3": {"30"}}


def test_qrels_without_a_header() -> None:
    assert m.parse_qrels(["5\t50\t1"]) == {"5": {"50"}}


def test_malformed_qrels_are_refused_with_the_line_number() -> None:
    with pytest.raises(m.MetricsError, match="line 2"):
        m.parse_qrels(["1\t10\t1", "1 10 1"])
    with pytest.raises(m.MetricsError, match="line 1"):
        m.parse_qrels(["1\t10\tyes"])
