"""A deterministic stand-in for a model tokenizer.

Chunk sizes are budgets in *tokens* because that is what embedding models limit.
Until a real model's tokenizer is wired in, a token is a run of word characters
or a single other non-space character (``\\w+|[^\\w\\s]``). It is fast, has no
dependencies, never changes between versions, and roughly tracks subword
tokenizers on English prose (they split long words further, so leave headroom).
"""

from __future__ import annotations

import re
from typing import Final

TOKEN_PATTERN: Final = re.compile(r"\w+|[^\w\s]")


def tokenize(text: str) -> list[str]:
    """The tokens of ``text``, in order."""
    return TOKEN_PATTERN.findall(text)


def token_spans(text: str) -> list[tuple[int, int]]:
    """``(start, end)`` character offsets of each token in ``text``."""
    return [match.span() for match in TOKEN_PATTERN.finditer(text)]


def count_tokens(text: str) -> int:
    """How many tokens ``text`` has."""
    return sum(1 for _ in TOKEN_PATTERN.finditer(text))
