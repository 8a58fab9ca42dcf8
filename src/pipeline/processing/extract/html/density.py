"""Finding a page's main content by text and link density, then dropping its boilerplate.

One bottom-up pass measures every element: its text, the part of it that is link
text, whether it holds form fields, and its *good text*: the non-link text of the
blocks that read like prose (a paragraph of 80 characters, or of 25 with
punctuation, at most 30% of it links). Boilerplate named as such (``hints``) and
forms count no good text, unless they hold an element named like content (a page
wrapper called ``has-sidebar``, a whole page in an ASP.NET ``<form>``).

The content is where the good text is: the deepest element grouping blocks (a
``<div>``, ``<section>``, a table cell, ...) that holds 70% of the page's good text
(but not one ``<section>`` of several with prose: a long document in sections is read
whole even when one of them holds most of its text),
widened to its ancestors as long as they add at most 10% more good text (the
headline, the byline, the date sit around the story's body; the teaser cards and
comments do not), and never past an ``<article>``, ``<main>`` (or role=main) or a
table cell. So ``<article>`` and ``<main>`` are hints that bound the content, but
teaser cards marked up as articles are left out when the story sits in ``<div>`` s.
Inside the content, a block that does not hold the story's body is dropped when it
is named as boilerplate, holds a form with little text (newsletter, comment and
search boxes), is mostly link text (share bars, tag lists, bylines that are only
links, related-post lists under any class name), or is a card with little good text
and no ``<h1>``: a teaser (its heading is a link) or just link-heavy. Density alone
never drops a block that holds code outside its links (``<code>``, ``<kbd>``: an API
reference's parameter list, typed by links to the types' pages), nor one with a
single short link (a type, a term; one link of a story headline's length can be a
related story). Permalinks without words (a heading's "¶") are dropped too. The
headline is kept when it sits before the content.

Every pass is iterative and linear in the size of the tree.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Final

from lxml import etree

from pipeline.processing.extract.html.hints import hint
from pipeline.processing.extract.html.prune import (
    SECTIONING,
    prune_children,
    remove_children,
    tag_of,
)
from pipeline.processing.extract.html.render import BLOCK_TAGS, text_content

#: Share of the page's good text the content's body must hold.
BODY_SHARE: Final = 0.7
#: How much good text an ancestor of the body may add and still be part of the content.
WIDEN_SLACK: Final = 0.1
_LINK_HEAVY: Final = 0.5  # a block whose text is more links than not
_CARD_LINKS: Final = 0.3  # a card: this much link text, and little good text
_CARD_GOOD: Final = 0.1  # "little": under this share of the body's good text
_TEASER_GOOD: Final = 0.5  # a teaser: a linked heading, and under this share
_STORY_LINK: Final = 20  # one link this long can be a related story; shorter, a term
_FORM_TEXT: Final = 400  # a form with less text than this is a box, not the page
_PUNCTUATION: Final = re.compile(r"[.!?,;:]")
_WORD: Final = re.compile(r"\w")
_CONTAINERS: Final = frozenset(
    {
        "article", "aside", "center", "div", "dl", "footer", "form", "header", "menu",
        "ol", "section", "span", "table", "ul",
    }
)  # fmt: skip
# Elements that group blocks: the body of the content is one of these (or the body),
# never a paragraph, a list or an inline element that happens to hold most of the text.
_GROUPS: Final = frozenset(
    {
        "article", "center", "div", "footer", "form", "header", "main", "section", "table",
        "tbody", "td", "tfoot", "th", "thead", "tr",
    }
)  # fmt: skip
_CODE: Final = frozenset({"code", "kbd", "samp", "var"})
_SUBHEADINGS: Final = frozenset({"h2", "h3", "h4", "h5", "h6"})
_BOUNDS: Final = frozenset({"article", "main", "td", "th"})  # and role=main
_TOP: Final = frozenset({"html", "body"})


class Stats:
    """What the density pass knows of one element's subtree."""

    __slots__ = (
        "anchors", "block", "code", "forms", "good", "good_all", "headline", "inline",
        "inline_links",
        "inline_punct", "linked_heading", "links", "named_boilerplate", "named_content",
        "text",
    )  # fmt: skip

    def __init__(self, block: bool) -> None:
        self.block = block  # the element is a block (its text is not its parent's block's)
        self.text = 0  # characters of text (whitespace at the ends of pieces excluded)
        self.links = 0  # ... of them inside links
        self.anchors = 0  # links with text (outermost <a> elements)
        self.code = 0  # characters of code (<code>, <kbd>, <samp>, <var>) outside links
        self.good = 0  # good text, boilerplate named as such and forms excluded
        self.good_all = 0  # good text, hints ignored
        self.forms = 0  # <form> and <input> elements
        self.headline = False  # an <h1> is in it
        self.linked_heading = False  # a heading that is a link is in it (a teaser card's)
        self.inline = 0  # text of the block this element is part of, so far
        self.inline_links = 0
        self.inline_punct = False
        self.named_boilerplate = False
        self.named_content = False  # this element or one below it is named like content


def measure(root: etree._Element) -> dict[etree._Element, Stats]:
    """Prune the chrome below ``root`` (``prune``), then the stats of every element left.

    One depth-first pass: chrome is removed on the way down, stats are summed on the
    way up.
    """
    stats: dict[etree._Element, Stats] = {}
    stack: list[tuple[etree._Element, str | None, bool, bool]] = [(root, None, False, False)]
    while stack:
        element, closing, in_link, sectioned = stack.pop()
        if closing is not None:  # on the way up: the tag, and whether it is inside a link
            stats[element] = _close(element, closing, in_link, stats)
            continue
        tag = tag_of(element)
        inner = sectioned or tag in SECTIONING
        prune_children(element, inner)
        linked = in_link or tag == "a"
        stack.append((element, tag, linked, sectioned))
        stack.extend((child, None, linked, inner) for child in reversed(element))
    return stats


def _close(
    element: etree._Element, tag: str, linked: bool, stats: dict[etree._Element, Stats]
) -> Stats:
    """Stats of ``element`` from its own text and its children's stats."""
    own = element.get("alt") if tag == "img" else element.text
    out = Stats(tag in BLOCK_TAGS)
    inline = len(own.strip()) if own else 0
    punct = bool(inline and _PUNCTUATION.search(own or ""))
    text = inline
    links = good = good_all = forms = inline_links = anchors = code = 0
    headline = named_content = linked_heading = False
    for child in element:
        child_stats = stats[child]
        text += child_stats.text
        links += child_stats.links
        anchors += child_stats.anchors
        code += child_stats.code
        good += child_stats.good
        good_all += child_stats.good_all
        forms += child_stats.forms
        headline = headline or child_stats.headline
        linked_heading = linked_heading or child_stats.linked_heading
        named_content = named_content or child_stats.named_content
        if not child_stats.block:
            inline += child_stats.inline
            inline_links += child_stats.inline_links
            punct = punct or child_stats.inline_punct
        tail = child.tail
        if tail:
            tail_length = len(tail.strip())
            text += tail_length
            inline += tail_length
            punct = punct or bool(tail_length and _PUNCTUATION.search(tail))
    if linked:
        links = text
        inline_links = inline
        code = 0
        if tag == "a" and text:
            anchors = 1
    elif tag in _CODE:
        code = text
    if out.block:
        prose = _good_text(inline, inline_links, punct)
        good += prose
        good_all += prose
    else:
        out.inline, out.inline_links, out.inline_punct = inline, inline_links, punct
    if tag == "form" or tag == "input":
        forms += 1
    elif tag == "h1":
        headline = True
    elif tag in _SUBHEADINGS and links > 0.8 * text:
        linked_heading = True
    # Only blocks are judged by name: a link or an image named "share" is in a block
    # that density judges anyway.
    named = hint(element) if out.block and tag not in _TOP and element.keys() else 0
    if named == 1 or tag == "article" or tag == "main" or element.get("role") == "main":
        named_content = True
    elif (named == -1 or tag == "form") and not named_content:
        out.named_boilerplate = True
        good = 0
    out.text, out.links, out.good, out.good_all = text, links, good, good_all
    out.forms, out.headline, out.named_content = forms, headline, named_content
    out.anchors, out.code = anchors, code
    out.linked_heading = linked_heading
    return out


def _good_text(length: int, links: int, punctuation: bool) -> int:
    """The good text of a block of ``length`` characters, ``links`` of them links."""
    prose = length - links
    if links > 0.3 * length:
        return 0
    if prose >= 80 or (prose >= 25 and punctuation):
        return prose
    return 0


class Content:
    """The chosen content: ``root`` (cleaned of boilerplate) and the headline before it."""

    def __init__(self, root: etree._Element, headline: etree._Element | None) -> None:
        self.root = root
        self.headline = headline


def main_content(page: etree._Element, stats: dict[etree._Element, Stats]) -> Content | None:
    """The page's content, cleaned; ``None`` when the page has no good text at all.

    ``stats``: ``measure(page)``.
    """
    body = page.find("body")
    top = body if body is not None else page
    use_hints = stats[top].good >= 0.25 * stats[top].good_all
    total = stats[top].good if use_hints else stats[top].good_all
    if total == 0:
        return None

    def good(element: etree._Element) -> int:
        return stats[element].good if use_hints else stats[element].good_all

    body_element = top
    while True:
        child = next(
            (c for c in body_element if tag_of(c) in _GROUPS and good(c) >= BODY_SHARE * total),
            None,
        )
        if child is None or _one_of_sections(child, body_element, good):
            break
        body_element = child
    path = {body_element}
    content = body_element
    limit = good(body_element) * (1 + WIDEN_SLACK)
    while tag_of(content) not in _BOUNDS and content.get("role") != "main":
        parent = content.getparent()
        if parent is None or tag_of(parent) in _TOP or good(parent) > limit:
            break
        content = parent
        path.add(content)
    _clean(content, path, stats, use_hints, good(body_element))
    return Content(content, _headline(page, content))


def _one_of_sections(
    child: etree._Element, parent: etree._Element, good: Callable[[etree._Element], int]
) -> bool:
    """Whether ``child`` is one ``<section>`` of several with prose: a long document in
    sections (one of which may hold most of its text) is read whole."""
    if tag_of(child) != "section":
        return False
    return any(
        other is not child and tag_of(other) == "section" and good(other) for other in parent
    )


def _clean(
    content: etree._Element,
    path: set[etree._Element],
    stats: dict[etree._Element, Stats],
    use_hints: bool,
    body_good: int,
) -> None:
    """Drop the boilerplate blocks inside ``content`` that do not hold the body (``path``)."""
    stack = [content]
    while stack:
        element = stack.pop()
        doomed = [
            child
            for child in element
            if child not in path and _is_boilerplate(child, stats[child], use_hints, body_good)
        ]
        if doomed:
            remove_children(element, doomed)
        stack.extend(element)


def _is_boilerplate(element: etree._Element, stats: Stats, use_hints: bool, body_good: int) -> bool:
    if use_hints and stats.named_boilerplate:
        return True
    tag = tag_of(element)
    if tag == "a":
        return _is_permalink(element)
    if stats.forms and (tag == "form" or stats.text < _FORM_TEXT):
        return True
    if tag not in _CONTAINERS or not stats.text or stats.code:
        return False
    if stats.anchors < 2 and stats.links < _STORY_LINK:
        return False
    share = stats.links / stats.text
    if share > _LINK_HEAVY:
        return True
    if stats.headline:
        return False
    if stats.linked_heading and stats.good_all < _TEASER_GOOD * body_good:
        return True
    return share > _CARD_LINKS and stats.good_all < _CARD_GOOD * body_good


def _is_permalink(link: etree._Element) -> bool:
    """A heading's "¶" or "#": a link to a place on the page without any word."""
    return (link.get("href") or "").startswith("#") and not _WORD.search(text_content(link))


def _headline(page: etree._Element, content: etree._Element) -> etree._Element | None:
    """The last ``<h1>`` before ``content`` when ``content`` has none of its own."""
    if next(content.iter("h1"), None) is not None:
        return None
    headline = None
    for element in page.iter("h1", content.tag):
        if element is content:
            return headline
        if tag_of(element) == "h1":
            headline = element
    return None
