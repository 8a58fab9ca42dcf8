"""Repair a PDF that PDFium refuses to open, with pypdf, so that PDFium can read it.

PDFium rebuilds a broken cross-reference table by itself (wrong offsets, a missing or
overwritten table, a wrong ``startxref``); what it cannot get past is a trailer that
does not lead it to the document catalog: a ``/Root`` pointing at a missing or wrong
object, a trailer that is missing, cut off or garbled. pypdf (pure Python, so no new C
code on untrusted input; it runs inside the sandbox with the rest of extraction), read
with ``strict=False``, rebuilds the cross-reference table by scanning for objects and
looks for the catalog when the trailer does not name it. The repaired document is
written out again (objects and streams copied as they are) and read by PDFium, so a
repaired file gets the same text extraction, reading order and RTL handling as any
other.

Why pypdf and not pdfminer.six, or pypdf's own text extraction: on the damaged-xref
fixtures (tests/fixtures/quality/pdf) pypdf read every case pdfminer.six read and more
(pdfminer.six gave up on garbled and truncated trailers and returned no text for
zeroed offsets), in about 1-2 ms per small file; and its own text extraction scrambles
the order of right-to-left and mixed lines that PDFium gets right.

When the repair fails too the caller reports PDFium's reason, as before: the file is
truly corrupt. pypdf is imported on the first repair, not with the module: it takes
about 100 ms, which every process that imports extraction would pay for the rare
broken file.
"""

from __future__ import annotations

import io
import logging
from typing import TYPE_CHECKING, Final

from pipeline.errors import EncryptedContent, TooManyPages

if TYPE_CHECKING:
    import pypdf

# pypdf logs every object it had to look for at WARNING: that is the repair working,
# not news for the worker's log.
logging.getLogger("pypdf").setLevel(logging.ERROR)

#: Appended once the damaged trailer is cut off: a trailer without /Root makes pypdf search
#: the objects for the catalog.
_BLANK_TRAILER: Final = b"\ntrailer\n<< /Size 1 >>\nstartxref\n0\n%%EOF\n"
#: The reason given for a password-protected PDF, however it was found.
ENCRYPTED_REASON: Final = "PDF is encrypted (password protected); upload an unprotected copy"


def check_page_count(total: int, max_pages: int) -> None:
    """Refuse a PDF of more than ``max_pages`` pages, before any page is read.

    Raises:
        TooManyPages: with the count and the limit in the reason.
    """
    if total > max_pages:
        raise TooManyPages(
            f"PDF has {total} pages, more than the limit of {max_pages}; "
            "split it into smaller files"
        )


def repair(data: bytes, max_pages: int) -> bytes | None:
    """The document rewritten with a sound structure, or ``None`` if pypdf cannot read it.

    Raises:
        EncryptedContent: the damaged file is encrypted.
        TooManyPages: it has more than ``max_pages`` pages.
    """
    import pypdf

    reader = _read(data) or _read(_without_trailer(data) + _BLANK_TRAILER)
    if reader is None:
        return None
    if reader.is_encrypted:
        raise EncryptedContent(ENCRYPTED_REASON)
    check_page_count(len(reader.pages), max_pages)
    output = io.BytesIO()
    try:
        pypdf.PdfWriter(clone_from=reader).write(output)
    except MemoryError:
        raise
    except Exception:  # whatever pypdf trips on, the repair failed
        return None
    return output.getvalue()


def _read(data: bytes) -> pypdf.PdfReader | None:
    """The file read by pypdf, or ``None`` (it fails, or finds no page)."""
    import pypdf

    try:
        reader = pypdf.PdfReader(io.BytesIO(data), strict=False)
        if not reader.is_encrypted and len(reader.pages) == 0:
            return None
    except MemoryError:
        raise
    except Exception:  # on a damaged file pypdf raises all kinds of errors
        return None
    return reader


def _without_trailer(data: bytes) -> bytes:
    end = data.rfind(b"trailer")
    return data if end < 0 else data[:end]
