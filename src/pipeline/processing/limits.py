"""Limits that keep extraction bounded on hostile input.

Validation caps the upload's size, but a small upload can still expand into a great
deal of work: a DOCX is a ZIP archive (a 1 MB "zip bomb" can inflate to gigabytes),
a PDF can hold thousands of cheap pages, and any document can yield more text than
the later stages (chunk, embed, index) handle in their time limits. These limits
refuse such documents up front, permanently and with a reason a person can act on,
instead of letting them fail late, slowly, and as a retried "timed out".

The defaults live here rather than in :mod:`pipeline.settings` so that the pure
extraction code can be called without settings (tests, benchmarks); settings builds
the same objects from the environment. This module imports nothing heavy: settings
depends on it.
"""

from __future__ import annotations

from typing import Final

import msgspec

MIB: Final = 1024 * 1024

DEFAULT_MAX_TEXT_CHARS: Final = 10_000_000
"""About 4,000 dense pages or 2 million tokens: chunking it takes seconds."""
DEFAULT_MAX_PDF_PAGES: Final = 2_000
DEFAULT_DOCX_MAX_EXPANDED_MB: Final = 100
DEFAULT_DOCX_MAX_PART_MB: Final = 64
DEFAULT_DOCX_MAX_PARTS: Final = 10_000
DEFAULT_DOCX_MAX_RATIO: Final = 100
"""Apache POI's zip-bomb threshold (a minimum inflate ratio of 0.01)."""


class DocxLimits(msgspec.Struct, frozen=True, kw_only=True):
    """What a DOCX package (a ZIP archive) may expand to.

    The declared sizes in the ZIP directory are checked before anything is
    decompressed, and the one part that is read (``word/document.xml``) is
    decompressed against a running budget, because declared sizes can lie.
    """

    max_expanded_bytes: int = DEFAULT_DOCX_MAX_EXPANDED_MB * MIB
    """Sum of the declared uncompressed sizes of every part."""
    max_part_bytes: int = DEFAULT_DOCX_MAX_PART_MB * MIB
    """Uncompressed size of any one part, declared or actually read."""
    max_parts: int = DEFAULT_DOCX_MAX_PARTS
    """Number of entries in the archive (real documents have tens to hundreds)."""
    max_ratio: int = DEFAULT_DOCX_MAX_RATIO
    """Uncompressed-to-compressed ratio of a part, checked past :data:`RATIO_GRACE_BYTES`."""

    def __post_init__(self) -> None:
        for name in ("max_expanded_bytes", "max_part_bytes", "max_parts", "max_ratio"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be at least 1")


RATIO_GRACE_BYTES: Final = 1 * MIB
"""Parts smaller than this are never refused for their ratio: a small, very regular
XML part legitimately compresses a hundredfold, and cannot hurt anyone."""


class ExtractLimits(msgspec.Struct, frozen=True, kw_only=True):
    """Every limit extraction enforces; passed into the (sandboxed) extractor."""

    max_text_chars: int = DEFAULT_MAX_TEXT_CHARS
    """Longest text one document may yield."""
    max_pdf_pages: int = DEFAULT_MAX_PDF_PAGES
    """Most pages a PDF may have; checked right after opening it."""
    docx: DocxLimits = msgspec.field(default_factory=DocxLimits)

    def __post_init__(self) -> None:
        if self.max_text_chars < 1:
            raise ValueError("max_text_chars must be at least 1")
        if self.max_pdf_pages < 1:
            raise ValueError("max_pdf_pages must be at least 1")


def human_size(size: int) -> str:
    """``size`` bytes in the largest binary unit that keeps it at least 1."""
    for unit, scale in (("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)):
        if size >= scale:
            return f"{size / scale:.1f}".removesuffix(".0") + f" {unit}"
    return f"{size} bytes"
