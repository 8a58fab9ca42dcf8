"""Word-level scoring of extracted text against a reference text: pure functions.

Kept apart from ``bench/extraction.py`` (files, timing, MarkItDown) so that the
quality test (``tests/unit/test_extraction_quality.py``) and the benchmark score with
one copy of the code, checked on hand-made examples in
``tests/unit/test_extraction_metrics.py``. The definitions:

- words: the text NFKC-normalised and lower-cased, then every ``\\w+`` run (Unicode
  letters, digits and the underscore); punctuation, Markdown marks and table bars are
  not words, a list number ("1.") is;
- recall: the share of the reference's words found in the output, as multisets (a word
  the reference has three times and the output twice counts twice): |ref ∩ out| / |ref|;
- precision: the share of the output's words that the reference has: |ref ∩ out| / |out|;
- F1: their harmonic mean;
- a type's figures are micro averages: overlaps and word counts summed over its cases,
  so a long document weighs more than a short one.

An empty reference has recall 1 (nothing to find); an empty output has precision 1
(nothing wrong was said). Both empty: 1 and 1.
"""

from __future__ import annotations

import re
import unicodedata
from collections import Counter
from collections.abc import Iterable

import msgspec

_WORD = re.compile(r"\w+")


def words(text: str) -> Counter[str]:
    """The multiset of words of ``text``."""
    return Counter(_WORD.findall(unicodedata.normalize("NFKC", text).lower()))


class Overlap(msgspec.Struct, frozen=True):
    """Word counts of one comparison (or a sum of them): what recall and precision need."""

    common: int
    reference: int
    output: int

    @property
    def recall(self) -> float:
        return self.common / self.reference if self.reference else 1.0

    @property
    def precision(self) -> float:
        return self.common / self.output if self.output else 1.0

    @property
    def f1(self) -> float:
        recall, precision = self.recall, self.precision
        total = recall + precision
        return 2 * recall * precision / total if total else 0.0


def overlap(reference: str, output: str) -> Overlap:
    """How many words of ``reference`` the ``output`` has, as multisets."""
    expected, got = words(reference), words(output)
    return Overlap(
        common=sum((expected & got).values()),
        reference=sum(expected.values()),
        output=sum(got.values()),
    )


def micro(overlaps: Iterable[Overlap]) -> Overlap:
    """The sum of several comparisons (a type's micro average)."""
    common = reference = output = 0
    for item in overlaps:
        common += item.common
        reference += item.reference
        output += item.output
    return Overlap(common=common, reference=reference, output=output)
