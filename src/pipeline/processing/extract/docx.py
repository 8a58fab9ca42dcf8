"""DOCX: the body text of ``word/document.xml``, read with zipfile and lxml.

A DOCX is a ZIP of XML parts; only the main document part is read (headers,
footers and comments are page furniture or metadata, not content). The body is
walked in document order: every paragraph becomes one block, so headings (style
ids ``Heading1``..``Heading9``, ``Title``) naturally stand on their own; each
table row becomes one block with its cells joined by `` | ``. Deleted revisions
(``w:delText``, ``w:moveFrom``), field codes (``w:instrText``) and the
``mc:Fallback`` duplicates of text boxes are skipped.

The XML parser never resolves entities, loads DTDs or uses the network (XXE, and
"billion laughs" against entity expansion), and the decompressed size of the part
is capped before parsing (ZIP bombs).
"""

from __future__ import annotations

import io
import zipfile
import zlib
from typing import Final

from lxml import etree

from pipeline.errors import ContentTooLarge, CorruptContent
from pipeline.processing.extract.normalize import clean_block, join_blocks

#: Refuse a ``word/document.xml`` that decompresses to more than this.
MAX_DOCUMENT_XML_BYTES: Final = 64 * 1024 * 1024

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


def _read_document_xml(data: bytes) -> bytes:
    try:
        with zipfile.ZipFile(io.BytesIO(data)) as archive:
            try:
                info = archive.getinfo(_DOCUMENT_PART)
            except KeyError:
                raise CorruptContent(
                    "DOCX is missing word/document.xml; re-save it from a word processor"
                ) from None
            if info.file_size > MAX_DOCUMENT_XML_BYTES:
                raise ContentTooLarge(_too_large_reason())
            with archive.open(info) as part:
                xml = part.read(MAX_DOCUMENT_XML_BYTES + 1)
    except (zipfile.BadZipFile, zlib.error, EOFError, OSError, ValueError) as exc:
        raise CorruptContent(
            f"DOCX is corrupt or unreadable ({exc}); re-save it and upload it again"
        ) from exc
    except (NotImplementedError, RuntimeError) as exc:  # exotic compression, encrypted entry
        raise CorruptContent(
            f"DOCX cannot be read ({exc}); re-save it without encryption or special compression"
        ) from exc
    if len(xml) > MAX_DOCUMENT_XML_BYTES:
        raise ContentTooLarge(_too_large_reason())
    return xml


def _too_large_reason() -> str:
    limit = MAX_DOCUMENT_XML_BYTES // (1024 * 1024)
    return f"DOCX text part is larger than {limit} MiB once decompressed; split the document"


def extract_docx(data: bytes) -> str:
    """Text of a DOCX document (see module docstring)."""
    xml = _read_document_xml(data)
    parser = etree.XMLParser(
        resolve_entities=False,
        no_network=True,
        load_dtd=False,
        huge_tree=False,
        remove_comments=True,
        remove_pis=True,
    )
    try:
        root = etree.fromstring(xml, parser)
    except etree.XMLSyntaxError as exc:
        line, _column = exc.position
        raise CorruptContent(
            f"DOCX is corrupt: its document.xml is not well-formed XML (line {line}); "
            "re-save it from a word processor"
        ) from exc
    body = next((el for el in root if _name(el) == ("w", "body")), None)
    if _name(root) != ("w", "document") or body is None:
        raise CorruptContent("DOCX is corrupt: its document.xml has no document body; re-save it")
    return join_blocks(_blocks(body))
