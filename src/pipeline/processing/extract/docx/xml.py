"""Safe parsing of the package's XML parts, and the vocabulary's names.

The parser never resolves entities, loads DTDs or uses the network (XXE, and "billion
laughs" against entity expansion: libxml2 refuses one by its amplification limit,
reported as such), and refuses elements nested deeper than libxml2's default 256
levels, so the recursive walks over a parsed part stay far from Python's own limit.

Transitional and Strict OOXML spell the same vocabulary in different namespaces:
:func:`name` folds them into one short kind per vocabulary.
"""

from __future__ import annotations

from typing import Final

from lxml import etree

from pipeline.errors import CorruptContent

# libxml2's nesting limit without XML_PARSE_HUGE, reported as ERR_RESOURCE_LIMIT.
XML_MAX_DEPTH: Final = 256

# Entities are never substituted, yet libxml2 still measures what their references
# would expand to and stops at an exponential declaration ("billion laughs").
_ENTITIES_REASON: Final = (
    'DOCX declares entities that expand exponentially ("billion laughs"); '
    "a Word document never declares entities: re-save it from a word processor"
)

_W: Final = (
    "http://schemas.openxmlformats.org/wordprocessingml/2006/main",
    "http://purl.oclc.org/ooxml/wordprocessingml/main",
)
_M: Final = (
    "http://schemas.openxmlformats.org/officeDocument/2006/math",
    "http://purl.oclc.org/ooxml/officeDocument/math",
)
_W14: Final = "http://schemas.microsoft.com/office/word/2010/wordml"
_MC: Final = "http://schemas.openxmlformats.org/markup-compatibility/2006"
_KINDS: Final[dict[str, str]] = {
    **dict.fromkeys(_W, "w"),
    **dict.fromkeys(_M, "m"),
    _W14: "w14",
    _MC: "mc",
}
# Attributes are qualified like their element (w:val on w:lvl, m:val on m:chr...).
_ATTRIBUTE_NAMESPACES: Final[dict[str, tuple[str, ...]]] = {
    "w": _W,
    "m": _M,
    "w14": (_W14,),
}
_ATTRIBUTE_KEYS: dict[tuple[str, str], tuple[str, ...]] = {}
_TRUE: Final = frozenset({"1", "true", "on"})


# name() is the walks' inner loop: a document uses a few dozen tags, each split once.
_NAMES: dict[str, tuple[str, str]] = {}
_MAX_NAMES: Final = 4096


def name(element: etree._Element) -> tuple[str, str]:
    """(vocabulary, local name): vocabulary is "w", "m", "w14", "mc" or ""."""
    tag = element.tag  # a function, not a string, for an unresolved entity reference
    known = _NAMES.get(tag)
    if known is None:
        if isinstance(tag, str) and tag.startswith("{"):
            namespace, _, local = tag[1:].partition("}")
            known = (_KINDS.get(namespace, ""), local)
        else:
            known = ("", "")
        if len(_NAMES) < _MAX_NAMES:
            _NAMES[tag] = known
    return known


def attribute(element: etree._Element, local: str) -> str | None:
    """The attribute ``local`` in the element's own vocabulary (``w:val``...), if set."""
    kind = name(element)[0]
    keys = _ATTRIBUTE_KEYS.get((kind, local))
    if keys is None:  # local names come from this code, not the document: few of them
        namespaces = _ATTRIBUTE_NAMESPACES.get(kind, ())
        keys = _ATTRIBUTE_KEYS[kind, local] = tuple(f"{{{ns}}}{local}" for ns in namespaces)
    for key in keys:
        found = element.get(key)
        if found is not None:
            return found
    return None


def child(element: etree._Element, kind: str, local: str) -> etree._Element | None:
    """The first child named ``kind:local``."""
    for candidate in element:
        if name(candidate) == (kind, local):
            return candidate
    return None


def value(element: etree._Element | None, kind: str, local: str) -> str | None:
    """The ``val`` attribute of ``element``'s child ``kind:local`` (``<w:start w:val=..>``)."""
    found = None if element is None else child(element, kind, local)
    return None if found is None else attribute(found, "val")


def is_on(element: etree._Element | None) -> bool:
    """An OOXML on/off property: present and not ``val="0"``/``"false"``/``"off"``."""
    if element is None:
        return False
    setting = attribute(element, "val")
    return setting is None or setting.lower() in _TRUE


def parse(xml: bytes, part: str) -> etree._Element:
    """The root of a package part.

    Raises:
        CorruptContent: not well-formed, nested too deeply, or declaring exponentially
            expanding entities.
    """
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
                f"DOCX nests elements too deeply to be read (over {XML_MAX_DEPTH} levels); "
                "re-save it from a word processor"
            ) from exc
        line, _column = exc.position
        raise CorruptContent(
            f"DOCX is corrupt: its {part.rsplit('/', 1)[-1]} is not well-formed XML "
            f"(line {line}); re-save it from a word processor"
        ) from exc
