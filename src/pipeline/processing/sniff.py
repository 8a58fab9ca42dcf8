"""Decide what a document really is from its bytes alone.

Filenames and declared content types are hints a client controls (and often gets
wrong), so they are never consulted. Binary containers are recognised by their
magic numbers; text is decoded (:mod:`pipeline.processing.decode`) and classified
by cheap, bounded heuristics on its beginning. Anything binary that is not a
supported container is refused here, with a reason naming what it looks like, so
no parser ever sees it; so is text that still reads as mojibake once decoded
(:mod:`pipeline.processing.garbled`), rather than being indexed as garbage.
"""

from __future__ import annotations

import codecs
import io
import re
import zipfile
from itertools import islice
from typing import Final, NoReturn

import msgspec

from pipeline.errors import CorruptContent, EmptyContent, EncryptedContent, UnsupportedContent
from pipeline.processing.charset import reads_as_well
from pipeline.processing.decode import decode_text, decode_with, looks_binary
from pipeline.processing.garbled import garbled_reason
from pipeline.processing.images import image_format
from pipeline.processing.kinds import IMAGE_MIME_TYPES, MIME_TYPES, DocumentKind

#: ``%PDF-`` may follow some junk (e.g. a mail header); readers accept it within 1 KiB.
PDF_HEADER_WINDOW: Final = 1024
#: Text classification only looks at this many leading characters.
TEXT_SNIFF_CHARS: Final = 65536
#: HTML tag heuristics only look at this many leading characters.
HTML_SNIFF_CHARS: Final = 4096

_SUPPORTED: Final = (
    "supported types are PDF, DOCX, HTML, Markdown, plain text and PNG, JPEG or TIFF images"
)

# Prefix -> what it is. Checked in order; reasons must be actionable.
_MAGIC: Final[tuple[tuple[bytes, str], ...]] = (
    (b"GIF87a", "GIF image"),
    (b"GIF89a", "GIF image"),
    (b"\x1f\x8b", "gzip archive"),
    (b"\xfd7zXZ\x00", "xz archive"),
    (b"7z\xbc\xaf\x27\x1c", "7-Zip archive"),
    (b"Rar!\x1a\x07", "RAR archive"),
    (b"\x28\xb5\x2f\xfd", "Zstandard archive"),
    (b"\x7fELF", "ELF executable"),
    (b"\xca\xfe\xba\xbe", "Mach-O or Java class file"),
    (b"\xcf\xfa\xed\xfe", "Mach-O executable"),
    (b"\xce\xfa\xed\xfe", "Mach-O executable"),
    (b"\x00asm", "WebAssembly module"),
    (b"SQLite format 3\x00", "SQLite database"),
    (b"OggS", "Ogg media file"),
    (b"fLaC", "FLAC audio file"),
    (b"ID3", "MP3 audio file"),
    (b"{\\rtf", "RTF document"),
)
_OLE2_MAGIC: Final = b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1"
_ZIP_MAGICS: Final = (b"PK\x03\x04", b"PK\x05\x06", b"PK\x07\x08")
_BZIP2_RE: Final = re.compile(rb"BZh[1-9]1AY&SY")

_XML_DECL_RE: Final = re.compile(r"<\?xml[^>]*\?>", re.IGNORECASE)
_COMMENT_RE: Final = re.compile(r"<!--.*?-->", re.DOTALL)
_HTML_START_RE: Final = re.compile(r"<!doctype\s+html|<html[\s>]", re.IGNORECASE)
_HTML_STRONG_RE: Final = re.compile(r"<(?:head|body)[\s>]", re.IGNORECASE)
_HTML_BLOCK_TAG_RE: Final = re.compile(
    r"<(p|div|h[1-6]|ul|ol|li|table|tr|td|th|section|article|main|blockquote|pre|title|meta"
    r"|link|dl|dt|dd|form|nav|header|footer)[\s>/]",
    re.IGNORECASE,
)
_HEURISTIC_CODECS: Final = frozenset(
    {
        "ascii",
        "latin-1",
        "iso8859-1",
        "cp1252",
        "utf-16",
        "utf-16-le",
        "utf-16-be",
        "utf-32",
        "utf-32-le",
        "utf-32-be",
    }
)
_META_CHARSET_RE: Final = re.compile(rb"<meta[^>]+charset\s*=\s*[\"']?\s*([A-Za-z0-9_.:-]+)", re.I)

# Markdown signals: (pattern, weight per match, cap for that signal).
_MD_SIGNALS: Final[tuple[tuple[re.Pattern[str], int, int], ...]] = (
    (re.compile(r"^ {0,3}#{1,6}[ \t]+\S", re.M), 1, 2),  # ATX heading
    (re.compile(r"^ {0,3}\S[^\n]*\n {0,3}(?:={3,}|-{3,})[ \t]*$", re.M), 1, 2),  # setext
    (re.compile(r"^ {0,3}(?:`{3,}|~{3,})", re.M), 1, 2),  # fence lines (open+close = 2)
    # Bounded classes keep hostile lines ("[[[[...", "[a]([a](...") linear.
    (re.compile(r"!?\[[^\[\]\n]{1,500}\]\([^()\s]{1,2000}(?:\s+\"[^\"\n]*\")?\)"), 1, 2),
    (re.compile(r"(?<![\w*])\*\*\S[^*\n]*\*\*(?![\w*])|(?<!\w)__\S[^_\n]*__(?!\w)"), 1, 1),
    (re.compile(r"(?<![\w`])`[^`\n]+`(?![\w`])"), 1, 1),  # inline code
    (re.compile(r"^ {0,3}> ?\S", re.M), 1, 1),  # blockquote
    (re.compile(r"^ {0,3}\|?[ \t]*:?-{3,}:?[ \t]*\|", re.M), 1, 1),  # table delimiter row
)
# A list is only a weak signal (plain text has lists too): it counts once, if 2+ items.
_MD_LIST_RE: Final = re.compile(r"^ {0,3}(?:[-*+]|\d{1,9}[.)])[ \t]+\S", re.M)
_MD_LEADING_HEADING_RE: Final = re.compile(r"\s*#{1,6}[ \t]+\S")
#: Markdown needs at least this score, so plain prose with one stray mark stays text.
MARKDOWN_MIN_SCORE: Final = 2


class Sniffed(msgspec.Struct, frozen=True):
    """What the bytes are. ``encoding`` is set for text kinds only."""

    kind: DocumentKind
    mime: str
    encoding: str | None


def _result(kind: DocumentKind, encoding: str | None = None) -> Sniffed:
    return Sniffed(kind=kind, mime=MIME_TYPES[kind], encoding=encoding)


def _unsupported(what: str) -> UnsupportedContent:
    return UnsupportedContent(f"{what} is not a supported document type; {_SUPPORTED}")


def _magic_type(data: bytes) -> str | None:
    """Name a known non-document binary format, if ``data`` starts like one."""
    for magic, what in _MAGIC:
        if data.startswith(magic):
            return what
    if _BZIP2_RE.match(data):
        return "bzip2 archive"
    if data.startswith(b"RIFF") and len(data) >= 12:
        riff = {b"WEBP": "WebP image", b"WAVE": "WAV audio file", b"AVI ": "AVI video file"}
        return riff.get(data[8:12], "RIFF media file")
    if data[4:8] == b"ftyp":
        return "MP4/QuickTime/HEIF media file"
    if data.startswith(b"MZ") and len(data) >= 64:
        pe_offset = int.from_bytes(data[60:64], "little")
        if data[pe_offset : pe_offset + 4] == b"PE\x00\x00":
            return "Windows executable"
    return None


def _sniff_ole2(data: bytes) -> NoReturn:
    """Refuse an OLE2 compound file: legacy Office, or an encrypted modern one."""
    # Password-protected DOCX/XLSX/PPTX are stored as OLE2 with this stream.
    if "EncryptedPackage".encode("utf-16-le") in data:
        raise EncryptedContent(
            "Office document is encrypted (password protected); upload an unprotected copy"
        )
    raise UnsupportedContent(
        "legacy Microsoft Office file (.doc/.xls/.ppt) is not supported; "
        "save it as DOCX or PDF and upload that"
    )


def _sniff_zip(data: bytes) -> Sniffed:
    """Accept a DOCX; name other ZIP-based formats precisely when refusing them."""
    try:
        with zipfile.ZipFile(io.BytesIO(data)) as archive:
            names = set(archive.namelist())
            mimetype = (
                archive.read("mimetype")[:100].decode("ascii", "replace")
                if "mimetype" in names and archive.getinfo("mimetype").file_size <= 100
                else ""
            )
    except (zipfile.BadZipFile, zipfile.LargeZipFile, ValueError, OSError, EOFError) as exc:
        raise CorruptContent(
            "file is a damaged or truncated ZIP archive (DOCX files are ZIP archives); "
            "upload it again"
        ) from exc
    except NotImplementedError as exc:  # e.g. an exotic compression method on "mimetype"
        raise _unsupported("ZIP archive with an unsupported compression method") from exc
    if "word/document.xml" in names and "[Content_Types].xml" in names:
        return _result("docx")
    if "xl/workbook.xml" in names:
        raise _unsupported("Excel spreadsheet (XLSX)")
    if "ppt/presentation.xml" in names:
        raise _unsupported("PowerPoint presentation (PPTX)")
    if mimetype.startswith("application/vnd.oasis.opendocument"):
        raise UnsupportedContent(
            "OpenDocument file is not a supported document type; save it as DOCX or PDF"
        )
    if mimetype == "application/epub+zip":
        raise _unsupported("EPUB e-book")
    raise UnsupportedContent(
        "ZIP archive is not a supported document type; upload the document itself, not an archive"
    )


def _html_declared_encoding(data: bytes, fallback: str) -> str:
    """The ``<meta charset>`` of an HTML page, when it decodes the bytes cleanly.

    Only consulted when the encoding was guessed: a BOM, a UTF-16/32 pattern and
    valid UTF-8 are stronger evidence than a declaration. One that is unknown,
    does not decode the bytes, decodes them into mojibake or reads them less
    cleanly than the guess (a page re-saved in another code page) is ignored
    rather than trusted.
    """
    match = _META_CHARSET_RE.search(data[:HTML_SNIFF_CHARS])
    if match is None:
        return fallback
    label = match.group(1).decode("ascii").lower()
    try:
        codec = codecs.lookup(label).name
    except LookupError:
        return fallback
    # Latin-1/ASCII/1252 labels are what the heuristic already handles (browsers
    # treat them all as Windows-1252); UTF-16/32 cannot be declared in ASCII bytes.
    if codec in _HEURISTIC_CODECS or codec == codecs.lookup(fallback).name:
        return fallback
    try:
        text = data.decode(codec)
    except (UnicodeDecodeError, LookupError):
        return fallback
    if garbled_reason(text) or not reads_as_well(data, codec, fallback):
        return fallback
    return label


def _strip_preamble(text: str) -> str:
    """Drop leading whitespace, XML declarations and comments before the first tag."""
    head = text[:HTML_SNIFF_CHARS].lstrip()
    while True:
        match = _XML_DECL_RE.match(head) or _COMMENT_RE.match(head)
        if match is None:
            return head
        head = head[match.end() :].lstrip()


def _html_tag_signal(text: str) -> int:
    """How many distinct block-level HTML tag names open near the start."""
    head = text[:HTML_SNIFF_CHARS]
    return len({m.group(1).lower() for m in _HTML_BLOCK_TAG_RE.finditer(head)})


def markdown_score(text: str) -> int:
    """Weighted count of Markdown constructs near the start of ``text``."""
    head = text[:TEXT_SNIFF_CHARS]
    score = 0
    for pattern, weight, cap in _MD_SIGNALS:
        hits = sum(1 for _ in islice(pattern.finditer(head), cap))
        score += min(hits * weight, cap)
    if sum(1 for _ in islice(_MD_LIST_RE.finditer(head), 2)) == 2:
        score += 1
    if _MD_LEADING_HEADING_RE.match(head):  # "# Title" as the first line: a README
        score += 1
    return score


def classify_text(text: str) -> DocumentKind:
    """HTML, Markdown or plain text, by the heuristics described in the module."""
    start = _strip_preamble(text)
    if _HTML_START_RE.match(start) or _HTML_STRONG_RE.search(start):
        return "html"
    md = markdown_score(text)
    tags = _html_tag_signal(start)
    # A fragment of HTML: several block tags, and more of them than Markdown signs
    # (READMEs often open with a little HTML before their Markdown).
    if tags >= 3 and tags > md:
        return "html"
    if md >= MARKDOWN_MIN_SCORE:
        return "markdown"
    return "text"


def sniff(data: bytes) -> Sniffed:
    """Detect the real type of ``data``.

    Raises:
        EmptyContent: no bytes, or only whitespace.
        UnsupportedContent: a known non-document format, or binary data.
        EncryptedContent: a password-protected Office file (OLE2-wrapped).
        CorruptContent: a ZIP archive whose directory cannot be read, or text that
            is garbled (mojibake) in every reading.
    """
    if not data:
        raise EmptyContent("file is empty")
    if b"%PDF-" in data[:PDF_HEADER_WINDOW]:
        return _result("pdf")
    if data.startswith(_ZIP_MAGICS):
        return _sniff_zip(data)
    if data.startswith(_OLE2_MAGIC):
        _sniff_ole2(data)
    image = image_format(data)  # PNG, JPEG, TIFF: read by the OCR stage
    if image is not None:
        return Sniffed(kind="image", mime=IMAGE_MIME_TYPES[image], encoding=None)
    what = _magic_type(data)
    if what is not None:
        raise _unsupported(what)
    if looks_binary(data):
        raise UnsupportedContent(f"file looks like binary data, not a document; {_SUPPORTED}")
    decoded = decode_text(data)
    if not decoded.text.strip():
        raise EmptyContent("file contains only whitespace")
    kind = classify_text(decoded.text)
    text, encoding = decoded.text, decoded.encoding
    if kind == "html" and decoded.guessed:
        encoding = _html_declared_encoding(data, encoding)
        if encoding != decoded.encoding:
            text = decode_with(data, encoding)
    if decoded.detection == "none" and encoding == decoded.encoding:
        raise CorruptContent(
            "the text's encoding could not be recognised: no known encoding reads it as "
            "plausible text; save the file as UTF-8 and upload it again"
        )
    reason = garbled_reason(text)
    if reason is not None:
        raise CorruptContent(reason)
    return _result(kind, encoding)
