"""HTML: the readable content of a page, without its chrome.

Parsed with lxml's libxml2 HTML parser (``parse``), which recovers from broken markup
the way browsers roughly do, decodes entities, never touches the network and
enforces a nesting-depth limit (a page nested deeper than it is refused as corrupt
rather than silently truncated); ``<noscript>`` is cut out first, so that an
unclosed element in it cannot swallow the page. Chrome (scripts, navigation, site
header/footer, hidden elements) is removed (``prune``) on the way down a pass that measures
text and link density on its way up; then the main content is
found by text and link density and cleaned of boilerplate blocks (``density``), and
walked into blocks (``render``). A page without any prose-like text (a fragment, a
list of links) keeps its ``<main>``/``<article>`` elements when it has them, else
its whole body, without its forms and the blocks named as boilerplate.
"""

from __future__ import annotations

from lxml import etree

from pipeline.processing.extract.doctype import drop_internal_subset
from pipeline.processing.extract.html.density import Stats, main_content, measure
from pipeline.processing.extract.html.parse import parse
from pipeline.processing.extract.html.prune import remove_children, tag_of
from pipeline.processing.extract.html.render import blocks_of
from pipeline.processing.extract.normalize import clean_block, join_blocks
from pipeline.processing.extract.plain import read_text


def _outermost(root: etree._Element, wanted: str) -> list[etree._Element]:
    """Elements that are ``wanted`` (``main`` also by role) and not inside another one."""
    found: list[etree._Element] = []
    stack = [root]
    while stack:
        element = stack.pop()
        if tag_of(element) == wanted or (wanted == "main" and element.get("role") == "main"):
            found.append(element)
        else:
            stack.extend(reversed(element))
    return found


def _marked_roots(root: etree._Element, stats: dict[etree._Element, Stats]) -> list[etree._Element]:
    """``<main>`` (or role=main) elements, else ``<article>`` ones, else the body,
    without forms and blocks named as boilerplate."""
    roots: list[etree._Element] = []
    for wanted in ("main", "article"):
        roots = _outermost(root, wanted)
        if roots:
            break
    else:
        body = root.find("body")
        roots = [body if body is not None else root]
    stack = list(roots)
    while stack:
        element = stack.pop()
        doomed = [
            child for child in element if stats[child].named_boilerplate or tag_of(child) == "form"
        ]
        if doomed:
            remove_children(element, doomed)
        stack.extend(element)
    return roots


def html_blocks(markup: str) -> list[str]:
    """Blocks of the readable content of an HTML document or fragment."""
    root = parse(drop_internal_subset(markup))
    if root is None:
        return []
    title = clean_block(root.findtext(".//title") or "")
    stats = measure(root)
    content = main_content(root, stats)
    if content is None:
        blocks = [block for scope in _marked_roots(root, stats) for block in blocks_of(scope)]
    else:
        blocks = blocks_of(content.headline) if content.headline is not None else []
        blocks += blocks_of(content.root)
    if not blocks and title:
        return [title]
    return blocks


def extract_html(data: bytes, encoding: str | None) -> str:
    """Text of an HTML document (see module docstring)."""
    return join_blocks(html_blocks(read_text(data, encoding)))
