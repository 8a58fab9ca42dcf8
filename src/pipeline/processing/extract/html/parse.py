"""Parsing a page with libxml2, after taking ``<noscript>`` out of it.

libxml2 parses ``<noscript>`` as an ordinary element, so one unclosed element inside
it (``<noscript><div>Enable JavaScript</noscript>``, a tracking ``<iframe>``) makes
it ignore ``</noscript>`` and nest the rest of the page inside the noscript, which
is then dropped as chrome with everything in it. A browser with scripting on reads
the inside of a noscript as raw text up to ``</noscript>``, never as markup; so it is
cut out of the source before parsing, from ``<noscript ...>`` to its ``</noscript>``.
A start tag without an end is dropped alone, keeping what follows. The scan is one
linear pass (tags end at the next ``<`` or ``>``, so nothing backtracks).
"""

from __future__ import annotations

import re
from typing import Final

from lxml import etree

from pipeline.errors import CorruptContent

_NOSCRIPT_TAG: Final = re.compile(r"<(/?)noscript\b[^<>]*>?", re.I)


def drop_noscript(markup: str) -> str:
    """``markup`` without its ``<noscript>`` elements (see module docstring)."""
    pieces: list[str] = []
    kept_from = 0
    skipping = False  # inside a noscript: kept_from is the end of its start tag
    for tag in _NOSCRIPT_TAG.finditer(markup):
        closing = tag.group(1) == "/"
        if not skipping:
            pieces.append(markup[kept_from : tag.start()])
            skipping = not closing
        elif not closing:
            continue  # "<noscript>" inside a noscript is raw text
        else:
            skipping = False
        kept_from = tag.end()
    pieces.append(markup[kept_from:])  # after a start tag that never closes: its text
    return "".join(pieces)


def parse(markup: str) -> etree._Element | None:
    """The tree of ``markup``, ``None`` when libxml2 cannot read it at all."""
    # A parser per call: lxml parsers must not be shared between threads.
    # huge_tree raises libxml2's nesting limit from 256 to 2048 levels: sloppy pages
    # with hundreds of unclosed <font>/<div> tags are real. Input size is bounded
    # by validation, and every walk is iterative, so depth costs nothing more.
    parser = etree.HTMLParser(
        encoding="utf-8",
        no_network=True,
        remove_comments=True,
        remove_pis=True,
        recover=True,
        huge_tree=True,
    )
    try:
        root = etree.fromstring(drop_noscript(markup).encode("utf-8"), parser)
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
