"""Detect the language of a text from its most frequent function words.

Pure and deterministic: the same text always gets the same answer. Good enough to
route or filter documents by language; a deployment wanting more would call a model
here, the same way.
"""

from __future__ import annotations

import re
from collections import Counter
from typing import Final

import msgspec

STOPWORDS: Final[dict[str, frozenset[str]]] = {
    "en": frozenset(
        (
            "the",
            "and",
            "of",
            "to",
            "in",
            "is",
            "that",
            "it",
            "for",
            "was",
            "on",
            "are",
            "with",
            "as",
            "be",
            "by",
            "this",
            "at",
            "from",
            "or",
            "have",
            "an",
        )
    ),
    "de": frozenset(
        (
            "der",
            "die",
            "und",
            "das",
            "ist",
            "nicht",
            "ein",
            "eine",
            "zu",
            "den",
            "mit",
            "von",
            "sich",
            "auf",
            "für",
            "dem",
            "des",
            "im",
            "auch",
        )
    ),
    "fr": frozenset(
        (
            "le",
            "la",
            "les",
            "et",
            "des",
            "est",
            "un",
            "une",
            "du",
            "en",
            "que",
            "pour",
            "dans",
            "qui",
            "sur",
            "pas",
            "au",
            "avec",
            "ce",
            "sont",
        )
    ),
    "es": frozenset(
        (
            "el",
            "la",
            "los",
            "las",
            "y",
            "de",
            "que",
            "en",
            "un",
            "una",
            "es",
            "por",
            "para",
            "con",
            "del",
            "se",
            "no",
            "al",
            "lo",
            "como",
            "más",
        )
    ),
}
WORD: Final = re.compile(r"[^\W\d_]+", re.UNICODE)


class Language(msgspec.Struct, frozen=True):
    code: str
    """ISO 639-1 code, or ``und`` (undetermined) when no language stands out."""
    confidence: float
    """The winner's share of the function words found (0 to 1)."""
    words: int
    """Words looked at."""


class NoWords(ValueError):
    """The text has no words at all."""


def detect(text: str, sample: int = 20_000) -> Language:
    words = [word.lower() for word in WORD.findall(text[:sample])]
    if not words:
        raise NoWords("the text has no words to detect a language from")
    counts = Counter(words)
    hits = {code: sum(counts[word] for word in stopwords) for code, stopwords in STOPWORDS.items()}
    total = sum(hits.values())
    code, best = max(hits.items(), key=lambda item: (item[1], item[0]))
    if total == 0 or best / total < 0.5:
        return Language(code="und", confidence=0.0, words=len(words))
    return Language(code=code, confidence=round(best / total, 3), words=len(words))
