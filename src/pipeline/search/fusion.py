"""Pure ranking: reciprocal-rank fusion of ranked lists, and one hit per document.

Reciprocal-rank fusion (Cormack, Clarke and Büttcher, 2009) scores an item by the sum of
``1 / (k + rank)`` over the lists that hold it: it needs no calibration between BM25
scores and cosine similarities, which live on unrelated scales, and ``k = 60`` keeps
one list's top rank from drowning the other's.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Final, Literal

ListName = Literal["lexical", "semantic"]
RRF_K: Final = 60


@dataclass(frozen=True)
class Candidate:
    """A chunk one list found, with that list's score."""

    chunk_id: int
    document_id: uuid.UUID
    score: float


def candidate(row: Any) -> Candidate:
    """A database row with ``chunk_id``, ``document_id`` and ``score`` as a candidate."""
    document_id = row.document_id
    if not isinstance(document_id, uuid.UUID):
        document_id = uuid.UUID(str(document_id))
    return Candidate(int(row.chunk_id), document_id, float(row.score))


@dataclass(frozen=True)
class Fused:
    """A chunk in the final order: its score, and its rank in each list that found it."""

    chunk_id: int
    document_id: uuid.UUID
    score: float
    ranks: dict[ListName, int] = field(default_factory=dict)


def best_per_document(candidates: Sequence[Candidate]) -> list[Candidate]:
    """Keep each document's first (best) chunk, in the list's order."""
    seen: set[uuid.UUID] = set()
    kept = []
    for candidate in candidates:
        if candidate.document_id not in seen:
            seen.add(candidate.document_id)
            kept.append(candidate)
    return kept


def single(name: ListName, candidates: Sequence[Candidate]) -> list[Fused]:
    """One list as the final order, keeping its own scores."""
    return [
        Fused(c.chunk_id, c.document_id, c.score, {name: rank})
        for rank, c in enumerate(candidates, start=1)
    ]


def reciprocal_rank_fusion(
    lists: Mapping[ListName, Sequence[Candidate]], *, k: int = RRF_K, by_document: bool = False
) -> list[Fused]:
    """Every item of the lists, by the sum of ``1 / (k + rank)`` (ranks from 1).

    Items are chunks, or with ``by_document`` documents: a document is then one item
    whichever of its chunks each list ranked (lists collapsed with
    :func:`best_per_document` first), and it is shown by the chunk of the list that
    ranked it best. Ties (equal sums) go to the item with the better best rank, then
    the lower chunk id, so that the order never depends on the order of the lists.
    """
    scores: dict[object, float] = {}
    ranks: dict[object, dict[ListName, int]] = {}
    shown: dict[object, tuple[int, Candidate]] = {}
    for name in sorted(lists):
        for rank, candidate in enumerate(lists[name], start=1):
            item: object = candidate.document_id if by_document else candidate.chunk_id
            if name in ranks.get(item, {}):
                continue  # a list names an item once; keep its best rank
            scores[item] = scores.get(item, 0.0) + 1.0 / (k + rank)
            ranks.setdefault(item, {})[name] = rank
            if item not in shown or rank < shown[item][0]:
                shown[item] = (rank, candidate)
    order = sorted(
        scores,
        key=lambda item: (-scores[item], min(ranks[item].values()), shown[item][1].chunk_id),
    )
    return [
        Fused(shown[item][1].chunk_id, shown[item][1].document_id, scores[item], ranks[item])
        for item in order
    ]
