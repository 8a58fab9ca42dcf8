"""Tokenizer and chunker: a golden fixture plus properties over varied texts."""

from __future__ import annotations

import json
import random
from itertools import pairwise
from pathlib import Path

import pytest
from tests.support.golden import FIXTURES, case_files, check_json, expected_path

from pipeline.processing.chunk import Chunk, ChunkPolicy, chunk
from pipeline.processing.tokens import count_tokens, token_spans, tokenize

CHUNK_CASES = case_files("chunk", exclude_suffixes=(".policy.json",))


def test_tokenizer() -> None:
    text = "Caf\u00e9's 3.5\u20ac \u2014 ok!"
    assert tokenize(text) == ["Caf\u00e9", "'", "s", "3", ".", "5", "\u20ac", "\u2014", "ok", "!"]
    assert [text[a:b] for a, b in token_spans(text)] == tokenize(text)
    assert count_tokens(text) == 10
    assert count_tokens(" \n\t") == 0


def _policy(case: Path) -> ChunkPolicy:
    raw = json.loads(case.with_name(case.name.split(".")[0] + ".policy.json").read_text())
    return ChunkPolicy(**raw)


@pytest.mark.parametrize("case", CHUNK_CASES, ids=lambda p: p.name)
def test_chunk_fixture(case: Path) -> None:
    text = case.read_text("utf-8")
    chunks = chunk(text, _policy(case))
    check_json(expected_path(case, ".json"), chunks)


def _words(seed: int, count: int) -> str:
    rng = random.Random(seed)
    vocabulary = ["river", "bird", "heron", "counted", "the", "a", "morning", "team", "(quiet)"]
    out: list[str] = []
    for index in range(count):
        word = rng.choice(vocabulary)
        out.append(word)
        roll = rng.random()
        if roll < 0.08:
            out.append(rng.choice([".", "!", "?", "\u2026", '."', ".)"]) + " ")
            out.append(rng.choice(["The", "A", "Birds", "e.g."]))
        elif roll < 0.11 and index:
            out.append(".\n\n")
            out.append("Next")
    return " ".join(out)


def _texts() -> list[str]:
    long_text = (FIXTURES / "chunk" / "long.txt").read_text("utf-8")
    extracted = sorted((FIXTURES / "extract").glob("*.expected.txt"))
    return [
        long_text,
        *(path.read_text("utf-8") for path in extracted),
        " ".join(["word"] * 1000),  # one giant sentence without punctuation
        "Short.",
        "!!! ??? ...",
        "\n\n  \n\nlead and trail  \n\n",
        *(_words(seed, 50 + 37 * seed) for seed in range(12)),
    ]


POLICIES = [ChunkPolicy(), ChunkPolicy(8, 0), ChunkPolicy(8, 3), ChunkPolicy(30, 14)]


def _check_properties(text: str, chunks: list[Chunk], policy: ChunkPolicy) -> None:
    assert [c.ordinal for c in chunks] == list(range(len(chunks)))
    for c in chunks:
        assert c.text == text[c.start : c.end]
        assert c.text == c.text.strip()
        assert c.token_count == count_tokens(c.text)
        assert 0 < c.token_count <= policy.target_tokens
    for before, after in pairwise(chunks):
        assert after.start > before.start  # never repeats a whole chunk
        assert after.end > before.end  # always makes progress
        overlap = count_tokens(text[after.start : before.end]) if after.start < before.end else 0
        assert overlap <= policy.overlap_tokens
    spans = token_spans(text)
    covered = 0
    for start, end in spans:
        assert any(c.start <= start and end <= c.end for c in chunks), text[start:end]
        covered += 1
    assert covered == len(spans)


@pytest.mark.parametrize("policy", POLICIES, ids=repr)
def test_chunk_properties(policy: ChunkPolicy) -> None:
    for text in _texts():
        chunks = chunk(text, policy)
        _check_properties(text, chunks, policy)
        assert chunk(text, policy) == chunks  # deterministic


def test_overlap_carries_trailing_sentences() -> None:
    text = " ".join(f"Sentence number {n} is here." for n in range(20))  # 6 tokens each
    chunks = chunk(text, ChunkPolicy(target_tokens=24, overlap_tokens=6))
    assert chunks[0].text.endswith("Sentence number 3 is here.")
    assert chunks[1].text.startswith("Sentence number 3 is here.")


def test_paragraph_boundary_is_preferred_once_half_full() -> None:
    first = "Alpha beta gamma delta. " * 3  # 15 tokens
    second = "Epsilon zeta eta theta. " * 3
    text = first.strip() + "\n\n" + second.strip()
    chunks = chunk(text, ChunkPolicy(target_tokens=24, overlap_tokens=0))
    assert [c.text for c in chunks] == [first.strip(), second.strip()]


def test_small_paragraphs_are_packed_together() -> None:
    text = "One two.\n\nThree four.\n\nFive six."
    assert [c.text for c in chunk(text, ChunkPolicy(target_tokens=50, overlap_tokens=10))] == [text]


def test_long_sentence_is_split_into_even_windows() -> None:
    text = " ".join(f"w{n}" for n in range(25))
    chunks = chunk(text, ChunkPolicy(target_tokens=10, overlap_tokens=0))
    assert [c.token_count for c in chunks] == [9, 8, 8]


def test_blank_text_has_no_chunks() -> None:
    assert chunk("", ChunkPolicy()) == []
    assert chunk(" \n\n\t ", ChunkPolicy()) == []


@pytest.mark.parametrize(("target", "overlap"), [(7, 0), (8, 4), (100, 50), (100, -1)])
def test_policy_validation(target: int, overlap: int) -> None:
    with pytest.raises(ValueError, match="tokens"):
        ChunkPolicy(target_tokens=target, overlap_tokens=overlap)
