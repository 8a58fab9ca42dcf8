"""The one output convention every extractor follows.

Downstream stages (chunking, embedding, search) only see text, so structure is
carried by a simple, uniform convention:

* the text is a sequence of *blocks* (heading, paragraph, list item, table row,
  code block) separated by exactly one blank line (``"\\n\\n"``);
* inside an ordinary block all whitespace runs are collapsed to one space;
* a preformatted block (code, ``<pre>``) keeps its lines, joined by a single
  ``"\\n"``: line structure matters in code, but blank lines inside it are
  dropped so that ``"\\n\\n"`` always means "block boundary";
* no leading or trailing whitespace, Unicode NFC, no control characters and no
  invisible format characters (soft hyphen, zero-width space, BOM).

NFC (not NFKC) because compatibility folding changes meaning (superscripts,
full-width forms) and is better left to search-time analyzers.
"""

from __future__ import annotations

import re
import textwrap
import unicodedata
from collections.abc import Iterable
from typing import Final

_INVISIBLE: Final = "\u00ad\u200b\u2060\ufeff"
# Controls other than the whitespace ones (\t \n \v \f \r, NEL), plus invisibles.
_DELETE: Final[dict[int, None]] = dict.fromkeys(
    [cp for cp in range(0x20) if cp not in (0x09, 0x0A, 0x0B, 0x0C, 0x0D)]
    + [0x7F]
    + [cp for cp in range(0x80, 0xA0) if cp != 0x85]
    + [ord(ch) for ch in _INVISIBLE]
)
_NEWLINES: Final = re.compile(r"\r\n?|[\x85\u2028]")
_PARAGRAPH_BREAKS: Final = re.compile(r"[\x0c\u2029]")
_WHITESPACE: Final = re.compile(r"\s+")
_BLANK_LINES: Final = re.compile(r"\n\s*\n")
#: Tab stops used when a preformatted block's tabs are expanded.
TAB_SIZE: Final = 4


def normalize_newlines(text: str) -> str:
    """CRLF/CR/NEL/LS become ``\\n``; form feed and PS become a blank line."""
    text = _NEWLINES.sub("\n", text)
    return _PARAGRAPH_BREAKS.sub("\n\n", text)


def clean_block(text: str) -> str:
    """One ordinary block: controls removed, NFC, whitespace collapsed, stripped."""
    text = unicodedata.normalize("NFC", text.translate(_DELETE))
    return _WHITESPACE.sub(" ", text).strip()


def clean_preformatted(text: str) -> str:
    """One preformatted block: keep lines and relative indentation, drop blank lines."""
    text = normalize_newlines(text).translate(_DELETE).expandtabs(TAB_SIZE)
    text = _WHITESPACE.sub(_keep_newline, text.replace("\v", " ").replace("\x0c", " "))
    lines = [line.rstrip() for line in text.split("\n")]
    text = textwrap.dedent("\n".join(line for line in lines if line))
    return unicodedata.normalize("NFC", text).strip()


def _keep_newline(match: re.Match[str]) -> str:
    # Inside code only exotic whitespace (NBSP, ideographic space...) is touched:
    # each run keeps its newlines and its plain spaces, anything else -> one space.
    run = match.group(0)
    return "".join(ch if ch in "\n " else " " for ch in run)


def split_paragraphs(text: str) -> list[str]:
    """Split text on blank lines (lines holding only whitespace count as blank)."""
    return _BLANK_LINES.split(normalize_newlines(text))


def join_blocks(blocks: Iterable[str]) -> str:
    """Join already-cleaned blocks with one blank line, skipping empty ones."""
    return "\n\n".join(block for block in blocks if block)
