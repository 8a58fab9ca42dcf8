"""The extraction benchmark's word metrics on small texts, against counts worked out by hand.

``bench/extraction_metrics.py`` is loaded by path (bench/ is not a package), so the
benchmark, the quality test and these tests share one copy of it.
"""

from __future__ import annotations

from collections import Counter

import pytest
from tests.support.bench_modules import load_bench

m = load_bench("extraction_metrics.py")


def test_words_are_lower_cased_unicode_runs_without_punctuation() -> None:
    assert m.words("Hello, World! 1. Café — naïve_x | **bold**") == Counter(
        {"hello": 1, "world": 1, "1": 1, "café": 1, "naïve_x": 1, "bold": 1}
    )


def test_words_are_nfkc_normalised_first() -> None:
    # NFD "e" + combining acute is one word "café"; the "ﬁ" ligature is "fi"; the
    # full-width digits are ASCII digits; "Ⅻ" (one code point) becomes "xii".
    assert m.words("Cafe\u0301 \ufb01ne \uff11\uff12 \u216b") == Counter(
        {"café": 1, "fine": 1, "12": 1, "xii": 1}
    )


def test_words_of_other_scripts() -> None:
    assert m.words("Привет, мир! مرحبا") == Counter({"привет": 1, "мир": 1, "مرحبا": 1})


def test_identical_texts_score_one() -> None:
    result = m.overlap("The cat sat.", "the CAT sat")
    assert (result.common, result.reference, result.output) == (3, 3, 3)
    assert (result.recall, result.precision, result.f1) == (1.0, 1.0, 1.0)


def test_missing_and_extra_words() -> None:
    # reference: a b c d (4 words); output: a b x (3 words); common: a b
    result = m.overlap("a b c d", "a b x")
    assert result.recall == 0.5
    assert result.precision == pytest.approx(2 / 3)
    # F1 = 2 * 0.5 * 0.6667 / 1.1667 = 0.5714286
    assert result.f1 == pytest.approx(4 / 7)


def test_repeated_words_count_as_a_multiset() -> None:
    # the reference says "the" three times, the output twice, plus "the" nowhere else
    result = m.overlap("the the the end", "the the end end end")
    assert (result.common, result.reference, result.output) == (3, 4, 5)
    assert result.recall == 0.75
    assert result.precision == 0.6


def test_word_order_does_not_matter() -> None:
    assert m.overlap("one two three", "three one two").f1 == 1.0


def test_empty_texts() -> None:
    nothing_out = m.overlap("some words", "")
    assert (nothing_out.recall, nothing_out.precision, nothing_out.f1) == (0.0, 1.0, 0.0)
    nothing_expected = m.overlap("", "noise")
    assert (nothing_expected.recall, nothing_expected.precision) == (1.0, 0.0)
    both = m.overlap("...", "")
    assert (both.recall, both.precision, both.f1) == (1.0, 1.0, 1.0)


def test_micro_average_weighs_cases_by_their_words() -> None:
    # case 1: 1 of 1 word found; case 2: 1 of 9 found; macro recall would be 0.556
    short = m.overlap("alpha", "alpha")
    long = m.overlap("a b c d e f g h i", "a z")
    total = m.micro([short, long])
    assert (total.common, total.reference, total.output) == (2, 10, 3)
    assert total.recall == 0.2
    assert total.precision == pytest.approx(2 / 3)


def test_micro_of_nothing_is_perfect() -> None:
    total = m.micro([])
    assert (total.recall, total.precision) == (1.0, 1.0)
