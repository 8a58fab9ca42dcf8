"""Removing what is never content: scripts, styles, navigation, site banner and footer,
hidden elements.

Every pass over the tree is top-down and linear in its size: nothing asks each
element for its ancestors, and removed text is joined once per parent, because a
hostile page of a few megabytes has hundreds of thousands of elements, and anything
quadratic in them would run into the sandbox's time limit instead of finishing.
Forms are not removed here: a whole page may sit in one (ASP.NET wraps every page in
a ``<form>``), so the density pass judges them (``density``).
"""

from __future__ import annotations

import re
from typing import Final

from lxml import etree

_DROP_TAGS: Final = frozenset(
    {
        "script", "style", "noscript", "template", "nav", "aside", "iframe", "svg",
        "button", "object", "embed", "canvas", "select", "textarea", "datalist", "math",
        "head",
    }
)  # fmt: skip
_DROP_ROLES: Final = frozenset({"navigation", "banner", "contentinfo", "search", "complementary"})
# <header>/<footer> are the page banner/contentinfo only outside these (HTML-AAM);
# inside an article they hold its title and byline, which are content.
SECTIONING: Final = frozenset({"article", "aside", "main", "nav", "section"})
_HIDDEN_STYLE: Final = re.compile(r"display\s*:\s*none|visibility\s*:\s*hidden", re.I)


def tag_of(element: etree._Element) -> str:
    """The tag name (libxml2's HTML parser lower-cases it); ``""`` for comments and the like."""
    tag = element.tag
    return tag if isinstance(tag, str) else ""


def _is_chrome(element: etree._Element, sectioned: bool) -> bool:
    """Whether ``element`` is page chrome; ``sectioned``: it is inside a sectioning element."""
    tag = tag_of(element)
    if not tag or tag in _DROP_TAGS:
        return True
    if not element.keys():
        return tag in ("header", "footer") and not sectioned
    if (element.get("role") or "").strip().lower() in _DROP_ROLES:
        return True
    if (element.get("aria-hidden") or "").strip().lower() == "true":
        return True
    if element.get("hidden") is not None or _HIDDEN_STYLE.search(element.get("style") or ""):
        return True
    return tag in ("header", "footer") and not sectioned


def prune_children(element: etree._Element, sectioned: bool) -> None:
    """Remove the chrome children of ``element``, keeping the text that follows each;
    ``sectioned``: ``element`` is or is inside a sectioning element.

    Called on the way down a top-down pass (``density.measure``), which so never enters
    a subtree it removes.
    """
    doomed = [child for child in element if _is_chrome(child, sectioned)]
    if doomed:
        remove_children(element, doomed)


def remove_children(parent: etree._Element, doomed: list[etree._Element]) -> None:
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
