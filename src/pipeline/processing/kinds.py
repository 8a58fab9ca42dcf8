"""The document kinds the pipeline can read, and their canonical MIME types.

The kind is always decided from the bytes (see :mod:`pipeline.processing.sniff`),
never from a filename or a client-declared content type, so this list is also the
list of extractors that exist. An ``image`` (PNG, JPEG or TIFF) has no extractor: its
text comes from the OCR stage.
"""

from __future__ import annotations

from typing import Final, Literal, get_args

from pipeline.processing.images import ImageFormat

DocumentKind = Literal["pdf", "docx", "html", "markdown", "text", "image"]

#: Every kind, in a stable order (handy for tests and validation of stored values).
DOCUMENT_KINDS: Final[tuple[DocumentKind, ...]] = get_args(DocumentKind)

MIME_TYPES: Final[dict[DocumentKind, str]] = {
    "pdf": "application/pdf",
    "docx": "application/vnd.openxmlformats-officedocument.wordprocessingml.document",
    "html": "text/html",
    "markdown": "text/markdown",
    "text": "text/plain",
}
"""The MIME type of every kind but ``image``, whose type is its format's."""

IMAGE_MIME_TYPES: Final[dict[ImageFormat, str]] = {
    "png": "image/png",
    "jpeg": "image/jpeg",
    "tiff": "image/tiff",
}
