"""HTML: the readable content of a page, without its chrome.

Parsed with lxml's libxml2 HTML parser, which recovers from broken markup the way
browsers roughly do, decodes entities, never touches the network and enforces a
nesting-depth limit (a page nested deeper than it is refused as corrupt rather
than silently truncated). Boilerplate (scripts, navigation, site header/footer, forms,
hidden elements) is removed, then the main content (``<main>``/``<article>`` when
present, else ``<body>``) is walked iteratively into blocks.

Every pass over the tree is top-down and linear in its size: nothing asks each
element for its ancestors, and removed text is joined once per parent, because a
hostile page of a few megabytes has hundreds of thousands of elements, and anything
quadratic in them would run into the sandbox's time limit instead of finishing.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Final

from lxml import etree

from pipeline.errors import CorruptContent
from pipeline.processing.extract.doctype import drop_internal_subset
from pipeline.processing.extract.normalize import clean_block, clean_preformatted, join_blocks
from pipeline.processing.extract.plain import read_text

_DROP_TAGS: Final = frozenset(
    {
        "script", "style", "noscript", "template", "nav", "aside", "form", "iframe",
        "svg", "button", "object", "embed", "canvas", "select", "textarea", "datalist",
        "math", "head",
    }
)  # fmt: skip
_DROP_ROLES: Final = frozenset({"navigation", "banner", "contentinfo", "search", "complementary"})
# <header>/<footer> are the page banner/contentinfo only outside these (HTML-AAM);
# inside an article they hold its title and byline, which are content.
_SECTIONING: Final = frozenset({"article", "aside", "main", "nav", "section"})
_HIDDEN_STYLE: Final = re.compile(r"display\s*:\s*none|visibility\s*:\s*hidden", re.I)

_BLOCK_TAGS: Final = frozenset(
    {
        "address", "article", "aside", "blockquote", "body", "caption", "center", "dd",
        "details", "dialog", "dir", "div", "dl", "dt", "fieldset", "figcaption", "figure",
        "footer", "h1", "h2", "h3", "h4", "h5", "h6", "header", "hgroup", "hr", "html",
        "legend", "li", "main", "menu", "ol", "p", "pre", "section", "summary", "table",
        "tbody", "td", "tfoot", "th", "thead", "tr", "ul",
    }
)  # fmt: skip
#: Tables nested deeper than this inside table cells are flattened to plain text.
MAX_TABLE_NESTING: Final = 16


def _tag(element: etree._Element) -> str:
    tag = element.tag
    return tag.lower() if isinstance(tag, str) else ""


def _text_content(element: etree._Element) -> str:
    return "".join(text for text in element.itertext() if isinstance(text, str))


def _is_boilerplate(element: etree._Element, sectioned: bool) -> bool:
    """Whether ``element`` is page chrome; ``sectioned``: it is inside a sectioning element."""
    tag = _tag(element)
    if not tag or tag in _DROP_TAGS:
        return True
    if (element.get("role") or "").strip().lower() in _DROP_ROLES:
        return True
    if (element.get("aria-hidden") or "").strip().lower() == "true":
        return True
    if element.get("hidden") is not None or _HIDDEN_STYLE.search(element.get("style") or ""):
        return True
    return tag in ("header", "footer") and not sectioned


def _prune(root: etree._Element) -> None:
    """Remove the boilerplate subtrees below ``root``, keeping the text that follows each.

    One top-down pass that carries "inside a sectioning element" down the tree, and
    never enters a subtree it removes.
    """
    stack: list[tuple[etree._Element, bool]] = [(root, False)]
    while stack:
        element, sectioned = stack.pop()
        inner = sectioned or _tag(element) in _SECTIONING
        doomed = [child for child in element if _is_boilerplate(child, inner)]
        if doomed:
            _remove_children(element, doomed)
        stack.extend((child, inner) for child in element)


def _remove_children(parent: etree._Element, doomed: list[etree._Element]) -> None:
    """Remove ``doomed`` children of ``parent``; their tails join the text before them.

    The text is gathered per run and joined once (appending tail after tail to the
    same string would be quadratic in a run of thousands of removed siblings).
    """
    doomed_set = set(doomed)
    anchor: etree._Element | None = None  # None: the text goes to parent.text
    pieces = [parent.text or ""]
    for child in list(parent):
        if child in doomed_set:
            pieces.append(child.tail or "")
            parent.remove(child)
            continue
        _set_leading_text(parent, anchor, pieces)
        anchor, pieces = child, [child.tail or ""]
    _set_leading_text(parent, anchor, pieces)


def _set_leading_text(
    parent: etree._Element, anchor: etree._Element | None, pieces: list[str]
) -> None:
    if len(pieces) == 1:  # nothing was removed after the anchor
        return
    if anchor is None:
        parent.text = "".join(pieces)
    else:
        anchor.tail = "".join(pieces)


def _outermost(root: etree._Element, wanted: str) -> list[etree._Element]:
    """Elements that are ``wanted`` (``main`` also by role) and not inside another one."""
    found: list[etree._Element] = []
    stack = [root]
    while stack:
        element = stack.pop()
        if _tag(element) == wanted or (wanted == "main" and element.get("role") == "main"):
            found.append(element)
        else:
            stack.extend(reversed(element))
    return found


def _content_roots(root: etree._Element) -> list[etree._Element]:
    """``<main>`` (or role=main) elements, else ``<article>`` ones, else the body."""
    for wanted in ("main", "article"):
        outermost = _outermost(root, wanted)
        if outermost:
            return outermost
    body = root.find("body")
    return [body if body is not None else root]


class _Blocks:
    """Accumulates inline text and cuts it into blocks at block boundaries."""

    def __init__(self) -> None:
        self.blocks: list[str] = []
        self._parts: list[str] = []

    def text(self, text: str | None) -> None:
        if text:
            self._parts.append(text)

    def flush(self) -> None:
        if self._parts:
            block = clean_block("".join(self._parts))
            self._parts = []
            if block:
                self.blocks.append(block)

    def add(self, block: str) -> None:
        self.flush()
        if block:
            self.blocks.append(block)


def _blocks_of(scope: etree._Element, table_depth: int = 0) -> list[str]:
    """Blocks of ``scope`` in document order (iterative: deep trees are fine)."""
    out = _Blocks()
    stack: list[tuple[etree._Element, bool]] = [(scope, True)]
    while stack:
        element, entering = stack.pop()
        tag = _tag(element)
        if not entering:
            if tag in _BLOCK_TAGS:
                out.flush()
            if element is not scope:
                out.text(element.tail)
            continue
        stack.append((element, False))
        if tag == "pre":
            out.add(clean_preformatted(_text_content(element)))
        elif tag == "table":
            for block in _table_blocks(element, table_depth):
                out.add(block)
        else:
            if tag in _BLOCK_TAGS:
                out.flush()
            elif tag == "br":
                out.text(" ")
            out.text(element.text)
            stack.extend((child, True) for child in reversed(element))
    out.flush()
    return out.blocks


def _table_blocks(table: etree._Element, depth: int) -> list[str]:
    """Caption, then one block per non-empty row with cells joined by `` | ``."""
    if depth >= MAX_TABLE_NESTING:
        return [clean_block(_text_content(table))]
    blocks: list[str] = []
    for element in _own_rows(table):
        if _tag(element) == "caption":
            blocks.append(" ".join(_blocks_of(element, depth + 1)))
            continue
        cells = [
            " ".join(_blocks_of(cell, depth + 1)) for cell in element if _tag(cell) in ("td", "th")
        ]
        if any(cells):
            blocks.append(clean_block(" | ".join(cells)))
    return blocks


def _own_rows(table: etree._Element) -> Iterator[etree._Element]:
    """The captions and rows of ``table``, in order, not those of tables nested in it
    (they are rendered inside their cells)."""
    stack = list(reversed(table))
    while stack:
        element = stack.pop()
        tag = _tag(element)
        if tag == "table":
            continue
        if tag in ("caption", "tr"):
            yield element
        stack.extend(reversed(element))


def _parse(markup: str) -> etree._Element | None:
    # A parser per call: lxml parsers must not be shared between threads.
    # huge_tree raises libxml2's nesting limit from 256 to 2048 levels: sloppy pages
    # with hundreds of unclosed <font>/<div> tags are real. Input size is bounded
    # by validation, and the walk below is iterative, so depth costs nothing more.
    parser = etree.HTMLParser(
        encoding="utf-8",
        no_network=True,
        remove_comments=True,
        remove_pis=True,
        recover=True,
        huge_tree=True,
    )
    try:
        root = etree.fromstring(markup.encode("utf-8"), parser)
    except etree.LxmlError:
        return None
    if any(
        entry.type_name == "ERR_NO_MEMORY" or "Memory allocation failed" in entry.message
        for entry in parser.error_log
    ):
        # With recover=True libxml2 reports an allocation failure as a log entry and
        # returns what it had: an empty or partial tree. Under the sandbox's memory
        # cap that must fail loudly, not look like a page without text.
        raise MemoryError("libxml2 ran out of memory while parsing HTML")
    if any(entry.type_name == "ERR_RESOURCE_LIMIT" for entry in parser.error_log):
        # libxml2 stopped parsing: what follows would be silently lost.
        raise CorruptContent(
            "HTML nests elements too deeply to be read (over 2048 levels); "
            "fix the markup and upload it again"
        )
    return root


def html_blocks(markup: str) -> list[str]:
    """Blocks of the readable content of an HTML document or fragment."""
    root = _parse(drop_internal_subset(markup))
    if root is None:
        return []
    title = clean_block(root.findtext(".//title") or "")
    _prune(root)
    blocks = [block for scope in _content_roots(root) for block in _blocks_of(scope)]
    if not blocks and title:
        return [title]
    return blocks


def extract_html(data: bytes, encoding: str | None) -> str:
    """Text of an HTML document (see module docstring)."""
    return join_blocks(html_blocks(read_text(data, encoding)))
