"""Result types of extraction (kept apart so extractor modules can share them)."""

from __future__ import annotations

from typing import Final

import msgspec


class PageSpan(msgspec.Struct, frozen=True):
    """Where page ``number`` (1-based) lies in the extracted text: ``text[start:end]``.

    A page without text has an empty span (``start == end``) at the end of the
    text of the pages before it (0 when there is none).
    """

    number: int
    start: int
    end: int


class Extracted(msgspec.Struct, frozen=True):
    """Normalised text of a document; ``pages`` is filled for PDFs (and by OCR for images)."""

    text: str
    pages: list[PageSpan] = msgspec.field(default_factory=list)


PAGE_SEPARATOR: Final = "\n\n"
"""Between the texts of two pages (a page without text adds none)."""


def join_pages(pages: list[str]) -> Extracted:
    """The texts of pages 1, 2, … joined with :data:`PAGE_SEPARATOR`, each with its span
    (a page without text gets an empty one where it stands)."""
    parts: list[str] = []
    spans: list[PageSpan] = []
    offset = 0
    for number, page in enumerate(pages, start=1):
        if not page:
            spans.append(PageSpan(number=number, start=offset, end=offset))
            continue
        if parts:
            parts.append(PAGE_SEPARATOR)
            offset += len(PAGE_SEPARATOR)
        parts.append(page)
        spans.append(PageSpan(number=number, start=offset, end=offset + len(page)))
        offset += len(page)
    return Extracted(text="".join(parts), pages=spans)
