"""Hashing embedder: determinism, geometry, batching, and a golden fixture."""

from __future__ import annotations

import json
import math

import pytest
from tests.support.golden import FIXTURES, check_json

from pipeline.embedding import Embedder, HashingEmbedder, embed_batched

TEXTS = [
    "The heron waited by the river at dawn.",
    "At dawn a heron waited near the river.",
    "Quarterly revenue grew by twelve percent.",
    "",
    "!!!",
]


def _cosine(a: list[float], b: list[float]) -> float:
    return sum(x * y for x, y in zip(a, b, strict=True))


def test_is_an_embedder() -> None:
    embedder: Embedder = HashingEmbedder(64)
    assert embedder.name == "hashing-v1-64"
    assert embedder.dimensions == 64
    assert embedder.semantic is False


def test_deterministic_across_instances() -> None:
    assert HashingEmbedder().embed(TEXTS) == HashingEmbedder().embed(list(TEXTS))


def test_dimensions_and_unit_norm() -> None:
    vectors = HashingEmbedder(128).embed(TEXTS)
    assert [len(v) for v in vectors] == [128] * len(TEXTS)
    for vector in vectors[:3]:
        assert math.isclose(math.sqrt(sum(x * x for x in vector)), 1.0, rel_tol=1e-12)


def test_text_without_words_is_the_zero_vector() -> None:
    empty, punctuation = HashingEmbedder(32).embed(["", "!!! ..."])
    assert empty == [0.0] * 32
    assert punctuation == [0.0] * 32


def test_case_is_ignored() -> None:
    lower, upper = HashingEmbedder().embed(["river heron", "RIVER Heron"])
    assert lower == upper


def test_similar_texts_are_closer_than_unrelated_ones() -> None:
    heron, heron_again, revenue = HashingEmbedder().embed(TEXTS[:3])
    assert _cosine(heron, heron_again) > 0.5
    assert _cosine(heron, heron_again) > _cosine(heron, revenue) + 0.3


def test_batched_equals_unbatched() -> None:
    embedder = HashingEmbedder(64)
    texts = [f"text number {n} about rivers" for n in range(10)]
    batches = list(embed_batched(embedder, texts, 3))
    assert [len(batch) for batch in batches] == [3, 3, 3, 1]
    assert [v for batch in batches for v in batch] == embedder.embed(texts)
    assert list(embed_batched(embedder, [], 3)) == []


def test_invalid_arguments() -> None:
    with pytest.raises(ValueError, match="dimensions"):
        HashingEmbedder(0)
    with pytest.raises(ValueError, match="batch_size"):
        embed_batched(HashingEmbedder(), ["x"], 0)


def test_golden_vectors() -> None:
    spec = json.loads((FIXTURES / "embed" / "golden.json").read_text("utf-8"))
    embedder = HashingEmbedder(spec["dimensions"])
    vectors = embedder.embed(spec["texts"])
    actual = {
        "name": embedder.name,
        "vectors": [[round(x, 6) for x in v[: spec["components"]]] for v in vectors],
    }
    check_json(FIXTURES / "embed" / "golden.expected.json", actual)
