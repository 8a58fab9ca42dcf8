"""Turn the bytes of a text document into ``str`` without ever failing.

Uploads carry no trustworthy charset, so the encoding is guessed from the bytes
alone, in an order that cannot mis-decode valid input of the earlier kinds: a
byte-order mark is unambiguous; strict UTF-8 almost never succeeds by accident on
legacy 8-bit text; Windows-1252 is what "Latin-1" text usually really is (curly
quotes, euro sign); and Latin-1 maps every byte, so it is the total fallback.

Encoding names returned are portable (IANA-style) labels that Python's codecs also
accept, so they can be stored and handed back to :func:`decode_with`.
"""

from __future__ import annotations

from typing import Final

import msgspec

# Longest first: the UTF-32 LE mark begins with the UTF-16 LE one.
_BOMS: Final[tuple[tuple[bytes, str], ...]] = (
    (b"\xef\xbb\xbf", "utf-8"),
    (b"\xff\xfe\x00\x00", "utf-32le"),
    (b"\x00\x00\xfe\xff", "utf-32be"),
    (b"\xff\xfe", "utf-16le"),
    (b"\xfe\xff", "utf-16be"),
)

#: How much of a file :func:`looks_binary` inspects.
BINARY_SAMPLE_BYTES: Final = 8192
#: Share of control characters above which a sample counts as binary.
BINARY_CONTROL_RATIO: Final = 0.01

# C0 controls plus DEL, minus the ones plain text legitimately contains.
_CONTROL_BYTES: Final = (frozenset(range(0x20)) - {0x09, 0x0A, 0x0C, 0x0D}) | {0x7F}
# Every other byte: ``bytes.translate`` deletes these, leaving the controls to count.
_NON_CONTROL_BYTES: Final = bytes(b for b in range(256) if b not in _CONTROL_BYTES)


class DecodedText(msgspec.Struct, frozen=True):
    """Decoded text and the encoding that produced it."""

    text: str
    encoding: str


def bom_encoding(data: bytes) -> str | None:
    """The encoding announced by a leading byte-order mark, if any."""
    for bom, encoding in _BOMS:
        if data.startswith(bom):
            return encoding
    return None


def decode_with(data: bytes, encoding: str) -> str:
    """Decode with a known encoding (e.g. one stored by validation).

    Undecodable bytes become U+FFFD rather than an error, and one leading BOM
    character is dropped: it is an encoding artefact, not content.
    """
    text = data.decode(encoding, errors="replace")
    return text.removeprefix("\ufeff")


def decode_text(data: bytes) -> DecodedText:
    """Decode ``data``: BOM, then strict UTF-8, then Windows-1252, then Latin-1."""
    encoding = bom_encoding(data)
    if encoding is not None:
        return DecodedText(decode_with(data, encoding), encoding)
    for candidate in ("utf-8", "windows-1252"):
        try:
            return DecodedText(data.decode(candidate), candidate)
        except UnicodeDecodeError:
            continue
    return DecodedText(data.decode("iso-8859-1"), "iso-8859-1")


def looks_binary(data: bytes) -> bool:
    """Whether the start of ``data`` looks like binary rather than text.

    Without a UTF-16/32 BOM a NUL byte means binary (no 8-bit text contains one).
    Otherwise more than 1% control characters (other than tab, newline, carriage
    return and form feed) in the sample means binary. With a UTF-16/32 BOM the
    sample is decoded first so that the zero high bytes of ASCII don't count.
    """
    sample = data[:BINARY_SAMPLE_BYTES]
    if not sample:
        return False
    encoding = bom_encoding(sample)
    if encoding is not None and encoding != "utf-8":
        text = decode_with(sample, encoding)
        controls = sum(1 for ch in text if ord(ch) in _CONTROL_BYTES)
        return controls > BINARY_CONTROL_RATIO * max(len(text), 1)
    if b"\x00" in sample:
        return True
    controls = len(sample.translate(None, _NON_CONTROL_BYTES))
    return controls > BINARY_CONTROL_RATIO * len(sample)
