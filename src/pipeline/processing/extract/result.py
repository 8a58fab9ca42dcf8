"""Result types of extraction (kept apart so extractor modules can share them)."""

from __future__ import annotations

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
