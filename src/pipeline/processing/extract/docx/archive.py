"""The DOCX package: the few XML parts extraction reads, out of a ZIP that may be a bomb.

Against ZIP bombs the archive's directory is checked before anything is decompressed
(number of parts, their declared sizes, their compression ratios: see
:class:`~pipeline.processing.limits.DocxLimits`), and each part that is read is
decompressed in slices against the same limits, because a directory can lie.

Three parts are read, by the names every word processor writes: ``word/document.xml``
(required), and ``word/numbering.xml`` with ``word/styles.xml`` (optional, and only
when the document has numbering: styles attach numbering to headings).
"""

from __future__ import annotations

import io
import zipfile
import zlib
from dataclasses import dataclass
from typing import IO, Final

from pipeline.errors import ArchiveTooLarge, CorruptContent
from pipeline.processing.limits import RATIO_GRACE_BYTES, DocxLimits, human_size

#: A part is decompressed this many bytes at a time.
READ_SLICE_BYTES: Final = 1024 * 1024
_SHOWN_NAME_CHARS: Final = 80

DOCUMENT_PART: Final = "word/document.xml"
NUMBERING_PART: Final = "word/numbering.xml"
STYLES_PART: Final = "word/styles.xml"


@dataclass(frozen=True, slots=True)
class Parts:
    """The raw XML of the parts extraction reads (``None``: not in the package)."""

    document: bytes
    numbering: bytes | None
    styles: bytes | None


def read_parts(data: bytes, limits: DocxLimits) -> Parts:
    """The document part, and the numbering and styles parts when there is numbering.

    Raises:
        ArchiveTooLarge: the package breaks one of ``limits``.
        CorruptContent: not a readable ZIP, or no ``word/document.xml``.
    """
    try:
        with zipfile.ZipFile(io.BytesIO(data)) as archive:
            infos = archive.infolist()
            check_directory(infos, limits)
            by_name = {info.filename: info for info in infos}
            if DOCUMENT_PART not in by_name:
                raise CorruptContent(
                    "DOCX is missing word/document.xml; re-save it from a word processor"
                )

            budget = _Budget(limits)
            document = budget.read(archive, by_name[DOCUMENT_PART])
            numbering = budget.read_optional(archive, by_name.get(NUMBERING_PART))
            styles = budget.read_optional(archive, by_name.get(STYLES_PART)) if numbering else None
            return Parts(document=document, numbering=numbering, styles=styles)
    except (zipfile.BadZipFile, zlib.error, EOFError, OSError, ValueError) as exc:
        raise CorruptContent(
            f"DOCX is corrupt or unreadable ({exc}); re-save it and upload it again"
        ) from exc
    except (NotImplementedError, RuntimeError) as exc:  # exotic compression, encrypted entry
        raise CorruptContent(
            f"DOCX cannot be read ({exc}); re-save it without encryption or special compression"
        ) from exc


def check_directory(infos: list[zipfile.ZipInfo], limits: DocxLimits) -> None:
    """Refuse an archive whose directory promises more than ``limits`` allow.

    Costs nothing but arithmetic on the directory: no part is decompressed.

    Raises:
        ArchiveTooLarge: too many parts, too large in total or in one part, or a part
            compressed suspiciously well.
    """
    if len(infos) > limits.max_parts:
        raise ArchiveTooLarge(
            f"DOCX has {len(infos)} parts, more than the limit of {limits.max_parts}; "
            "it is not an ordinary Word document (zip bomb?)"
        )
    total = sum(info.file_size for info in infos)
    if total > limits.max_expanded_bytes:
        raise ArchiveTooLarge(_expands_reason(limits.max_expanded_bytes))
    for info in infos:
        _check_part(info.filename, info.file_size, info.compress_size, limits)


def _check_part(name: str, expanded: int, compressed: int, limits: DocxLimits) -> None:
    """Refuse one part that expands (or has expanded so far) past ``limits``."""
    if expanded > limits.max_part_bytes:
        raise ArchiveTooLarge(
            f"DOCX part {_shown(name)} expands to more than "
            f"{human_size(limits.max_part_bytes)} when decompressed (zip bomb?); "
            "split the document"
        )
    if expanded > RATIO_GRACE_BYTES and expanded > limits.max_ratio * max(compressed, 1):
        raise ArchiveTooLarge(
            f"DOCX part {_shown(name)} is compressed more than {limits.max_ratio}:1 "
            "(zip bomb?); re-save it from a word processor"
        )


def read_capped(
    part: IO[bytes], info: zipfile.ZipInfo, limits: DocxLimits, *, read_before: int = 0
) -> bytes:
    """The part's bytes, decompressed in slices against the limits as they grow.

    The directory's sizes were checked already, but they are whatever the archive
    says: this bounds what is really decompressed, whatever it said, in this part and
    (with the ``read_before`` bytes of the parts read before it) in all of them.
    """
    pieces: list[bytes] = []
    size = 0
    while piece := part.read(READ_SLICE_BYTES):
        size += len(piece)
        _check_part(info.filename, size, info.compress_size, limits)
        if read_before + size > limits.max_expanded_bytes:
            raise ArchiveTooLarge(_expands_reason(limits.max_expanded_bytes))
        pieces.append(piece)
    return b"".join(pieces)


class _Budget:
    """Reads parts one after the other against one running total."""

    def __init__(self, limits: DocxLimits) -> None:
        self._limits = limits
        self._read = 0

    def read(self, archive: zipfile.ZipFile, info: zipfile.ZipInfo) -> bytes:
        with archive.open(info) as part:
            data = read_capped(part, info, self._limits, read_before=self._read)
        self._read += len(data)
        return data

    def read_optional(self, archive: zipfile.ZipFile, info: zipfile.ZipInfo | None) -> bytes | None:
        return None if info is None else self.read(archive, info)


def _expands_reason(limit: int) -> str:
    return (
        f"DOCX expands to more than {human_size(limit)} when decompressed (zip bomb?); "
        "split the document"
    )


def _shown(name: str) -> str:
    """A part name fit for a reason: printable and short (it comes from the upload)."""
    printable = "".join(ch if ch.isprintable() else "?" for ch in name[:_SHOWN_NAME_CHARS])
    return repr(printable + ("..." if len(name) > _SHOWN_NAME_CHARS else ""))
