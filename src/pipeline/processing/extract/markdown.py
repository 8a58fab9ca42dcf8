"""Markdown: blocks from markdown-it-py's CommonMark token stream.

A real CommonMark parser (rather than regexes) gets the hard cases right: lazy
continuation lines, nested lists, fenced versus indented code, entities. Each
heading, paragraph (including those inside list items and blockquotes), table
row and code block becomes one block; inline markup is dropped, link text is kept
and URLs are not, images become their alt text, and raw HTML blocks go through the
HTML extractor.

An item of an ordered list keeps its number before its first block, counted as
CommonMark does from the list's start number (``3.``, ``4.``... whatever numbers
the later items were written with), with the delimiter written (``.`` or ``)``).
Bullets are not kept. A task-list item keeps its ``[x]`` or ``[ ]`` (GitHub's
extension: plain text to CommonMark, so nothing drops it; ``[X]`` is written
``[x]``).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Final

from markdown_it import MarkdownIt
from markdown_it.token import Token

from pipeline.processing.extract.html import html_blocks
from pipeline.processing.extract.normalize import clean_block, clean_preformatted, join_blocks

# Shared: parse() keeps its state per call; the instance is never mutated after this.
# GFM tables and strikethrough are common enough in the wild to be worth enabling.
_PARSER: Final = MarkdownIt("commonmark").enable(["table", "strikethrough"])
_BR: Final = re.compile(r"<br\s*/?>", re.IGNORECASE)
_TASK: Final = re.compile(r"\[([ xX])\](?= |$)")


def _inline_text(tokens: Sequence[Token]) -> str:
    parts: list[str] = []
    for token in tokens:
        if token.type in ("text", "text_special", "code_inline"):
            parts.append(token.content)
        elif token.type in ("softbreak", "hardbreak"):
            parts.append(" ")
        elif token.type == "image":
            parts.append(_inline_text(token.children or []))
        elif token.type == "html_inline" and _BR.match(token.content):
            parts.append(" ")
    return "".join(parts)


@dataclass(slots=True)
class _OrderedList:
    next_number: int
    delimiter: str


class _Lists:
    """The open lists, and the number waiting for the first block of the current item."""

    def __init__(self) -> None:
        self._open: list[_OrderedList | None] = []  # None: a bullet list
        self._pending: str | None = None

    def enter(self, token: Token) -> None:
        if token.type == "ordered_list_open":
            start = token.attrs.get("start", 1)
            self._open.append(_OrderedList(start if isinstance(start, int) else 1, token.markup))
        elif token.type == "bullet_list_open":
            self._open.append(None)
        elif token.type in ("ordered_list_close", "bullet_list_close") and self._open:
            self._open.pop()
        elif token.type == "list_item_open":
            current = self._open[-1] if self._open else None
            label = ""
            if current is not None:
                label = f"{current.next_number}{current.delimiter}"
                current.next_number += 1
            # An item whose first block is a nested list: both numbers, outer first.
            outer = self._pending
            self._pending = label if outer is None else f"{outer} {label}".strip()
        elif token.type == "list_item_close":
            self._pending = None

    def first_block(self, text: str) -> str:
        """``text`` with the waiting item number (and a normalised task box) in front."""
        if self._pending is None:
            return text
        label, self._pending = self._pending, None
        text = _TASK.sub(lambda match: f"[{match.group(1).lower()}]", text, count=1)
        return f"{label} {text}".strip()


def markdown_blocks(source: str) -> list[str]:
    """Blocks of a Markdown document, in document order."""
    blocks: list[str] = []
    lists = _Lists()
    row: list[str] | None = None
    for token in _PARSER.parse(source):
        lists.enter(token)
        if token.type == "inline":
            text = clean_block(_inline_text(token.children or []))
            if row is not None:
                row.append(text)
            elif text:
                blocks.append(lists.first_block(text))
        elif token.type == "tr_open":
            row = []
        elif token.type == "tr_close":
            if row is not None and any(row):
                blocks.append(lists.first_block(clean_block(" | ".join(row))))
            row = None
        elif token.type in ("fence", "code_block"):
            blocks.append(lists.first_block(clean_preformatted(token.content)))
        elif token.type == "html_block":
            blocks.extend(lists.first_block(block) for block in html_blocks(token.content))
    return blocks


def extract_markdown(source: str) -> str:
    """Text of a Markdown document, already decoded (see module docstring)."""
    return join_blocks(markdown_blocks(source))
