"""What an element's class, id, role and label say it is: boilerplate, content, or nothing.

A hint is only ever one vote: the density pass decides with it (see ``density``),
so an unknown class name costs nothing and a misleading one cannot drop a story.
Names are cut into words (``comments-area``, ``shareBar``, ``story__share``); a name
with a boilerplate word (``comment``, ``newsletter``, ``related``, ``share``, ``tags``,
``cookie``, ...) counts against the element, and a name with only content words
(``entry-content``, ``article-body``) for it, and outweighs the former:
``entry-content comments-open`` is content. ``tag-sourdough`` (a post's tag, as
WordPress writes it on the post itself) is neither: ``tags`` is boilerplate, ``tag``
is not.
"""

from __future__ import annotations

import functools
import re
from typing import Final

from lxml import etree

_WORD: Final = re.compile(r"[a-z]+")
_CAMEL: Final = re.compile(r"(?<=[a-z])(?=[A-Z])")
_BOILERPLATE_WORDS: Final = frozenset(
    {
        "ad", "ads", "advert", "advertisement", "breadcrumb", "breadcrumbs", "cmp",
        "comment", "commentlist", "comments", "consent", "cookie", "cookies", "crumbs",
        "disqus", "feedback", "gdpr", "modal", "newsletter", "outbrain", "pager",
        "pagination", "popup", "promo", "recommendations", "recommended", "related",
        "respond", "share", "sharebar", "sharing", "sidebar", "signup", "social",
        "sponsored", "subscribe", "subscription", "tagcloud", "tags", "taboola", "toc",
        "widget", "widgets",
    }
)  # fmt: skip
_CONTENT_WORDS: Final = frozenset(
    {"article", "body", "content", "entry", "main", "post", "prose", "story", "text"}
)
_BOILERPLATE_ROLES: Final = frozenset({"alertdialog", "dialog", "menu", "menubar", "toolbar"})
_BOILERPLATE_LABEL: Final = re.compile(
    r"\b(?:comments?|share|sharing|newsletter|related|recommended|cookies?|consent|tags)\b",
    re.I,
)


def _words(name: str) -> list[str]:
    return _WORD.findall(_CAMEL.sub(" ", name).lower())


def hint(element: etree._Element) -> int:
    """-1: ``element`` is named like boilerplate; 1: like content; 0: no hint."""
    get = element.get
    return _hint(
        get("class") or "", get("id") or "", get("role"), get("aria-modal"), get("aria-label")
    )


@functools.lru_cache(maxsize=4096)  # pages repeat their class names
def _hint(classes: str, ident: str, role: str | None, modal: str | None, label: str | None) -> int:
    against = False
    for name in f"{classes} {ident}".split():
        words = _words(name)
        if _BOILERPLATE_WORDS.intersection(words):
            against = True
        elif _CONTENT_WORDS.intersection(words):
            return 1
    if against:
        return -1
    if (role or "").strip().lower() in _BOILERPLATE_ROLES:
        return -1
    if (modal or "").strip().lower() == "true":
        return -1
    if label and _BOILERPLATE_LABEL.search(label):
        return -1
    return 0
