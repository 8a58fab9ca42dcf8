"""A deterministic stand-in for a model tokenizer.

Chunk sizes are budgets in *tokens* because that is what embedding models limit.
Until a real model's tokenizer is wired in, a token is a run of up to
:data:`MAX_TOKEN_CHARS` word characters or a single other non-space character
(``\\w{1,64}|[^\\w\\s]``). It is fast, has no dependencies, never changes between
versions, and roughly tracks subword tokenizers on English prose (they split long
words further, so leave headroom).

The cap on a token's length is what keeps a chunk's size in characters bounded: a
subword tokenizer cuts a long line without spaces into many tokens, and so does this
one, so the chunker cuts it into windows like any long sentence instead of emitting
the whole line as one "token" and one chunk.
"""

from __future__ import annotations

import re
from typing import Final

MAX_TOKEN_CHARS: Final = 64
"""Longer runs of word characters count as several tokens (a SHA-256 in hex is one)."""
TOKEN_PATTERN: Final = re.compile(rf"\w{{1,{MAX_TOKEN_CHARS}}}|[^\w\s]")


def tokenize(text: str) -> list[str]:
    """The tokens of ``text``, in order."""
    return TOKEN_PATTERN.findall(text)


def token_spans(text: str) -> list[tuple[int, int]]:
    """``(start, end)`` character offsets of each token in ``text``."""
    return [match.span() for match in TOKEN_PATTERN.finditer(text)]


def count_tokens(text: str) -> int:
    """How many tokens ``text`` has."""
    return sum(1 for _ in TOKEN_PATTERN.finditer(text))
