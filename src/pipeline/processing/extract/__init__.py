"""Extraction: bytes of a validated document to normalised text.

One module per kind, each a pure function of the bytes; :func:`extract`
dispatches on the kind decided by validation and enforces the shared contract
(see :mod:`.normalize` for the text convention): non-empty text, or
:class:`~pipeline.errors.EmptyContent`; unparseable bytes raise
:class:`~pipeline.errors.CorruptContent`. Two kinds may come out empty, for the OCR
stage to fill: a PDF's pages without a text layer keep their empty
:class:`PageSpan` (so OCR knows which pages to render), and an image has no text
until OCR reads it.

Why these libraries:

* **pypdfium2** (PDFium, Chrome's PDF engine): fast text extraction in C with
  good reading order, tolerant of broken files, and the binary ships inside the
  wheel, so there is no system dependency. Not thread-safe: see :mod:`.pdf`.
* **lxml** (libxml2): a fast, forgiving HTML parser that recovers from broken
  markup, decodes entities, never touches the network, and limits nesting depth
  against hostile documents; the same library parses DOCX XML with entity
  resolution and DTD loading switched off.
* **markdown-it-py**: a CommonMark-compliant parser exposing a token stream, so
  structure comes from a real grammar rather than regular expressions.
"""

from __future__ import annotations

from typing import Final

from pipeline.errors import EmptyContent, TextTooLong
from pipeline.processing.extract.docx import extract_docx
from pipeline.processing.extract.html import extract_html
from pipeline.processing.extract.markdown import extract_markdown
from pipeline.processing.extract.pdf import PDFIUM_LOCK, extract_pdf
from pipeline.processing.extract.plain import extract_plain, read_text
from pipeline.processing.extract.result import Extracted, PageSpan
from pipeline.processing.kinds import DocumentKind
from pipeline.processing.limits import ExtractLimits

__all__ = ["DEFAULT_LIMITS", "PDFIUM_LOCK", "ExtractLimits", "Extracted", "PageSpan", "extract"]

DEFAULT_LIMITS: Final = ExtractLimits()

_EMPTY_REASONS: Final[dict[DocumentKind, str]] = {
    "docx": "no text could be extracted: the DOCX document has no text in its body",
    "html": "no text could be extracted: the HTML page has no visible text content",
    "markdown": "no text could be extracted: the Markdown document has no text",
    "text": "no text could be extracted: the text file has no printable text",
}


def extract(
    data: bytes,
    kind: DocumentKind,
    encoding: str | None,
    limits: ExtractLimits = DEFAULT_LIMITS,
) -> Extracted:
    """Extract normalised text from ``data`` of a known ``kind``.

    ``encoding`` is the one validation found for text kinds (``None`` to detect
    it again); it is ignored for PDF and DOCX.

    Raises:
        EmptyContent: nothing readable was found (never for a PDF or an image, whose
            empty pages the OCR stage reads).
        CorruptContent: the parser could not read the bytes.
        EncryptedContent: a password-protected PDF.
        TooManyPages: a PDF over ``limits.max_pdf_pages``.
        ArchiveTooLarge: a DOCX over one of ``limits.docx``.
        TextTooLong: more text than ``limits.max_text_chars``.
    """
    if kind == "image":
        return Extracted(text="")
    if kind == "pdf":
        result = extract_pdf(data, limits.max_pdf_pages)
    elif kind == "docx":
        result = Extracted(text=extract_docx(data, limits.docx))
    elif kind == "html":
        result = Extracted(text=extract_html(data, encoding))
    else:
        # Measured once decoded too, before the cleaning that costs time and memory
        # in proportion to it (a 50 MB one-line file is refused in a fraction of a second).
        text = read_text(data, encoding)
        check_text_length(len(text), limits.max_text_chars)
        body = extract_markdown(text) if kind == "markdown" else extract_plain(text)
        result = Extracted(text=body)
    check_text_length(len(result.text), limits.max_text_chars)
    if not result.text and kind != "pdf":
        raise EmptyContent(_EMPTY_REASONS[kind])
    return result


def check_text_length(length: int, max_chars: int) -> None:
    """Refuse text longer than ``max_chars`` characters.

    Raises:
        TextTooLong: with the length and the limit in the reason.
    """
    if length > max_chars:
        raise TextTooLong(
            f"the document's text is {length:,} characters long, more than the limit of "
            f"{max_chars:,}; split it into smaller documents"
        )
