"""A PDF page's text rebuilt from its characters: unmapped glyphs dropped, RTL put in logical order.

PDFium's page text is right for most pages; two things go wrong on the others, and
both need what only the characters know (their position, whether they were mapped):

* **Unmapped glyphs.** A glyph whose font has no ToUnicode entry, no usable encoding
  and no meaningful glyph name comes out as its raw code (``\\x01``, ``Ĳ``...), flagged
  by PDFium; PDFium already falls back from ToUnicode to the encoding and to glyph
  names, so what is still flagged is dropped here, with U+FFFD, noncharacters and the
  private use areas (what symbol fonts and broken ToUnicode maps produce).
* **Right-to-left text.** PDFium runs the bidi algorithm over the order in which the
  content stream draws the glyphs, which assumes that order is visual (as most
  producers write it). Two results are then wrong: a glyph that maps to several
  characters through its ToUnicode entry (an Arabic lam-alef ligature, "لا") has them
  reversed, and a stream that draws RTL text in logical order comes out in visual order.
  The first is repaired per glyph (the characters of one glyph share one origin);
  PDFium's own decomposition of a presentation-form ligature comes out in the right
  order, so a glyph whose characters spell one is left alone. The second is *detected* per
  line, from positions: in logical order each right-to-left glyph lies left of the one
  before it. Only a line whose right-to-left glyphs mostly run left to right is
  reordered, by the Unicode bidi algorithm's implicit rules (W1-W7, N1-N2, I1-I2, L2;
  PDF text carries no explicit embeddings), glyph by glyph.

Presentation forms (the contextual shapes some producers map Arabic and Hebrew glyphs
to) are folded to the letters they show (NFKC on those blocks only), since search
compares letters.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Iterable, Sequence
from typing import Final

import msgspec

#: Right-to-left letters, Hebrew through Arabic Extended-A and the presentation forms.
RTL: Final = re.compile("[\u0590-\u05ff\u0600-\u06ff\u0700-\u08ff\ufb1d-\ufdff\ufe70-\ufefc]")
#: What an unmapped or badly mapped glyph produces: C0/C1 controls (other than
#: whitespace), lone surrogates, U+FFFD/U+FFFE/U+FFFF, the private use areas.
SUSPECT: Final = re.compile(
    "[\x00-\x08\x0e-\x1f\x7f-\x84\x86-\x9f\ud800-\uf8ff\ufffd-\uffff\U000f0000-\U0010ffff]"
)
_PRESENTATION_FORMS: Final = re.compile("[\ufb1d-\ufdff\ufe70-\ufefc]+")
#: What the Arabic and Hebrew presentation-form ligatures decompose to (in logical order).
_LIGATURE_LETTERS: Final = frozenset(
    letters
    for code in [*range(0xFB1D, 0xFE00), *range(0xFE70, 0xFEFD)]
    if len(letters := unicodedata.normalize("NFKC", chr(code)).strip()) > 1
)
_STRONG_RTL: Final = frozenset({"R", "AL"})
_NEUTRAL: Final = frozenset({"B", "S", "WS", "ON"})
#: Positions closer than this (in points) count as the same glyph origin / baseline.
_SAME_ORIGIN: Final = 0.01
_SAME_BASELINE: Final = 2.0


class PageChar(msgspec.Struct, frozen=True):
    """One character of PDFium's text page, in PDFium's order."""

    text: str
    x: float
    y: float
    generated: bool = False  # a space or line break PDFium inserted
    unmapped: bool = False  # PDFium found no Unicode for its glyph


def fold_presentation_forms(text: str) -> str:
    """Arabic and Hebrew presentation forms (and ligatures) as the letters they show."""
    return _PRESENTATION_FORMS.sub(lambda match: unicodedata.normalize("NFKC", match[0]), text)


def page_text(chars: Iterable[PageChar]) -> str:
    """The page's text from its characters, lines separated by ``\\n``."""
    lines: list[list[list[PageChar]]] = [[]]
    for char in chars:
        if char.text in ("\r", "\n"):
            if char.text == "\n":
                lines.append([])
            continue
        if char.unmapped or SUSPECT.fullmatch(char.text):
            continue
        line = lines[-1]
        previous = line[-1][-1] if line else None
        if (
            previous is not None
            and not char.generated
            and not previous.generated
            and (
                _same(previous.x, char.x, _SAME_ORIGIN) and _same(previous.y, char.y, _SAME_ORIGIN)
            )
        ):
            line[-1].append(char)
        else:
            line.append([char])
    return "\n".join(_line_text(line) for line in lines)


def _same(a: float, b: float, tolerance: float) -> bool:
    return abs(a - b) <= tolerance


def _line_text(glyphs: list[list[PageChar]]) -> str:
    texts = ["".join(char.text for char in glyph) for glyph in glyphs]
    # PDFium reversed every right-to-left run, the characters of one glyph included.
    texts = [_glyph_letters(text) for text in texts]
    if _runs_left_to_right(glyphs, texts):
        texts = reorder(texts)
    return "".join(texts)


def _glyph_letters(text: str) -> str:
    if len(text) < 2 or text in _LIGATURE_LETTERS or not RTL.search(text):
        return text
    return text[::-1]


def _runs_left_to_right(glyphs: Sequence[list[PageChar]], texts: Sequence[str]) -> bool:
    """Whether consecutive right-to-left glyphs mostly advance rightwards (visual order)."""
    rightwards = leftwards = 0
    previous: PageChar | None = None
    for glyph, text in zip(glyphs, texts, strict=True):
        if not RTL.match(text):
            if not text.isspace():
                previous = None
            continue
        first = glyph[0]
        if previous is not None and _same(previous.y, first.y, _SAME_BASELINE):
            if first.x > previous.x:
                rightwards += 1
            elif first.x < previous.x:
                leftwards += 1
        previous = first
    return rightwards > leftwards


def reorder(units: Sequence[str]) -> list[str]:
    """Units (glyphs) of one line reordered by the bidi algorithm's implicit rules.

    Each unit takes the bidi class of its first character. The paragraph level is
    right-to-left when right-to-left letters outnumber left-to-right ones.
    """
    classes = [unicodedata.bidirectional(unit[0]) if unit else "ON" for unit in units]
    rtl = sum(kind in _STRONG_RTL for kind in classes)
    ltr = sum(kind == "L" for kind in classes)
    base = 1 if rtl >= ltr else 0
    levels = _levels(_resolve_weak(classes, base), base)
    order = list(range(len(units)))
    highest = max(levels, default=0)
    lowest_odd = min((level for level in levels if level % 2), default=highest + 1)
    for level in range(highest, lowest_odd - 1, -1):
        start = None
        for index in range(len(order) + 1):
            inside = index < len(order) and levels[order[index]] >= level
            if inside and start is None:
                start = index
            elif not inside and start is not None:
                order[start:index] = reversed(order[start:index])
                start = None
    return [units[index] for index in order]


def _resolve_weak(classes: list[str], base: int) -> list[str]:
    sos = "R" if base else "L"
    resolved: list[str] = []
    strong = sos
    for kind in classes:  # W1 (NSM), W2 (EN after AL), W3 (AL -> R)
        if kind == "NSM":
            kind = resolved[-1] if resolved else sos
        if kind in ("L", "R", "AL"):
            strong = kind
        if kind == "EN" and strong == "AL":
            kind = "AN"
        resolved.append("R" if kind == "AL" else kind)
    for index in range(1, len(resolved) - 1):  # W4
        before, kind, after = resolved[index - 1], resolved[index], resolved[index + 1]
        if kind == "ES" and before == after == "EN":
            resolved[index] = "EN"
        elif kind == "CS" and before == after and before in ("EN", "AN"):
            resolved[index] = before
    for index, kind in enumerate(resolved):  # W5
        if kind == "EN":
            _spread(resolved, index, "ET", "EN")
    resolved = ["ON" if kind in ("ES", "ET", "CS") else kind for kind in resolved]  # W6
    strong = sos
    for index, kind in enumerate(resolved):  # W7
        if kind in ("L", "R"):
            strong = kind
        elif kind == "EN" and strong == "L":
            resolved[index] = "L"
    return resolved


def _spread(classes: list[str], index: int, what: str, into: str) -> None:
    for step in (-1, 1):
        other = index + step
        while 0 <= other < len(classes) and classes[other] == what:
            classes[other] = into
            other += step


def _levels(classes: list[str], base: int) -> list[int]:
    sos = "R" if base else "L"
    direction = ["R" if kind in ("R", "EN", "AN") else kind for kind in classes]
    index = 0
    while index < len(direction):  # N1, N2
        if direction[index] not in _NEUTRAL:
            index += 1
            continue
        end = index
        while end < len(direction) and direction[end] in _NEUTRAL:
            end += 1
        before = direction[index - 1] if index else sos
        after = direction[end] if end < len(direction) else sos
        fill = before if before == after else sos
        direction[index:end] = [fill] * (end - index)
        index = end
    levels: list[int] = []
    for kind, side in zip(classes, direction, strict=True):  # I1, I2
        if base == 0:
            levels.append(2 if kind in ("EN", "AN") else 1 if side == "R" else 0)
        else:
            levels.append(2 if side == "L" or kind in ("EN", "AN") else 1)
    return levels
