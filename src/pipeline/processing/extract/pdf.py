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

A file PDFium refuses as malformed is repaired by :mod:`.pdf_repair` and read again;
a page whose text holds right-to-left letters or signs of unmapped glyphs (or whose
sampled characters PDFium flags as unmapped) is rebuilt from its characters by
:mod:`.pdf_glyphs`. Other pages pay for neither.
"""

from __future__ import annotations

import ctypes
import threading
from typing import Final

import msgspec
import pypdfium2 as pdfium
import pypdfium2.raw as pdfium_c

from pipeline.errors import CorruptContent, EncryptedContent
from pipeline.processing.extract.normalize import clean_block, join_blocks, split_paragraphs
from pipeline.processing.extract.pdf_glyphs import (
    RTL,
    SUSPECT,
    PageChar,
    fold_presentation_forms,
    page_text,
)
from pipeline.processing.extract.pdf_repair import ENCRYPTED_REASON, check_page_count, repair
from pipeline.processing.extract.result import Extracted, join_pages
from pipeline.progress import report_progress

#: Serialises every PDFium call in this process (PDFium keeps global state).
PDFIUM_LOCK: Final = threading.Lock()

# Typographic ligatures PDFium reports as single code points; NFC keeps them, and
# they break search ("ﬁle" != "file").
_LIGATURES: Final = str.maketrans(
    {"\ufb00": "ff", "\ufb01": "fi", "\ufb02": "fl", "\ufb03": "ffi", "\ufb04": "ffl"}
)
#: Load errors worth a repair: a broken structure (PDFium reports some as "unknown",
#: or even as "success", e.g. a /Root that names the page tree).
_REPAIRABLE: Final = frozenset(
    {pdfium_c.FPDF_ERR_FORMAT, pdfium_c.FPDF_ERR_UNKNOWN, pdfium_c.FPDF_ERR_SUCCESS}
)
#: Every this many characters one is asked whether its glyph was mapped: a font
#: without a usable mapping leaves a trail through the page's text.
_MAP_SAMPLE_STEP: Final = 64
_LOAD_ERRORS: Final[dict[int, str]] = {
    pdfium_c.FPDF_ERR_UNKNOWN: "unknown error",
    pdfium_c.FPDF_ERR_FILE: "file not found or could not be read",
    pdfium_c.FPDF_ERR_FORMAT: "not a valid PDF structure",
    pdfium_c.FPDF_ERR_PAGE: "page not found or content error",
}


def _page_text(raw: str) -> str:
    paragraphs = split_paragraphs(fold_presentation_forms(raw.translate(_LIGATURES)))
    return join_blocks(clean_block(paragraph) for paragraph in paragraphs)


def _open(data: bytes, max_pages: int) -> pdfium.PdfDocument:
    try:
        return pdfium.PdfDocument(data)
    except pdfium.PdfiumError as exc:
        code = getattr(exc, "err_code", None)
        if code in (pdfium_c.FPDF_ERR_PASSWORD, pdfium_c.FPDF_ERR_SECURITY):
            raise EncryptedContent(ENCRYPTED_REASON) from exc
        problem = _LOAD_ERRORS.get(code, "unknown error") if isinstance(code, int) else str(exc)
        refused = CorruptContent(
            f"PDF is corrupt or unreadable (PDFium: {problem}); re-export it and upload it again"
        )
        repaired = repair(data, max_pages) if code in _REPAIRABLE else None
        if repaired is None:
            raise refused from exc
        try:
            return pdfium.PdfDocument(repaired)
        except pdfium.PdfiumError:
            raise refused from exc


def _needs_glyph_pass(textpage: pdfium.PdfTextPage, text: str) -> bool:
    if RTL.search(text) or SUSPECT.search(text):
        return True
    raw = textpage.raw
    return any(
        pdfium_c.FPDFText_HasUnicodeMapError(raw, index)
        for index in range(0, textpage.count_chars(), _MAP_SAMPLE_STEP)
    )


def _chars(textpage: pdfium.PdfTextPage) -> list[PageChar]:
    raw = textpage.raw
    x, y = ctypes.c_double(), ctypes.c_double()
    chars: list[PageChar] = []
    for index in range(textpage.count_chars()):
        code = pdfium_c.FPDFText_GetUnicode(raw, index)
        if 0xDC00 <= code < 0xE000 and chars and 0xD800 <= ord(chars[-1].text) < 0xDC00:
            high = chars.pop()  # PDFium reports a non-BMP character as a surrogate pair
            chars.append(
                msgspec.structs.replace(
                    high, text=chr(0x10000 + ((ord(high.text) - 0xD800) << 10) + code - 0xDC00)
                )
            )
            continue
        pdfium_c.FPDFText_GetCharOrigin(raw, index, x, y)
        chars.append(
            PageChar(
                text=chr(code) if code < 0x110000 else "\ufffd",
                x=x.value,
                y=y.value,
                generated=pdfium_c.FPDFText_IsGenerated(raw, index) == 1,
                unmapped=pdfium_c.FPDFText_HasUnicodeMapError(raw, index) == 1,
            )
        )
    return chars


def _text_of(textpage: pdfium.PdfTextPage) -> str:
    text: str = textpage.get_text_bounded()
    if _needs_glyph_pass(textpage, text):
        return page_text(_chars(textpage))
    return text


def _read_pages(data: bytes, max_pages: int) -> list[str]:
    with PDFIUM_LOCK:
        document = _open(data, max_pages)
        try:
            texts: list[str] = []
            total = len(document)
            check_page_count(total, max_pages)
            for index in range(total):
                report_progress(index, total)
                page = document[index]
                try:
                    textpage = page.get_textpage()
                    try:
                        texts.append(_text_of(textpage))
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
    return join_pages([_page_text(raw) for raw in _read_pages(data, max_pages)])
