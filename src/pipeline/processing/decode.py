"""Turn the bytes of a text document into ``str`` without ever failing.

Uploads carry no trustworthy charset, so the encoding is found from the bytes
alone, in an order that cannot mis-decode valid input of the earlier kinds:

1. a byte-order mark is unambiguous;
2. UTF-16 or UTF-32 without one shows in its byte pattern: the NUL high bytes of
   ASCII characters (:func:`wide_encoding`); 8-bit text never holds a NUL;
3. ISO-2022-JP/-KR and HZ, 7-bit encodings that would pass as ASCII, show in
   their escape sequences (:func:`~pipeline.processing.charset.escape_encoding`);
4. strict UTF-8 almost never succeeds by accident on legacy text (the fast path);
5. anything else is a legacy encoding, guessed statistically
   (:mod:`pipeline.processing.charset`);
6. Windows-1252, then Latin-1 (which maps every byte), when no candidate reads
   the bytes as plausible text; validation refuses such text.

Encoding names returned are portable (IANA-style) labels that Python's codecs also
accept, so they can be stored and handed back to :func:`decode_with`.
"""

from __future__ import annotations

import codecs
import unicodedata
from typing import Final, Literal

import msgspec

from pipeline.processing.charset import escape_encoding, guess_encoding, label

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


#: Share of a BOM-less UTF-16/32 reading that may be unassigned or private-use.
WIDE_STRANGE_RATIO: Final = 0.01
#: In BOM-less UTF-16 the low bytes take at least this many times as many values as
#: the high bytes (8-bit text read two bytes at a time shows no such difference).
WIDE_VARIETY_FACTOR: Final = 2


#: How an encoding was found, in the order of the module's steps.
Detection = Literal["bom", "pattern", "escapes", "utf-8", "statistics", "none"]


class DecodedText(msgspec.Struct, frozen=True):
    """Decoded text, the encoding that produced it, and how that was found.

    ``"none"`` means no candidate read the bytes as plausible text: the encoding
    is the total fallback.
    """

    text: str
    encoding: str
    detection: Detection

    @property
    def guessed(self) -> bool:
        """Whether the encoding is a guess (a document's own declaration may overrule it)."""
        return self.detection in ("statistics", "none")


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


def _controls(text: str) -> int:
    return sum(1 for ch in text if ord(ch) in _CONTROL_BYTES)


def _plausible_wide(text: str) -> bool:
    """Whether a UTF-16/32 reading is text: no NULs, few controls, few strange characters."""
    if not text or "\x00" in text:
        return False
    if _controls(text) > BINARY_CONTROL_RATIO * len(text):
        return False
    strange = sum(1 for ch in text if unicodedata.category(ch) in ("Cn", "Co", "Cs"))
    return strange <= WIDE_STRANGE_RATIO * len(text)


def wide_encoding(sample: bytes) -> str | None:
    """UTF-32 or UTF-16 without a BOM, recognised from the start of a document.

    Only a sample with NUL bytes is considered (8-bit text has none; ASCII, digits,
    spaces and newlines in UTF-16/32 put one in every code unit). UTF-32 is
    recognised by decoding strictly (random bytes almost never do). UTF-16 is
    recognised, and its byte order read, from the pattern: the high bytes of the
    code units (NULs for ASCII, a handful of values for any one script) take far
    fewer values than the low bytes (:data:`WIDE_VARIETY_FACTOR`), so the position
    that varies less is the high byte; the reading must then be plausible text.
    """
    if b"\x00" not in sample:
        return None
    for encoding in ("utf-32le", "utf-32be"):
        decoder = codecs.getincrementaldecoder(encoding)()
        try:
            text = decoder.decode(sample[: len(sample) - len(sample) % 4])
        except UnicodeDecodeError:
            continue
        if _plausible_wide(text):
            return encoding
    even, odd = len(set(sample[0::2])), len(set(sample[1::2]))
    if WIDE_VARIETY_FACTOR * min(even, odd) > max(even, odd):
        return None  # no byte position stands out as the high byte
    encoding = "utf-16be" if even < odd else "utf-16le"
    # Incremental, so that a surrogate pair cut by the end of the sample waits.
    decoder = codecs.getincrementaldecoder(encoding)()
    try:
        text = decoder.decode(sample)
    except UnicodeDecodeError:
        return None
    return encoding if _plausible_wide(text) else None


def unicode_encoding(sample: bytes) -> str | None:
    """The UTF encoding a BOM or a UTF-16/32 byte pattern shows, if any."""
    return bom_encoding(sample) or wide_encoding(sample)


def decode_text(data: bytes) -> DecodedText:
    """Decode ``data`` in the order the module describes."""
    encoding = bom_encoding(data)
    if encoding is not None:
        return DecodedText(decode_with(data, encoding), encoding, "bom")
    encoding = wide_encoding(data[:BINARY_SAMPLE_BYTES])
    if encoding is not None:
        return DecodedText(decode_with(data, encoding), encoding, "pattern")
    encoding = escape_encoding(data[:BINARY_SAMPLE_BYTES])
    if encoding is not None:
        return DecodedText(decode_with(data, encoding), label(encoding), "escapes")
    try:
        return DecodedText(data.decode("utf-8"), "utf-8", "utf-8")
    except UnicodeDecodeError:
        pass
    guess = guess_encoding(data)
    if guess is not None:
        # The guess saw a sample: a byte elsewhere that it does not decode is replaced.
        return DecodedText(data.decode(guess, errors="replace"), label(guess), "statistics")
    try:
        return DecodedText(data.decode("windows-1252"), "windows-1252", "none")
    except UnicodeDecodeError:
        return DecodedText(data.decode("iso-8859-1"), "iso-8859-1", "none")


def looks_binary(data: bytes) -> bool:
    """Whether the start of ``data`` looks like binary rather than text.

    Unless it is UTF-16/32 (by BOM or byte pattern) a NUL byte means binary (no
    8-bit text contains one). Otherwise more than 1% control characters (other than
    tab, newline, carriage return and form feed) in the sample means binary. UTF-16
    and UTF-32 are decoded first so that the zero high bytes of ASCII don't count,
    and so are ISO-2022 texts, so that their escape and shift bytes don't.
    """
    sample = data[:BINARY_SAMPLE_BYTES]
    if not sample:
        return False
    encoding = unicode_encoding(sample) or escape_encoding(sample)
    if encoding is not None and encoding != "utf-8":
        text = decode_with(sample, encoding)
        return _controls(text) > BINARY_CONTROL_RATIO * max(len(text), 1)
    if b"\x00" in sample:
        return True
    controls = len(sample.translate(None, _NON_CONTROL_BYTES))
    return controls > BINARY_CONTROL_RATIO * len(sample)
