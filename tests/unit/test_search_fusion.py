"""Reciprocal-rank fusion and collapsing to documents, on hand-made lists."""

from __future__ import annotations

import uuid

import pytest

from pipeline.search.fusion import (
    Candidate,
    best_per_document,
    reciprocal_rank_fusion,
    single,
)

A, B, C = (uuid.UUID(int=i) for i in (1, 2, 3))


def test_fusion_sums_reciprocal_ranks() -> None:
    lexical = [Candidate(10, A, 9.0), Candidate(20, B, 5.0), Candidate(30, C, 1.0)]
    semantic = [Candidate(30, C, 0.9), Candidate(10, A, 0.8)]
    fused = reciprocal_rank_fusion({"lexical": lexical, "semantic": semantic})
    # chunk 10: 1/61 + 1/62 = 0.032522; chunk 30: 1/63 + 1/61 = 0.032266; chunk 20: 1/62
    assert [f.chunk_id for f in fused] == [10, 30, 20]
    assert fused[0].score == pytest.approx(1 / 61 + 1 / 62)
    assert fused[1].score == pytest.approx(1 / 63 + 1 / 61)
    assert fused[2].score == pytest.approx(1 / 62)
    assert fused[0].ranks == {"lexical": 1, "semantic": 2}
    assert fused[2].ranks == {"lexical": 2}


def test_ties_go_to_the_better_best_rank_then_the_lower_id() -> None:
    # 7 is first in one list and third in the other; 8 is second in both: 1/61 + 1/63
    # is a little more than 2/62, so 7 wins on the sum, not on a tie.
    fused = reciprocal_rank_fusion(
        {
            "lexical": [Candidate(7, A, 3), Candidate(8, B, 2), Candidate(9, C, 1)],
            "semantic": [Candidate(9, C, 3), Candidate(8, B, 2), Candidate(7, A, 1)],
        }
    )
    assert [f.chunk_id for f in fused] == [7, 9, 8]
    # An exact tie: the same sums, the same best rank: the lower chunk id first.
    tied = reciprocal_rank_fusion(
        {"lexical": [Candidate(5, A, 1)], "semantic": [Candidate(4, B, 1)]}
    )
    assert [f.chunk_id for f in tied] == [4, 5]
    # The order of the lists never matters.
    swapped = reciprocal_rank_fusion(
        {"semantic": [Candidate(4, B, 1)], "lexical": [Candidate(5, A, 1)]}
    )
    assert [f.chunk_id for f in swapped] == [4, 5]


def test_best_chunk_per_document_keeps_list_order() -> None:
    found = [Candidate(1, A, 5), Candidate(2, B, 4), Candidate(3, A, 3), Candidate(4, C, 2)]
    assert [c.chunk_id for c in best_per_document(found)] == [1, 2, 4]


def test_a_single_list_keeps_its_scores() -> None:
    fused = single("semantic", [Candidate(1, A, 0.9), Candidate(2, B, 0.5)])
    assert [(f.chunk_id, f.score, f.ranks) for f in fused] == [
        (1, 0.9, {"semantic": 1}),
        (2, 0.5, {"semantic": 2}),
    ]


def test_by_document_one_item_whichever_chunk_each_list_ranked() -> None:
    """Collapsed lists may rank different chunks of one document: it is still one item,
    with both lists' ranks, shown by the chunk of the list that ranked it best."""
    lexical = [Candidate(11, A, 9), Candidate(21, B, 5)]  # A's chunk 11, B's chunk 21
    semantic = [Candidate(22, B, 0.9), Candidate(12, A, 0.8)]  # other chunks of the same
    by_chunk = reciprocal_rank_fusion({"lexical": lexical, "semantic": semantic})
    assert len(by_chunk) == 4  # what a chunk-level fusion does with them
    fused = reciprocal_rank_fusion({"lexical": lexical, "semantic": semantic}, by_document=True)
    assert [(f.document_id, f.chunk_id) for f in fused] == [(A, 11), (B, 22)]
    assert fused[0].ranks == {"lexical": 1, "semantic": 2}
    assert fused[0].score == pytest.approx(1 / 61 + 1 / 62)
