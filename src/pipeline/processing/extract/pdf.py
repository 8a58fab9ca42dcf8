"""PDF: the text layer of each page, via pypdfium2 (PDFium).

PDFium is Chrome's PDF engine: fast C text extraction with good reading order,
robust against malformed files, and pypdfium2 ships it inside its wheels. It is
*not* thread-safe, so every call into it happens under :data:`PDFIUM_LOCK` (a
process-wide lock: worker processes run several threads). Documents, pages and
text pages hold C memory and are closed explicitly, innermost first, instead of
waiting for the garbage collector.

A PDF has no paragraph structure, only positioned lines, so each page's lines
are joined into one block per run of non-blank lines; pages are separated by a
blank line, and :class:`PageSpan` records where each page lies in the text.

The page count is checked against a limit right after opening, before any page is
loaded: thousands of trivial pages cost little to upload and a lot to read. What
PDFium does inside one page (nested objects, huge content streams) is bounded by
the sandbox's time limit and memory cap, not here.
"""

from __future__ import annotations

import threading
from typing import Final

import pypdfium2 as pdfium
import pypdfium2.raw as pdfium_c

from pipeline.errors import CorruptContent, EncryptedContent, TooManyPages
from pipeline.processing.extract.normalize import clean_block, join_blocks, split_paragraphs
from pipeline.processing.extract.result import Extracted, PageSpan
from pipeline.progress import report_progress

#: Serialises every PDFium call in this process (PDFium keeps global state).
PDFIUM_LOCK: Final = threading.Lock()

# Typographic ligatures PDFium reports as single code points; NFC keeps them, and
# they break search ("ﬁle" != "file").
_LIGATURES: Final = str.maketrans(
    {"\ufb00": "ff", "\ufb01": "fi", "\ufb02": "fl", "\ufb03": "ffi", "\ufb04": "ffl"}
)
_PAGE_SEPARATOR: Final = "\n\n"
_LOAD_ERRORS: Final[dict[int, str]] = {
    pdfium_c.FPDF_ERR_UNKNOWN: "unknown error",
    pdfium_c.FPDF_ERR_FILE: "file not found or could not be read",
    pdfium_c.FPDF_ERR_FORMAT: "not a valid PDF structure",
    pdfium_c.FPDF_ERR_PAGE: "page not found or content error",
}


def _page_text(raw: str) -> str:
    paragraphs = split_paragraphs(raw.translate(_LIGATURES))
    return join_blocks(clean_block(paragraph) for paragraph in paragraphs)


def _open(data: bytes) -> pdfium.PdfDocument:
    try:
        return pdfium.PdfDocument(data)
    except pdfium.PdfiumError as exc:
        code = getattr(exc, "err_code", None)
        if code in (pdfium_c.FPDF_ERR_PASSWORD, pdfium_c.FPDF_ERR_SECURITY):
            raise EncryptedContent(
                "PDF is encrypted (password protected); upload an unprotected copy"
            ) from exc
        problem = _LOAD_ERRORS.get(code, "unknown error") if isinstance(code, int) else str(exc)
        raise CorruptContent(
            f"PDF is corrupt or unreadable (PDFium: {problem}); re-export it and upload it again"
        ) from exc


def _check_pages(total: int, max_pages: int) -> None:
    if total > max_pages:
        raise TooManyPages(
            f"PDF has {total} pages, more than the limit of {max_pages}; "
            "split it into smaller files"
        )


def _read_pages(data: bytes, max_pages: int) -> list[str]:
    with PDFIUM_LOCK:
        document = _open(data)
        try:
            texts: list[str] = []
            total = len(document)
            _check_pages(total, max_pages)
            for index in range(total):
                report_progress(index, total)
                page = document[index]
                try:
                    textpage = page.get_textpage()
                    try:
                        texts.append(textpage.get_text_bounded())
                    finally:
                        textpage.close()
                finally:
                    page.close()
            report_progress(total, total)
            return texts
        except pdfium.PdfiumError as exc:
            raise CorruptContent(
                f"PDF is corrupt or unreadable (PDFium: {exc}); re-export it and upload it again"
            ) from exc
        finally:
            document.close()


def extract_pdf(data: bytes, max_pages: int) -> Extracted:
    """Text of a PDF with one :class:`PageSpan` per page (1-based page numbers).

    Raises:
        TooManyPages: more than ``max_pages`` pages.
        EncryptedContent, CorruptContent: PDFium cannot open or read it.
    """
    parts: list[str] = []
    pages: list[PageSpan] = []
    offset = 0
    for number, raw in enumerate(_read_pages(data, max_pages), start=1):
        text = _page_text(raw)
        if not text:
            pages.append(PageSpan(number=number, start=offset, end=offset))
            continue
        if parts:
            parts.append(_PAGE_SEPARATOR)
            offset += len(_PAGE_SEPARATOR)
        parts.append(text)
        pages.append(PageSpan(number=number, start=offset, end=offset + len(text)))
        offset += len(text)
    return Extracted(text="".join(parts), pages=pages)
