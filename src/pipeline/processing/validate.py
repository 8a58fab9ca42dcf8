"""Admission control: the cheap checks that decide whether a document is worth parsing.

Validation runs before anything expensive and must stay cheap and safe on hostile
input, so it never runs a full parser: a size policy first (so an oversize upload
costs nothing more), then emptiness, then :func:`~pipeline.processing.sniff.sniff`
for the real type, then a byte-level scan for PDF encryption, and for an image the
size its header declares (a decompression bomb is refused before anything decodes
it). Parsing failures surface later, in extraction.
"""

from __future__ import annotations

import hashlib
import re
from typing import Final

import msgspec

from pipeline.errors import ContentTooLarge, EmptyContent, EncryptedContent
from pipeline.processing.images import DEFAULT_MAX_IMAGE_PIXELS, check_pixels, read_image_info
from pipeline.processing.kinds import DocumentKind
from pipeline.processing.sniff import sniff

# An /Encrypt entry whose value is an indirect reference or an inline dictionary;
# /EncryptMetadata and the like do not match.
_PDF_ENCRYPT_RE: Final = re.compile(rb"/Encrypt\s*(?:\d+\s+\d+\s+R|<<)")


class ValidationPolicy(msgspec.Struct, frozen=True):
    """Limits applied to every document. Both must be positive."""

    max_bytes: int
    max_image_pixels: int = DEFAULT_MAX_IMAGE_PIXELS
    """Largest page of an image, in pixels (width x height, from its header)."""

    def __post_init__(self) -> None:
        if self.max_bytes < 1:
            raise ValueError("max_bytes must be at least 1")
        if self.max_image_pixels < 1:
            raise ValueError("max_image_pixels must be at least 1")


class Validation(msgspec.Struct, frozen=True):
    """A document that passed validation: its real type and identity."""

    kind: DocumentKind
    mime: str
    encoding: str | None
    sha256: str
    size: int


def _human_size(size: int) -> str:
    for unit, scale in (("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)):
        if size >= scale:
            return f"{size / scale:.1f} {unit}"
    return f"{size} bytes"


def validate(data: bytes, policy: ValidationPolicy) -> Validation:
    """Check ``data`` against ``policy`` and identify it.

    Raises:
        ContentTooLarge: more than ``policy.max_bytes``.
        EmptyContent, UnsupportedContent, CorruptContent: see :func:`sniff`.
        EncryptedContent: a PDF with an ``/Encrypt`` dictionary (or an encrypted
            Office file).
        ContentTooLarge: an image with a page over ``policy.max_image_pixels``.
        CorruptContent: an image whose header cannot be read.
    """
    size = len(data)
    if size > policy.max_bytes:
        raise ContentTooLarge(
            f"file is {size} bytes ({_human_size(size)}), over the limit of "
            f"{policy.max_bytes} bytes ({_human_size(policy.max_bytes)}); "
            "upload a smaller file or split it"
        )
    if size == 0:
        raise EmptyContent("file is empty")
    sniffed = sniff(data)
    if sniffed.kind == "pdf" and _PDF_ENCRYPT_RE.search(data):
        raise EncryptedContent("PDF is encrypted (password protected); upload an unprotected copy")
    if sniffed.kind == "image":
        check_pixels(read_image_info(data), policy.max_image_pixels)
    return Validation(
        kind=sniffed.kind,
        mime=sniffed.mime,
        encoding=sniffed.encoding,
        sha256=hashlib.sha256(data).hexdigest(),
        size=size,
    )
