"""Split extracted text into overlapping, token-bounded chunks for embedding.

Retrieval quality depends on chunks being coherent (whole sentences, ideally
whole paragraphs) and small enough for the embedding model, and on context not
being lost at chunk edges. So:

1. Paragraphs are the blocks between blank lines (the extraction convention).
2. Paragraphs are split into sentences after ``.``, ``!``, ``?`` or ``…`` (plus
   any closing quotes or brackets) followed by whitespace, unless the next word
   starts in lower case ("e.g. this" is one sentence). A sentence longer than the
   target is cut into near-equal token windows, none longer than the target.
3. Units (sentences or windows) are packed greedily up to ``target_tokens``. At a
   paragraph boundary, once the chunk is at least half full, the chunk ends there
   unless the whole next paragraph still fits, so paragraphs are split only when
   they must be.
4. Each chunk after the first starts with the trailing whole units of the previous
   chunk that fit in ``overlap_tokens`` (and leave room for new text), never with
   the previous chunk's first unit, so every chunk adds new text.

Offsets index the input string (``text == source[start:end]``); ordinals start at
0. Tokens are those of :mod:`pipeline.processing.tokens`.
"""

from __future__ import annotations

import re
from array import array
from bisect import bisect_left
from typing import Final, NamedTuple

import msgspec

from pipeline.processing.tokens import TOKEN_PATTERN

_PARAGRAPH_BREAK: Final = re.compile(r"\n\s*\n")
# Sentence-final punctuation, closing quotes/brackets, then whitespace; group 1
# captures the first character of the next sentence.
# The lookbehind and possessive quantifiers keep long runs ("......") linear.
_SENTENCE_END: Final = re.compile(
    r"(?<![.!?\u2026])[.!?\u2026]++[\"'\u201d\u2019\u00bb)\]]*+(?=\s+(\S))"
)


class ChunkPolicy(msgspec.Struct, frozen=True):
    """Chunk size budget in tokens. ``target_tokens >= 8``, ``0 <= overlap < target/2``."""

    target_tokens: int = 200
    overlap_tokens: int = 40

    def __post_init__(self) -> None:
        if self.target_tokens < 8:
            raise ValueError("target_tokens must be at least 8")
        if self.overlap_tokens < 0 or 2 * self.overlap_tokens >= self.target_tokens:
            raise ValueError("overlap_tokens must be >= 0 and less than half of target_tokens")


class Chunk(msgspec.Struct, frozen=True):
    """One chunk: ``text == source[start:end]``, with ``token_count`` tokens."""

    ordinal: int
    start: int
    end: int
    text: str
    token_count: int


class _Unit(NamedTuple):
    start: int
    end: int
    tokens: int
    paragraph: int


def _paragraphs(text: str) -> list[tuple[int, int]]:
    """Spans of the paragraphs, trimmed of surrounding whitespace."""
    spans: list[tuple[int, int]] = []
    position = 0
    for separator in [*_PARAGRAPH_BREAK.finditer(text), None]:
        end = separator.start() if separator else len(text)
        segment = text[position:end]
        stripped = segment.strip()
        if stripped:
            start = position + (len(segment) - len(segment.lstrip()))
            spans.append((start, start + len(stripped)))
        position = separator.end() if separator else end
    return spans


def _sentences(text: str, start: int, end: int) -> list[tuple[int, int]]:
    """Spans of the sentences of the paragraph ``text[start:end]``."""
    spans: list[tuple[int, int]] = []
    current = start
    for match in _SENTENCE_END.finditer(text, start, end):
        if match.group(1).islower():
            continue
        spans.append((current, match.end()))
        current = match.start(1)
    spans.append((current, end))
    return spans


class _Tokens:
    """Token offsets of the whole text, for counting and window splitting.

    Kept in two machine-integer arrays (16 bytes a token) rather than a list of
    tuples (about 120 bytes a token): a long document has millions of tokens.
    """

    def __init__(self, text: str) -> None:
        self.starts = array("q")
        self.ends = array("q")
        for match in TOKEN_PATTERN.finditer(text):
            start, end = match.span()
            self.starts.append(start)
            self.ends.append(end)

    def index_range(self, start: int, end: int) -> tuple[int, int]:
        return bisect_left(self.starts, start), bisect_left(self.starts, end)


def _units(text: str, tokens: _Tokens, target: int) -> list[_Unit]:
    units: list[_Unit] = []
    for paragraph, (p_start, p_end) in enumerate(_paragraphs(text)):
        for s_start, s_end in _sentences(text, p_start, p_end):
            first, last = tokens.index_range(s_start, s_end)
            count = last - first
            if count <= target:
                units.append(_Unit(s_start, s_end, count, paragraph))
                continue
            windows = -(-count // target)  # ceil: fewest windows within the target
            base, extra = divmod(count, windows)
            for window in range(windows):
                size = base + (1 if window < extra else 0)
                start = tokens.starts[first]
                units.append(_Unit(start, tokens.ends[first + size - 1], size, paragraph))
                first += size
    return units


def chunk(text: str, policy: ChunkPolicy) -> list[Chunk]:
    """Chunk ``text`` under ``policy`` (see module docstring). Blank text gives ``[]``."""
    tokens = _Tokens(text)
    target = policy.target_tokens
    units = _units(text, tokens, target)
    paragraph_tokens: dict[int, int] = {}
    for unit in units:
        paragraph_tokens[unit.paragraph] = paragraph_tokens.get(unit.paragraph, 0) + unit.tokens

    chunks: list[Chunk] = []
    previous_first = -1
    i = 0
    while i < len(units):
        first = i
        if chunks:
            budget = min(policy.overlap_tokens, target - units[i].tokens)
            carried = 0
            while first - 1 > previous_first and carried + units[first - 1].tokens <= budget:
                first -= 1
                carried += units[first].tokens
        count = sum(unit.tokens for unit in units[first : i + 1])
        j = i + 1
        while j < len(units):
            unit = units[j]
            if count + unit.tokens > target:
                break
            new_paragraph = unit.paragraph != units[j - 1].paragraph
            if (
                new_paragraph
                and 2 * count >= target
                and count + paragraph_tokens[unit.paragraph] > target
            ):
                break
            count += unit.tokens
            j += 1
        start, end = units[first].start, units[j - 1].end
        chunks.append(Chunk(len(chunks), start, end, text[start:end], count))
        previous_first = first
        i = j
    return chunks
