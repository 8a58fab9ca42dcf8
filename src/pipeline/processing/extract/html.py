"""HTML: the readable content of a page, without its chrome.

Parsed with lxml's libxml2 HTML parser, which recovers from broken markup the way
browsers roughly do, decodes entities, never touches the network and enforces a
nesting-depth limit (a page nested deeper than it is refused as corrupt rather
than silently truncated). Boilerplate (scripts, navigation, site header/footer, forms,
hidden elements) is removed, then the main content (``<main>``/``<article>`` when
present, else ``<body>``) is walked iteratively into blocks.
"""

from __future__ import annotations

import re
from typing import Final

from lxml import etree

from pipeline.errors import CorruptContent
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


def _is_boilerplate(element: etree._Element) -> bool:
    tag = _tag(element)
    if not tag or tag in _DROP_TAGS:
        return True
    if (element.get("role") or "").strip().lower() in _DROP_ROLES:
        return True
    if (element.get("aria-hidden") or "").strip().lower() == "true":
        return True
    if element.get("hidden") is not None or _HIDDEN_STYLE.search(element.get("style") or ""):
        return True
    if tag in ("header", "footer"):
        return not any(_tag(a) in _SECTIONING for a in element.iterancestors())
    return False


def _drop(element: etree._Element) -> None:
    """Remove ``element`` and its subtree, keeping the text that follows it."""
    parent = element.getparent()
    if parent is None:
        return
    if element.tail:
        previous = element.getprevious()
        if previous is not None:
            previous.tail = (previous.tail or "") + element.tail
        else:
            parent.text = (parent.text or "") + element.tail
    parent.remove(element)


def _content_roots(root: etree._Element) -> list[etree._Element]:
    """``<main>`` (or role=main) elements, else ``<article>`` ones, else the body."""
    for wanted in ("main", "article"):
        found = [
            el
            for el in root.iter()
            if _tag(el) == wanted or (wanted == "main" and el.get("role") == "main")
        ]
        outermost = [el for el in found if not any(a in found for a in el.iterancestors())]
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
    for element in table.iter("caption", "tr"):
        if next(element.iterancestors("table"), None) is not table:
            continue  # belongs to a nested table, rendered inside its cell
        if element.tag == "caption":
            blocks.append(" ".join(_blocks_of(element, depth + 1)))
            continue
        cells = [
            " ".join(_blocks_of(cell, depth + 1)) for cell in element if _tag(cell) in ("td", "th")
        ]
        if any(cells):
            blocks.append(clean_block(" | ".join(cells)))
    return blocks


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
    root = _parse(markup)
    if root is None:
        return []
    title = clean_block(root.findtext(".//title") or "")
    for element in [el for el in root.iter() if _is_boilerplate(el)]:
        _drop(element)
    blocks = [block for scope in _content_roots(root) for block in _blocks_of(scope)]
    if not blocks and title:
        return [title]
    return blocks


def extract_html(data: bytes, encoding: str | None) -> str:
    """Text of an HTML document (see module docstring)."""
    return join_blocks(html_blocks(read_text(data, encoding)))
