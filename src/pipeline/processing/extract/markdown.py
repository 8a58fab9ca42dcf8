"""Markdown: blocks from markdown-it-py's CommonMark token stream.

A real CommonMark parser (rather than regexes) gets the hard cases right: lazy
continuation lines, nested lists, fenced versus indented code, entities. Each
heading, paragraph (including those inside list items and blockquotes), table
row and code block becomes one block; inline markup is dropped, link text is kept
and URLs are not, images become their alt text, and raw HTML blocks go through the
HTML extractor.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Final

from markdown_it import MarkdownIt
from markdown_it.token import Token

from pipeline.processing.extract.html import html_blocks
from pipeline.processing.extract.normalize import clean_block, clean_preformatted, join_blocks

# Shared: parse() keeps its state per call; the instance is never mutated after this.
# GFM tables and strikethrough are common enough in the wild to be worth enabling.
_PARSER: Final = MarkdownIt("commonmark").enable(["table", "strikethrough"])
_BR: Final = re.compile(r"<br\s*/?>", re.IGNORECASE)


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


def markdown_blocks(source: str) -> list[str]:
    """Blocks of a Markdown document, in document order."""
    blocks: list[str] = []
    row: list[str] | None = None
    for token in _PARSER.parse(source):
        if token.type == "inline":
            text = clean_block(_inline_text(token.children or []))
            if row is not None:
                row.append(text)
            else:
                blocks.append(text)
        elif token.type == "tr_open":
            row = []
        elif token.type == "tr_close":
            if row is not None and any(row):
                blocks.append(clean_block(" | ".join(row)))
            row = None
        elif token.type in ("fence", "code_block"):
            blocks.append(clean_preformatted(token.content))
        elif token.type == "html_block":
            blocks.extend(html_blocks(token.content))
    return blocks


def extract_markdown(source: str) -> str:
    """Text of a Markdown document, already decoded (see module docstring)."""
    return join_blocks(markdown_blocks(source))
