"""DOCX: the body text of ``word/document.xml``, read with zipfile and lxml.

A DOCX is a ZIP of XML parts; only the main document part is read (headers,
footers and comments are page furniture or metadata, not content). The body is
walked in document order: every paragraph becomes one block, so headings (style
ids ``Heading1``..``Heading9``, ``Title``) naturally stand on their own; each
table row becomes one block with its cells joined by `` | ``. Deleted revisions
(``w:delText``, ``w:moveFrom``), field codes (``w:instrText``) and the
``mc:Fallback`` duplicates of text boxes are skipped.

The XML parser never resolves entities, loads DTDs or uses the network (XXE, and
"billion laughs" against entity expansion: libxml2 refuses one by its amplification
limit, reported as such), and refuses elements nested deeper than
libxml2's default 256 levels (so the recursive walk below stays shallow). Against ZIP
bombs the archive's directory is checked before anything is decompressed (number of
parts, their declared sizes, their compression ratios: see
:class:`~pipeline.processing.limits.DocxLimits`), and the one part that is read is
decompressed in slices against the same limits, because a directory can lie.
"""

from __future__ import annotations

import io
import zipfile
import zlib
from typing import IO, Final

from lxml import etree

from pipeline.errors import ArchiveTooLarge, CorruptContent
from pipeline.processing.extract.normalize import clean_block, join_blocks
from pipeline.processing.limits import RATIO_GRACE_BYTES, DocxLimits, human_size

#: ``word/document.xml`` is decompressed this many bytes at a time.
READ_SLICE_BYTES: Final = 1024 * 1024
_SHOWN_NAME_CHARS: Final = 80
# libxml2's nesting limit without XML_PARSE_HUGE, reported as ERR_RESOURCE_LIMIT.
_XML_MAX_DEPTH: Final = 256

# Entities are never substituted, yet libxml2 still measures what their references
# would expand to and stops at an exponential declaration ("billion laughs").
_ENTITIES_REASON: Final = (
    'DOCX declares entities that expand exponentially ("billion laughs"); '
    "a Word document never declares entities: re-save it from a word processor"
)

_DOCUMENT_PART: Final = "word/document.xml"
# Transitional and Strict OOXML use different namespaces for the same vocabulary.
_W_NAMESPACES: Final = frozenset(
    {
        "http://schemas.openxmlformats.org/wordprocessingml/2006/main",
        "http://purl.oclc.org/ooxml/wordprocessingml/main",
    }
)
_MC: Final = "http://schemas.openxmlformats.org/markup-compatibility/2006"
# Block-level wrappers whose children are paragraphs/tables again.
_CONTAINERS: Final = frozenset({"sdt", "sdtContent", "customXml", "ins", "moveTo"})
_BREAKS: Final = frozenset({"tab", "ptab", "br", "cr"})
_SKIPPED_RUNS: Final = frozenset({"moveFrom", "del", "instrText", "delText", "fldData"})


def _name(element: etree._Element) -> tuple[str, str]:
    """(namespace kind, local name): kind is "w", "mc" or ""."""
    tag = element.tag
    if not isinstance(tag, str) or not tag.startswith("{"):
        return "", ""
    namespace, _, local = tag[1:].partition("}")
    if namespace in _W_NAMESPACES:
        return "w", local
    return ("mc" if namespace == _MC else ""), local


def _paragraph_text(paragraph: etree._Element) -> str:
    parts: list[str] = []
    stack = [paragraph]
    while stack:
        element = stack.pop()
        kind, local = _name(element)
        if kind == "w" and local == "t":
            parts.append(element.text or "")
        elif kind == "w" and local in _BREAKS:
            parts.append(" ")
        elif kind == "w" and local == "noBreakHyphen":
            parts.append("-")
        elif (kind == "w" and local in _SKIPPED_RUNS) or (kind == "mc" and local == "Fallback"):
            continue
        stack.extend(reversed(element))
    return clean_block("".join(parts))


def _blocks(container: etree._Element) -> list[str]:
    """Blocks of the paragraphs and tables directly in ``container``, in order."""
    blocks: list[str] = []
    for element in container:
        kind, local = _name(element)
        if kind == "w" and local == "p":
            blocks.append(_paragraph_text(element))
        elif kind == "w" and local == "tbl":
            blocks.extend(_table_rows(element))
        elif (kind == "w" and local in _CONTAINERS) or (
            kind == "mc" and local in ("AlternateContent", "Choice")
        ):
            blocks.extend(_blocks(element))
    return [block for block in blocks if block]


def _children(element: etree._Element, wanted: str) -> list[etree._Element]:
    """Children named ``wanted``, looking through content-control wrappers."""
    found: list[etree._Element] = []
    for child in element:
        kind, local = _name(child)
        if kind == "w" and local == wanted:
            found.append(child)
        elif kind == "w" and local in _CONTAINERS:
            found.extend(_children(child, wanted))
    return found


def _table_rows(table: etree._Element) -> list[str]:
    rows: list[str] = []
    for row in _children(table, "tr"):
        cells = [" ".join(_blocks(cell)) for cell in _children(row, "tc")]
        if any(cells):
            rows.append(clean_block(" | ".join(cells)))
    return rows


def _read_document_xml(data: bytes, limits: DocxLimits) -> bytes:
    try:
        with zipfile.ZipFile(io.BytesIO(data)) as archive:
            check_directory(archive.infolist(), limits)
            try:
                info = archive.getinfo(_DOCUMENT_PART)
            except KeyError:
                raise CorruptContent(
                    "DOCX is missing word/document.xml; re-save it from a word processor"
                ) from None
            with archive.open(info) as part:
                return read_capped(part, info, limits)
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


def read_capped(part: IO[bytes], info: zipfile.ZipInfo, limits: DocxLimits) -> bytes:
    """The part's bytes, decompressed in slices against the limits as they grow.

    The directory's sizes were checked already, but they are whatever the archive
    says: this bounds what is really decompressed, whatever it said.
    """
    pieces: list[bytes] = []
    size = 0
    while piece := part.read(READ_SLICE_BYTES):
        size += len(piece)
        _check_part(info.filename, size, info.compress_size, limits)
        pieces.append(piece)
    return b"".join(pieces)


def _expands_reason(limit: int) -> str:
    return (
        f"DOCX expands to more than {human_size(limit)} when decompressed (zip bomb?); "
        "split the document"
    )


def _shown(name: str) -> str:
    """A part name fit for a reason: printable and short (it comes from the upload)."""
    printable = "".join(ch if ch.isprintable() else "?" for ch in name[:_SHOWN_NAME_CHARS])
    return repr(printable + ("..." if len(name) > _SHOWN_NAME_CHARS else ""))


def _parse(xml: bytes) -> etree._Element:
    parser = etree.XMLParser(
        resolve_entities=False,
        no_network=True,
        load_dtd=False,
        huge_tree=False,
        remove_comments=True,
        remove_pis=True,
    )
    try:
        return etree.fromstring(xml, parser)
    except etree.XMLSyntaxError as exc:
        exceeded = [e.message for e in parser.error_log if e.type_name == "ERR_RESOURCE_LIMIT"]
        # libxml2 reports entity amplification and nesting depth under the same code;
        # only its message tells them apart.
        if any("entit" in message.lower() for message in exceeded):
            raise CorruptContent(_ENTITIES_REASON) from exc
        if exceeded:
            raise CorruptContent(
                f"DOCX nests elements too deeply to be read (over {_XML_MAX_DEPTH} levels); "
                "re-save it from a word processor"
            ) from exc
        line, _column = exc.position
        raise CorruptContent(
            f"DOCX is corrupt: its document.xml is not well-formed XML (line {line}); "
            "re-save it from a word processor"
        ) from exc


def extract_docx(data: bytes, limits: DocxLimits) -> str:
    """Text of a DOCX document (see module docstring).

    Raises:
        ArchiveTooLarge: the package breaks one of ``limits``.
        CorruptContent: not a readable DOCX, nested too deeply, or declaring
            exponentially expanding entities.
    """
    root = _parse(_read_document_xml(data, limits))
    body = next((el for el in root if _name(el) == ("w", "body")), None)
    if _name(root) != ("w", "document") or body is None:
        raise CorruptContent("DOCX is corrupt: its document.xml has no document body; re-save it")
    return join_blocks(_blocks(body))
