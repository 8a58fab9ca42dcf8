"""Guess the 8-bit or multi-byte legacy encoding of text that is not UTF-8.

The guess is charset-normalizer's (a maintained statistical detector: it decodes
the bytes with each candidate code page, measures how messy each result looks and
how well its letters fit a language). Around it:

* **Bounded work.** The detector only sees :func:`detector_sample`: the lines that
  hold non-ASCII bytes (ASCII reads the same in every candidate), at most
  :data:`SAMPLE_BYTES` of them, so a 1 MB file costs what 64 KiB does (a few ms).
* **Candidates.** The legacy encodings of the WHATWG Encoding Standard, the ones
  web pages and office files really use (less Mac Roman, and ISO-2022-JP, whose
  escape bytes read as binary); not the other DOS, EBCDIC or Mac code pages, which
  would otherwise win on short texts.
* **Escapes first.** ISO-2022-JP, ISO-2022-KR and HZ are 7-bit: their text is
  ASCII bytes between escape sequences (``ESC $ B``, ``ESC $ ) C``, ``~{``), so it
  would pass as UTF-8. :func:`escape_encoding` recognises them by those sequences
  and a strict decode into CJK text, before UTF-8 is tried.
* **Japanese next.** The detector's mess measure rates correct Japanese as messy
  (an iteration mark such as 々 is enough), and EUC-JP then loses to GB18030 with
  kanji read as the wrong hanzi. Japanese is unmistakable otherwise: Shift_JIS or
  EUC-JP (or their JIS X 0213 extensions) that decodes strictly and holds kana,
  unless the same bytes read as Korean syllables in EUC-KR (EUC-KR's jamo row is
  EUC-JP's hiragana row).
* **Strict multi-byte last.** Where the detector finds nothing at all (it does so
  on some Korean CP949 and Johab text), a multi-byte encoding that decodes the
  sample strictly into one script's letters is taken.
* **Ties.** Several encodings often look about as clean to the detector: Czech in
  Windows-1250 reads as tidy Windows-1252 too ("Lhotì" for "Lhotě"), Turkish as
  Baltic. Among the guesses within :data:`CHAOS_MARGIN` of the cleanest, the one
  whose letters best fit one language's alphabet (:data:`ALPHABETS`, or a single
  non-Latin script) wins; then the detector's language coherence; then a
  multi-byte encoding (its structure is evidence); then the most common encoding,
  in the order of :data:`CANDIDATES` (Windows-1252 first).
* **No language, no change.** A single-byte guess without any language evidence
  (a short text, a stray byte) does not overrule Windows-1252 (or Latin-1 where
  1252 leaves a byte undefined) when that reading fits an alphabet as well and is
  not garbled.
"""

from __future__ import annotations

import codecs
import re
import unicodedata
from collections import Counter
from typing import Final

import charset_normalizer
from charset_normalizer.md import mess_ratio

from pipeline.processing.garbled import garbled_reason

#: At most this many bytes of a document reach the detector.
SAMPLE_BYTES: Final = 65536
#: Guesses this close to the cleanest one (in the detector's mess ratio) contend too.
CHAOS_MARGIN: Final = 0.05
#: Below this language coherence a single-byte guess has no language evidence.
MIN_COHERENCE: Final = 0.05
#: Share of the non-ASCII characters that must be kana for a decode to be Japanese.
MIN_KANA_SHARE: Final = 0.1
#: ... and at least this many kana.
MIN_KANA: Final = 3

#: Python codec names, most common first (the order breaks ties between guesses).
CANDIDATES: Final = (
    "cp1252",
    "cp1250",
    "cp1251",
    "cp1253",
    "cp1254",
    "cp1257",
    "cp1255",
    "cp1256",
    "cp1258",
    "cp874",
    "iso8859_2",
    "iso8859_15",
    "iso8859_5",
    "iso8859_7",
    "iso8859_4",
    "iso8859_13",
    "iso8859_10",
    "iso8859_14",
    "iso8859_16",
    "iso8859_3",
    "iso8859_6",
    "iso8859_8",
    "koi8_r",
    "koi8_u",
    "cp866",
    "mac_cyrillic",
    "gb18030",
    "big5hkscs",
    "cp949",
    "euc_jp",
    "shift_jis",
    "cp932",
)
_RANK: Final = {codecs.lookup(name).name: rank for rank, name in enumerate(CANDIDATES)}
_MULTI_BYTE: Final = frozenset(
    codecs.lookup(name).name
    for name in ("gb18030", "big5hkscs", "cp949", "euc_jp", "cp932", "johab")
)
_JAPANESE: Final = ("shift_jis", "cp932", "euc_jp", "shift_jis_2004", "euc_jis_2004")
#: Tried, in this order, when the detector has no guess at all.
_STRICT_MULTI_BYTE: Final = ("gb18030", "big5hkscs", "cp949", "johab")
#: A strict multi-byte reading must fit one script this well to be taken alone.
MIN_STRICT_FIT: Final = 0.99
#: Share of a CP949 reading's non-ASCII characters that are Hangul syllables above
#: which text is Korean, whatever kana an EUC-JP reading shows.
KOREAN_SYLLABLE_SHARE: Final = 0.5
#: An escape-encoded text must decode into at least this many CJK characters.
MIN_ESCAPED_CJK: Final = 4
# Escape sequences that announce each 7-bit encoding (designations of a double-byte set).
_ESCAPES: Final = (
    ("iso2022_kr", (b"\x1b$)C",)),
    ("iso2022_jp", (b"\x1b$B", b"\x1b$@")),
    ("iso2022_jp_2", (b"\x1b$A", b"\x1b$(C", b"\x1b$(D", b"\x1b.A", b"\x1b.F")),
    ("iso2022_jp_2004", (b"\x1b$(Q", b"\x1b$(O", b"\x1b$(P")),
    ("hz", (b"~{",)),
)
_CJK: Final = re.compile(
    r"[\u1100-\u11ff\u3040-\u30ff\u3130-\u318f\u3400-\u9fff\uac00-\ud7af\uf900-\ufaff]"
)
_HANGUL_MAKE_UP: Final = b"\xa4\xd4"  # HANGUL FILLER in EUC-KR
_HANGUL_SYLLABLE: Final = re.compile(r"[\uac00-\ud7af]")
# Labels people know (IANA names); every one is also a name Python's codecs accept.
_LABELS: Final = {
    **{f"cp125{n}": f"windows-125{n}" for n in range(9)},
    **{f"iso8859-{n}": f"iso-8859-{n}" for n in range(1, 17)},
    "latin-1": "iso-8859-1",
    "euc_jp": "euc-jp",
    "cp866": "ibm866",
    "big5hkscs": "big5-hkscs",
    "euc_kr": "euc-kr",
    "iso2022_jp": "iso-2022-jp",
    "iso2022_jp_2": "iso-2022-jp-2",
    "iso2022_kr": "iso-2022-kr",
    "hz": "hz-gb-2312",
}

#: The non-ASCII letters (lower case) of the languages written in Latin script
#: whose text the candidate code pages carry.
ALPHABETS: Final = (
    "àâæçéèêëîïôœùûüÿ",  # French
    "äöüß",  # German
    "áéíñóúü",  # Spanish
    "áâãàçéêíóôõú",  # Portuguese
    "àèéìíîòóùú",  # Italian
    "áéëïóöüè",  # Dutch
    "àçèéíïòóúü",  # Catalan
    "æøåéó",  # Danish, Norwegian
    "åäöé",  # Swedish, Finnish
    "áéíóúýþæöð",  # Icelandic
    "áčďéěíňóřšťúůýž",  # Czech
    "áäčďéíĺľňóôŕšťúýž",  # Slovak
    "ąćęłńóśźż",  # Polish
    "áéíóöőúüű",  # Hungarian
    "čćđšž",  # Croatian, Slovenian, Bosnian
    "ăâîșțşţ",  # Romanian
    "çğıöşüâîû",  # Turkish
    "ąčęėįšųūž",  # Lithuanian
    "āčēģīķļņšūž",  # Latvian
    "äöõüšž",  # Estonian
    "çë",  # Albanian
)
# Outside the alphabets' reckoning: symbols Unicode counts as letters (and ``\w``
# also matches numbers such as "½", dropped with every other non-letter).
_NOT_LETTERS: Final = frozenset("ªµº")
# Scripts written together (Japanese, Chinese, Korean) count as one.
_SCRIPT_GROUPS: Final = {
    "HIRAGANA": "CJK",
    "KATAKANA": "CJK",
    "HANGUL": "CJK",
    "BOPOMOFO": "CJK",
    "HALFWIDTH": "CJK",
    "FULLWIDTH": "CJK",
}
_LETTER: Final = re.compile(r"[^\W\d_]")
_HIGH_BYTE: Final = re.compile(rb"[\x80-\xff]")
_KANA: Final = re.compile(r"[\u3041-\u309f\u30a0-\u30ff]")
_NON_ASCII: Final = re.compile(r"[^\x00-\x7f]")
_WHITESPACE: Final = b" \t\r\n"


def label(codec: str) -> str:
    """The stored name of a codec: its IANA label where Python knows one."""
    name = codecs.lookup(codec).name
    return _LABELS.get(name, name)


def _cut(line: bytes, size: int) -> bytes:
    """``line[:size]``, ending at whitespace or an ASCII byte where it can.

    Whitespace never occurs inside a character of the candidate encodings, and a
    byte below 0x80 never begins a multi-byte one (so a cut after it is safe but
    for GB18030's rare four-byte characters).
    """
    head = line[:size]
    end = max(head.rfind(byte) for byte in _WHITESPACE)
    if end > 0:
        return head[: end + 1]
    return head.rstrip(bytes(range(0x80, 0x100))) or head


def detector_sample(data: bytes) -> bytes:
    """The whole lines of ``data`` that hold non-ASCII bytes, up to :data:`SAMPLE_BYTES`.

    Only a first line longer than that is cut, by :func:`_cut`.
    """
    if len(data) <= SAMPLE_BYTES:
        return data
    parts: list[bytes] = []
    size = 0
    position = 0
    while (match := _HIGH_BYTE.search(data, position)) is not None:
        start = data.rfind(b"\n", 0, match.start()) + 1
        end = data.find(b"\n", match.start())
        end = len(data) if end < 0 else end + 1
        if size + end - start > SAMPLE_BYTES:
            if not parts:
                parts.append(_cut(data[start:end], SAMPLE_BYTES))
            break
        parts.append(data[start:end])
        size += end - start
        position = end
    return b"".join(parts)


def _strict(sample: bytes, codec: str) -> str | None:
    try:  # incremental: a character cut at the end of the sample waits
        text: str = codecs.getincrementaldecoder(codec)().decode(sample)
    except UnicodeDecodeError:
        return None
    return text


def escape_encoding(sample: bytes) -> str | None:
    """ISO-2022-JP/-KR or HZ, recognised by their escape sequences, or ``None``.

    Only ASCII bytes are considered (these encodings use no others); the reading must
    be strict and hold at least :data:`MIN_ESCAPED_CJK` CJK characters.
    """
    if not sample.isascii() or (b"\x1b" not in sample and b"~{" not in sample):
        return None
    for codec, escapes in _ESCAPES:
        if not any(escape in sample for escape in escapes):
            continue
        text = _strict(sample, codec)
        if text is not None and len(_CJK.findall(text)) >= MIN_ESCAPED_CJK:
            return codec
    return None


def _korean(sample: bytes) -> bool:
    """Whether EUC-KR reads ``sample`` strictly as mostly Hangul syllables.

    EUC-KR, not CP949: CP949's extension takes almost any pair of high bytes
    (Shift_JIS too) for a syllable.
    """
    text = _strict(sample, "euc_kr")
    if text is None:
        return False
    syllables = len(_HANGUL_SYLLABLE.findall(text))
    return syllables > KOREAN_SYLLABLE_SHARE * len(_NON_ASCII.findall(text))


def _japanese(sample: bytes) -> str | None:
    """The Japanese encoding that decodes ``sample`` strictly into text with kana."""
    for codec in _JAPANESE:
        text = _strict(sample, codec)
        if text is None:
            continue
        kana = len(_KANA.findall(text))
        if kana >= MIN_KANA and kana >= MIN_KANA_SHARE * len(_NON_ASCII.findall(text)):
            return None if _korean(sample) else codec
    return None


def _strict_multi_byte(sample: bytes) -> str | None:
    """The multi-byte encoding whose strict reading of ``sample`` best fits one script
    (ties: the earlier in :data:`_STRICT_MULTI_BYTE`), if it fits it nearly whole."""
    fits = [
        (-alphabet_fit(text), rank, codec)
        for rank, codec in enumerate(_STRICT_MULTI_BYTE)
        if (text := _strict(sample, codec)) is not None and not garbled_reason(text)
    ]
    if not fits:
        return None
    fit, _, codec = min(fits)
    return codec if -fit >= MIN_STRICT_FIT else None


def alphabet_fit(text: str) -> float:
    """Share of the letters of ``text`` that the one best-fitting alphabet covers.

    A Latin alphabet is ASCII's letters plus one language's (:data:`ALPHABETS`);
    any other script covers all of its own letters. 1.0 when there are no letters.
    """
    letters = Counter(_LETTER.findall(text.lower()))
    for symbol in [char for char in letters if char in _NOT_LETTERS or not char.isalpha()]:
        del letters[symbol]
    total = sum(letters.values())
    if not total:
        return 1.0
    ascii_letters = 0
    latin: dict[str, int] = {}
    scripts: Counter[str] = Counter()
    for letter, count in letters.items():
        if letter.isascii():
            ascii_letters += count
            continue
        script = unicodedata.name(letter, "?").partition(" ")[0]
        if script == "LATIN":
            latin[letter] = count
        else:
            scripts[_SCRIPT_GROUPS.get(script, script)] += count
    covered = [
        ascii_letters + sum(latin.get(letter, 0) for letter in alphabet) for alphabet in ALPHABETS
    ]
    covered.extend(scripts.values())
    return max(covered) / total


def _rank(name: str) -> int:
    return _RANK.get(name, len(_RANK))


def _preferred(match: charset_normalizer.CharsetMatch) -> str:
    """Of the encodings that decode the sample as ``match`` does, the most common."""
    names = {codecs.lookup(name).name for name in match.could_be_from_charset}
    return min(names, key=_rank)


def _western(sample: bytes, fit: float) -> str | None:
    """Windows-1252 (or Latin-1), when it reads ``sample`` as well as ``fit``, ungarbled."""
    try:
        codec, text = "cp1252", sample.decode("cp1252")
    except UnicodeDecodeError:
        codec, text = "latin-1", sample.decode("latin-1")
    if alphabet_fit(text) < fit or garbled_reason(text):
        return None
    return codec


def guess_encoding(data: bytes) -> str | None:
    """The most likely legacy encoding of ``data`` (Python codec name), or ``None``.

    ``None`` means no candidate decodes the sample into plausible text.
    """
    sample = detector_sample(data)
    japanese = _japanese(sample)
    if japanese is not None:
        return japanese
    matches = charset_normalizer.from_bytes(sample, cp_isolation=list(CANDIDATES))
    best = matches.best()
    if best is None:
        return _strict_multi_byte(sample)
    scored = [
        (-alphabet_fit(str(m)), -m.coherence, name not in _MULTI_BYTE, _rank(name), name)
        for m in matches
        if m.chaos <= best.chaos + CHAOS_MARGIN
        for name in (_preferred(m),)
    ]
    fit, coherence, _, _, chosen = min(scored)
    if chosen not in _MULTI_BYTE and -coherence < MIN_COHERENCE:
        return _western(sample, -fit) or chosen
    if chosen == "cp949" and _HANGUL_MAKE_UP in sample and _strict(sample, "euc_kr"):
        # KS X 1001's 8-byte make-up sequences (a filler, then three jamo) spell
        # syllables EUC-KR lacks; only Python's EUC-KR codec composes them.
        return "euc_kr"
    return chosen


def reads_as_well(data: bytes, codec: str, other: str) -> bool:
    """Whether ``codec`` reads ``data`` about as cleanly as ``other`` does.

    Measured with the detector's mess ratio on :func:`detector_sample`; used to
    weigh a document's own declaration against the statistical guess.
    """
    sample = detector_sample(data)
    mine = mess_ratio(sample.decode(codec, "replace"), maximum_threshold=1.0)
    theirs = mess_ratio(sample.decode(other, "replace"), maximum_threshold=1.0)
    return mine <= theirs + CHAOS_MARGIN
