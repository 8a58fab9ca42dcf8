"""Plain text: decode, then one block per paragraph (paragraphs end at blank lines).

Hard-wrapped lines inside a paragraph are joined with spaces, which is what the
block convention in :mod:`.normalize` asks for.
"""

from __future__ import annotations

from pipeline.processing.decode import decode_text, decode_with
from pipeline.processing.extract.normalize import clean_block, join_blocks, split_paragraphs


def read_text(data: bytes, encoding: str | None) -> str:
    """Decode with the validated encoding, or detect it when none is given."""
    if encoding:
        return decode_with(data, encoding)
    return decode_text(data).text


def extract_plain(text: str) -> str:
    """Text of a plain-text document (already decoded), one block per paragraph."""
    return join_blocks(clean_block(paragraph) for paragraph in split_paragraphs(text))
