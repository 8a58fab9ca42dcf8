"""The document kinds the pipeline can read, and their canonical MIME types.

The kind is always decided from the bytes (see :mod:`pipeline.processing.sniff`),
never from a filename or a client-declared content type, so this list is also the
list of extractors that exist.
"""

from __future__ import annotations

from typing import Final, Literal, get_args

DocumentKind = Literal["pdf", "docx", "html", "markdown", "text"]

#: Every kind, in a stable order (handy for tests and validation of stored values).
DOCUMENT_KINDS: Final[tuple[DocumentKind, ...]] = get_args(DocumentKind)

MIME_TYPES: Final[dict[DocumentKind, str]] = {
    "pdf": "application/pdf",
    "docx": "application/vnd.openxmlformats-officedocument.wordprocessingml.document",
    "html": "text/html",
    "markdown": "text/markdown",
    "text": "text/plain",
}
