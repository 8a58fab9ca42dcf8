"""Removing the internal subset of an HTML page's DOCTYPE before libxml2 reads it.

``<!DOCTYPE html [ <!ENTITY x "y"> ]>`` is legal XML but not HTML: libxml2's HTML
parser (like a browser's tokenizer) ends the DOCTYPE at its first ``>`` and reads what
is left of the subset as page content, so ``]>`` (or worse, the tail of a quoted
declaration) used to show up as the first block of the extracted text. The subset
declares nothing an HTML parser honours (entities are never expanded), so it is cut
out and the DOCTYPE kept: ``<!DOCTYPE html [...]>`` becomes ``<!DOCTYPE html>``.

Only a DOCTYPE at the start of the page (after an optional BOM, XML declaration,
comments and whitespace) is touched, because only there is it a DOCTYPE at all; one
whose subset never closes is left to the parser as it is. Each pattern's alternatives
begin with different characters and nothing follows its repetition, so it never
backtracks: one linear pass, however hostile the page.
"""

from __future__ import annotations

import re
from typing import Final

_PROLOG: Final = re.compile(r"\ufeff?\s*(?:<\?[^>]*>\s*|<!--.*?-->\s*)*", re.S)
# The DOCTYPE's keyword, name and external id, up to "[" or ">" (quotes respected).
_HEAD: Final = re.compile(r"""<!doctype\b(?:[^\[>"']|"[^"]*"|'[^']*')*""", re.I)
# Declarations, quoted literals and comments of the subset, up to its closing "]>".
_SUBSET: Final = re.compile(
    r"""(?:[^"'<\]]|"[^"]*"|'[^']*'|<!--.*?-->|<(?!!--)|\](?!\s*>))*""", re.S
)
_SUBSET_END: Final = re.compile(r"\]\s*>")


def drop_internal_subset(markup: str) -> str:
    """``markup`` without the internal subset of its leading DOCTYPE, if it has one."""
    prolog = _PROLOG.match(markup)  # always matches, if only the empty string
    head = _HEAD.match(markup, prolog.end() if prolog is not None else 0)
    if head is None or not markup.startswith("[", head.end()):
        return markup
    subset = _SUBSET.match(markup, head.end() + 1)
    end = _SUBSET_END.match(markup, subset.end()) if subset is not None else None
    if end is None:
        return markup
    return markup[: head.end()].rstrip() + ">" + markup[end.end() :]
