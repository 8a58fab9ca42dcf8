"""Recognise decoded text that is still garbage (mojibake), so it is refused, not indexed.

A decode can succeed and still be wrong: every byte means *something* in an 8-bit
code page. Three signs are reliable enough to refuse a document on, and each is
measured against the document's other non-ASCII text, so that a legitimate text
with an odd character or two always passes:

* **replacement characters** (U+FFFD): bytes that no decoder could read;
* **UTF-8 read as an 8-bit code page** (and saved again): "Ã©" for "é", "â€™" for
  a closing quote, "РџСЂ" for "Пр": runs of characters whose bytes in Windows-1252
  (or 1250, 1251, 1253) are valid multi-byte UTF-8;
* **Latin-1 letter soup**: words made only of accented Latin letters ("Ïðèâåò"),
  which is what Cyrillic, Greek or Hebrew look like read as Windows-1252; no
  language writes whole words that way.

The work is bounded: only the first runs of non-ASCII characters are examined, up
to :data:`MAX_RUNS` of them or :data:`MAX_CHARS` characters in all (a few ms).
"""

from __future__ import annotations

import contextlib
import re
from itertools import islice
from typing import Final

#: Runs of non-ASCII characters examined at most.
MAX_RUNS: Final = 4000
#: Non-ASCII characters examined at most.
MAX_CHARS: Final = 16384
#: Longer runs are not tested for UTF-8 in disguise (mojibake runs are word-sized).
MAX_DISGUISED_RUN: Final = 64
#: A sign must occur at least this often before it counts at all.
MIN_SIGNS: Final = 3
#: Share of non-ASCII characters lost to U+FFFD above which a text is refused.
REPLACEMENT_SHARE: Final = 0.1
#: ... and this share of all the text scanned (a long text may lose a byte or two).
REPLACEMENT_TEXT_SHARE: Final = 0.001
#: Share of non-ASCII runs that are UTF-8 in disguise above which a text is refused.
DOUBLE_ENCODED_SHARE: Final = 0.25
#: Share of words with non-ASCII letters that are letter soup above which a text is refused.
LETTER_SOUP_SHARE: Final = 0.2

_NON_ASCII_RUN: Final = re.compile(r"[^\x00-\x7f]+")
_LETTERS: Final = re.compile(r"[^\W\d_]+")
_LATIN1_SOUP: Final = re.compile(r"[\u00c0-\u00d6\u00d8-\u00f6\u00f8-\u00ff]{3,}")

# The code pages UTF-8 is most often mistaken for. Windows-1252 leaves five bytes
# undefined; tools that mis-decode map them to the C1 controls, as Latin-1 does.
_CP1252_BYTES: Final = {
    ord(char): chr(byte)
    for byte in range(0x80, 0xA0)
    if (char := bytes([byte]).decode("cp1252", "ignore"))
}
_OTHER_CODE_PAGES: Final = ("cp1250", "cp1251", "cp1253")


def _utf8_in_disguise(run: str) -> bool:
    """Whether ``run``, encoded back to a code page, is valid multi-byte UTF-8."""
    if not 2 <= len(run) <= MAX_DISGUISED_RUN:
        return False
    encodings: list[bytes] = []
    with contextlib.suppress(UnicodeEncodeError):
        encodings.append(run.translate(_CP1252_BYTES).encode("latin-1"))
    for codec in _OTHER_CODE_PAGES:
        try:
            encodings.append(run.encode(codec))
        except UnicodeEncodeError:
            continue
    for raw in encodings:
        try:
            raw.decode("utf-8")
        except UnicodeDecodeError:
            continue
        return True
    return False


def _replacement_reason(runs: list[re.Match[str]]) -> str | None:
    lost = sum(run.group().count("\ufffd") for run in runs)
    non_ascii = sum(len(run.group()) for run in runs)
    scanned = runs[-1].end()  # the stretch of text the runs come from
    if (
        lost >= MIN_SIGNS
        and lost > REPLACEMENT_SHARE * non_ascii
        and lost > REPLACEMENT_TEXT_SHARE * scanned
    ):
        return (
            f"the text is garbled: {lost} characters could not be decoded "
            "(replacement characters); save the file as UTF-8 and upload it again"
        )
    return None


def _double_encoding_reason(runs: list[str]) -> str | None:
    disguised = [run for run in runs if _utf8_in_disguise(run)]
    if len(disguised) >= MIN_SIGNS and len(disguised) > DOUBLE_ENCODED_SHARE * len(runs):
        examples = ", ".join(f'"{run}"' for run in disguised[:3])
        return (
            "the text is garbled (mojibake): it is UTF-8 that was read as a Windows code "
            f"page and saved again ({examples}); re-save it as UTF-8 from the original"
        )
    return None


def _is_soup(text: str, run: re.Match[str], letters: re.Match[str]) -> bool:
    """Whether ``letters`` (inside ``run``) is a whole word of Latin-1 letters only."""
    if not _LATIN1_SOUP.fullmatch(letters.group()):
        return False
    before = run.start() + letters.start() - 1
    after = run.start() + letters.end()
    glued_before = letters.start() == 0 and before >= 0 and text[before].isalpha()
    glued_after = letters.end() == len(run.group()) and after < len(text) and text[after].isalpha()
    return not (glued_before or glued_after)


def _letter_soup_reason(text: str, runs: list[re.Match[str]]) -> str | None:
    # Each stretch of non-ASCII letters stands for a word that holds one.
    words = [(run, letters) for run in runs for letters in _LETTERS.finditer(run.group())]
    soup = [letters.group() for run, letters in words if _is_soup(text, run, letters)]
    if len(soup) >= MIN_SIGNS and len(soup) > LETTER_SOUP_SHARE * len(words):
        examples = ", ".join(f'"{word}"' for word in soup[:3])
        return (
            "the text is garbled (mojibake): its words are made only of accented Latin "
            f"letters ({examples}), which is how Cyrillic, Greek or Hebrew text looks "
            "decoded with the wrong code page; save the file as UTF-8 and upload it again"
        )
    return None


def garbled_reason(text: str) -> str | None:
    """Why ``text`` looks like mojibake, or ``None`` when it reads as real text."""
    runs: list[re.Match[str]] = []
    chars = 0
    for run in islice(_NON_ASCII_RUN.finditer(text), MAX_RUNS):
        runs.append(run)
        chars += len(run.group())
        if chars >= MAX_CHARS:
            break
    if not runs:
        return None
    return (
        _replacement_reason(runs)
        or _double_encoding_reason([run.group() for run in runs])
        or _letter_soup_reason(text, runs)
    )
