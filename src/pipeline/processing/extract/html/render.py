"""Walking the chosen content into blocks: paragraphs, headings, list items (ordered
ones numbered as a browser shows them), table rows, code, and images' alt text where
the image stands.

The walk is iterative, so deep trees are fine.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Final

from lxml import etree

from pipeline.processing.extract.html.prune import tag_of
from pipeline.processing.extract.normalize import clean_block, clean_preformatted

BLOCK_TAGS: Final = frozenset(
    {
        "address", "article", "aside", "blockquote", "body", "caption", "center", "dd",
        "details", "dialog", "dir", "div", "dl", "dt", "fieldset", "figcaption", "figure",
        "footer", "form", "h1", "h2", "h3", "h4", "h5", "h6", "header", "hgroup", "hr",
        "html", "legend", "li", "main", "menu", "ol", "p", "pre", "section", "summary",
        "table", "tbody", "td", "tfoot", "th", "thead", "tr", "ul",
    }
)  # fmt: skip
#: Tables nested deeper than this inside table cells are flattened to plain text.
MAX_TABLE_NESTING: Final = 16
_ROMAN: Final = (
    (1000, "m"), (900, "cm"), (500, "d"), (400, "cd"), (100, "c"), (90, "xc"),
    (50, "l"), (40, "xl"), (10, "x"), (9, "ix"), (5, "v"), (4, "iv"), (1, "i"),
)  # fmt: skip


def text_content(element: etree._Element) -> str:
    return "".join(text for text in element.itertext() if isinstance(text, str))


def _integer(value: str | None) -> int | None:
    try:
        return int((value or "").strip())
    except ValueError:
        return None


def _roman(number: int) -> str:
    out = []
    for value, letters in _ROMAN:
        count, number = divmod(number, value)
        out.append(letters * count)
    return "".join(out)


def _letters(number: int) -> str:
    out = ""
    while number > 0:
        number, rest = divmod(number - 1, 26)
        out = chr(ord("a") + rest) + out
    return out


def _marker(number: int, style: str) -> str:
    """``number`` as the list marker of ``<ol type=style>``, as a browser draws it."""
    if number > 0 and style in ("a", "A"):
        letters = _letters(number)
        return f"{letters.upper() if style == 'A' else letters}. "
    if 0 < number < 4000 and style in ("i", "I"):
        roman = _roman(number)
        return f"{roman.upper() if style == 'I' else roman}. "
    return f"{number}. "


class _Numbering:
    """The next number of an ``<ol>``: ``start``, ``reversed``, ``<li value>``."""

    def __init__(self, ol: etree._Element) -> None:
        self.step = -1 if ol.get("reversed") is not None else 1
        start = _integer(ol.get("start"))
        if start is None:
            start = sum(1 for child in ol if tag_of(child) == "li") if self.step < 0 else 1
        self.next = start
        self.style = (ol.get("type") or "1").strip()

    def marker(self, li: etree._Element) -> str:
        value = _integer(li.get("value"))
        number = self.next if value is None else value
        self.next = number + self.step
        return _marker(number, self.style)


class _Blocks:
    """Accumulates inline text and cuts it into blocks at block boundaries."""

    def __init__(self) -> None:
        self.blocks: list[str] = []
        self._parts: list[str] = []

    def text(self, text: str | None) -> None:
        if text:
            self._parts.append(text)

    def flush(self) -> None:
        if self._parts:
            block = clean_block("".join(self._parts))
            self._parts = []
            if block:
                self.blocks.append(block)

    def add(self, block: str) -> None:
        self.flush()
        if block:
            self.blocks.append(block)


def blocks_of(scope: etree._Element, table_depth: int = 0) -> list[str]:
    """Blocks of ``scope`` in document order."""
    out = _Blocks()
    lists: dict[etree._Element, _Numbering] = {}
    stack: list[tuple[etree._Element, bool]] = [(scope, True)]
    while stack:
        element, entering = stack.pop()
        tag = tag_of(element)
        if not entering:
            if tag in BLOCK_TAGS:
                out.flush()
            if element is not scope:
                out.text(element.tail)
            continue
        stack.append((element, False))
        if tag == "pre":
            out.add(clean_preformatted(text_content(element)))
        elif tag == "table":
            for block in _table_blocks(element, table_depth):
                out.add(block)
        else:
            if tag in BLOCK_TAGS:
                out.flush()
            elif tag == "br":
                out.text(" ")
            elif tag == "img":
                out.text(f" {element.get('alt') or ''} ")
            if tag == "ol":
                lists[element] = _Numbering(element)
            elif tag == "li":
                parent = element.getparent()
                if parent is not None and parent in lists:
                    out.text(lists[parent].marker(element))
            out.text(element.text)
            stack.extend((child, True) for child in reversed(element))
    out.flush()
    return out.blocks


def _table_blocks(table: etree._Element, depth: int) -> list[str]:
    """Caption, then one block per non-empty row with cells joined by `` | ``."""
    if depth >= MAX_TABLE_NESTING:
        return [clean_block(text_content(table))]
    blocks: list[str] = []
    for element in _own_rows(table):
        if tag_of(element) == "caption":
            blocks.append(" ".join(blocks_of(element, depth + 1)))
            continue
        cells = [
            " ".join(blocks_of(cell, depth + 1)) for cell in element if tag_of(cell) in ("td", "th")
        ]
        if any(cells):
            blocks.append(clean_block(" | ".join(cells)))
    return blocks


def _own_rows(table: etree._Element) -> Iterator[etree._Element]:
    """The captions and rows of ``table``, in order, not those of tables nested in it
    (they are rendered inside their cells)."""
    stack = list(reversed(table))
    while stack:
        element = stack.pop()
        tag = tag_of(element)
        if tag == "table":
            continue
        if tag in ("caption", "tr"):
            yield element
        stack.extend(reversed(element))
