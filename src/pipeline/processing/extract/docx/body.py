"""The document body as blocks: paragraphs, table rows, their numbers, equations, checkboxes.

The body is walked in document order: every paragraph becomes one block, so headings
(style ids ``Heading1``..``Heading9``, ``Title``) naturally stand on their own, with
the number Word draws before a numbered paragraph (see :mod:`.numbering`); each table
row becomes one block with its cells joined by `` | ``. Inside a paragraph, equations
become linear text (see :mod:`.omml`), and a checkbox, a ``w14:checkbox`` content
control or a legacy ``FORMCHECKBOX`` field, becomes ``[x]`` or ``[ ]`` by its state
(the glyph a content control shows is only its picture). Deleted revisions
(``w:delText``, ``w:moveFrom``), field codes (``w:instrText``) and the
``mc:Fallback`` duplicates of text boxes and equations are skipped.
"""

from __future__ import annotations

from typing import Final

from lxml import etree

from pipeline.processing.extract.docx.numbering import Numbering
from pipeline.processing.extract.docx.omml import math_text
from pipeline.processing.extract.docx.xml import attribute, child, is_on, name, value
from pipeline.processing.extract.normalize import clean_block

# Block-level wrappers whose children are paragraphs/tables again.
_CONTAINERS: Final = frozenset({"sdt", "sdtContent", "customXml", "ins", "moveTo"})
_BREAKS: Final = frozenset({"tab", "ptab", "br", "cr"})
_SKIPPED_RUNS: Final = frozenset({"moveFrom", "del", "instrText", "delText", "fldData"})
_CHECKED: Final = " [x] "
_UNCHECKED: Final = " [ ] "


def _checkbox_control(sdt: etree._Element) -> str | None:
    """``[x]``/``[ ]`` for a ``w14:checkbox`` content control, ``None`` for another one."""
    properties = child(sdt, "w", "sdtPr")
    checkbox = None if properties is None else child(properties, "w14", "checkbox")
    if checkbox is None:
        return None
    return _CHECKED if is_on(child(checkbox, "w14", "checked")) else _UNCHECKED


def _checkbox_field(field_char: etree._Element) -> str | None:
    """``[x]``/``[ ]`` where a legacy checkbox field begins, ``None`` elsewhere."""
    if attribute(field_char, "fldCharType") != "begin":
        return None
    data = child(field_char, "w", "ffData")
    checkbox = None if data is None else child(data, "w", "checkBox")
    if checkbox is None:
        return None
    checked = child(checkbox, "w", "checked")
    if checked is not None:
        return _CHECKED if is_on(checked) else _UNCHECKED
    return _CHECKED if value(checkbox, "w", "default") in ("1", "true", "on") else _UNCHECKED


def _checkbox(element: etree._Element, local: str) -> str | None:
    if local == "sdt":
        return _checkbox_control(element)
    return _checkbox_field(element) if local == "fldChar" else None


def paragraph_text(paragraph: etree._Element) -> str:
    """The text of one paragraph (its number aside)."""
    parts: list[str] = []
    stack = [paragraph]
    while stack:
        element = stack.pop()
        kind, local = name(element)
        if kind == "w":
            if local == "t":
                parts.append(element.text or "")
                continue
            if local in _BREAKS:
                parts.append(" ")
            elif local == "noBreakHyphen":
                parts.append("-")
            elif local in _SKIPPED_RUNS:
                continue
            elif (mark := _checkbox(element, local)) is not None:
                parts.append(mark)
                continue
        elif kind == "m" and local in ("oMath", "oMathPara"):
            parts.append(f" {math_text(element)} " if local == "oMathPara" else math_text(element))
            continue
        elif kind == "mc" and local == "Fallback":
            continue
        stack.extend(reversed(element))
    return clean_block("".join(parts))


class Body:
    """Blocks of a body; numbering is counted across the calls, in reading order."""

    def __init__(self, numbering: Numbering | None) -> None:
        self._numbering = numbering

    def blocks(self, container: etree._Element) -> list[str]:
        """Blocks of the paragraphs and tables directly in ``container``, in order."""
        blocks: list[str] = []
        for element in container:
            kind, local = name(element)
            if kind == "w" and local == "p":
                blocks.append(self._paragraph(element))
            elif kind == "w" and local == "tbl":
                blocks.extend(self._table_rows(element))
            elif (kind == "w" and local in _CONTAINERS) or (
                kind == "mc" and local in ("AlternateContent", "Choice")
            ):
                blocks.extend(self.blocks(element))
        return [block for block in blocks if block]

    def _paragraph(self, paragraph: etree._Element) -> str:
        text = paragraph_text(paragraph)
        if self._numbering is None:
            return text
        # Counted even when the paragraph is empty: Word numbers it all the same.
        label = self._numbering.label(child(paragraph, "w", "pPr"))
        return f"{label} {text}" if label and text else text

    def _table_rows(self, table: etree._Element) -> list[str]:
        rows: list[str] = []
        for row in _children(table, "tr"):
            cells = [" ".join(self.blocks(cell)) for cell in _children(row, "tc")]
            if any(cells):
                rows.append(clean_block(" | ".join(cells)))
        return rows


def _children(element: etree._Element, wanted: str) -> list[etree._Element]:
    """Children named ``wanted``, looking through content-control wrappers."""
    found: list[etree._Element] = []
    for candidate in element:
        kind, local = name(candidate)
        if kind == "w" and local == wanted:
            found.append(candidate)
        elif kind == "w" and local in _CONTAINERS:
            found.extend(_children(candidate, wanted))
    return found
