"""Text encodings: detection, BOM-less UTF-16/32, and the refusal of mojibake.

The quality fixtures (``tests/fixtures/quality/*``, made by
``tests/fixtures/builders/encoding.py``) are realistic texts in each encoding with
their reference text; the cases below add short texts, hostile sizes and garbled
input built from the same reference texts.
"""

# Texts in many scripts, on purpose: letters that look like Latin ones are the point.
# ruff: noqa: RUF001

from __future__ import annotations

import codecs
import importlib.util
import random
from pathlib import Path
from typing import Any

import charset_normalizer
import pytest
from tests.support.golden import FIXTURES, expected_path

from pipeline.errors import CorruptContent, UnsupportedContent
from pipeline.processing import charset
from pipeline.processing.decode import decode_text, decode_with, looks_binary, wide_encoding
from pipeline.processing.extract import extract
from pipeline.processing.garbled import garbled_reason
from pipeline.processing.sniff import classify_text, sniff
from pipeline.processing.validate import ValidationPolicy, validate

QUALITY = FIXTURES / "quality"

#: Every encoding fixture: its kind and the encoding it must be detected as.
CASES: dict[str, tuple[str, str]] = {
    "text/cp1251_russian.txt": ("text", "windows-1251"),
    "text/koi8r_russian.txt": ("text", "koi8-r"),
    "text/shift_jis_japanese.txt": ("text", "shift_jis"),
    "text/euc_jp_japanese.txt": ("text", "euc-jp"),
    "text/cp1250_czech.txt": ("text", "windows-1250"),
    # ISO-8859-7 and Windows-1253 read this text identically; 1253 is the more common.
    "text/iso8859_7_greek.txt": ("text", "windows-1253"),
    # Latin-1 text is Windows-1252 text (1252 is a superset of its printable part).
    "text/latin1_french.txt": ("text", "windows-1252"),
    "text/cp1252_german.txt": ("text", "windows-1252"),
    "text/cp1252_english.txt": ("text", "windows-1252"),
    "text/utf16le_nobom_russian.txt": ("text", "utf-16le"),
    "text/utf16be_nobom_japanese.txt": ("text", "utf-16be"),
    "text/utf32le_nobom_french.txt": ("text", "utf-32le"),
    "text/utf32be_nobom_greek.txt": ("text", "utf-32be"),
    "text/cp949_korean.txt": ("text", "cp949"),
    "text/johab_korean.txt": ("text", "johab"),
    "text/iso2022_kr_korean.txt": ("text", "iso-2022-kr"),
    "text/iso2022_jp_japanese.txt": ("text", "iso-2022-jp"),
    "text/hz_chinese.txt": ("text", "hz-gb-2312"),
    "text/shift_jis_2004_japanese.txt": ("text", "shift_jis_2004"),
    "text/euc_jis_2004_japanese.txt": ("text", "euc_jis_2004"),
    "html/encoding_cp1251.html": ("html", "windows-1251"),
    "html/encoding_euc_jp_undeclared.html": ("html", "euc-jp"),
    "html/encoding_cp1250_undeclared.html": ("html", "windows-1250"),
    "markdown/encoding_shift_jis.md": ("markdown", "shift_jis"),
    "markdown/encoding_cp1250.md": ("markdown", "windows-1250"),
}


def reference(case: str) -> str:
    return expected_path(QUALITY / case, ".txt").read_text("utf-8").removesuffix("\n")


@pytest.mark.parametrize("case", sorted(CASES))
def test_fixture_is_detected_and_extracted_exactly(case: str) -> None:
    data = (QUALITY / case).read_bytes()
    sniffed = sniff(data)
    assert (sniffed.kind, sniffed.encoding) == CASES[case]
    assert extract(data, sniffed.kind, sniffed.encoding).text == reference(case)


def test_every_encoding_fixture_is_listed() -> None:
    """Every input builders/encoding.py writes is a case here (and nothing else is)."""
    path = QUALITY.parent / "builders" / "encoding.py"
    spec = importlib.util.spec_from_file_location("fixture_builder_encoding", path)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    inputs = {
        str(Path(name).relative_to("quality"))
        for name in module.build()
        if ".expected." not in name
    }
    assert inputs == set(CASES)


def test_the_fixtures_are_traps_for_the_old_decoder() -> None:
    # Before detection, non-UTF-8 was read as Windows-1252 or Latin-1.
    shift_jis = (QUALITY / "text/shift_jis_japanese.txt").read_bytes()
    assert classify_text(shift_jis.decode("latin-1")) == "markdown"
    assert sniff(shift_jis).kind == "text"
    for case in ("text/cp1251_russian.txt", "text/cp1250_czech.txt", "text/koi8r_russian.txt"):
        assert (QUALITY / case).read_bytes().decode("cp1252", "replace") != reference(case)
    # 7-bit escape encodings are valid ASCII: read as UTF-8 they index escape codes.
    for case in ("iso2022_jp_japanese", "iso2022_kr_korean", "hz_chinese"):
        data = (QUALITY / f"text/{case}.txt").read_bytes()
        assert data.isascii()
        assert data.decode("utf-8") != reference(f"text/{case}.txt")
    # ISO-2022's escape and shift bytes are controls: counted raw, the text is "binary".
    iso2022_kr = (QUALITY / "text/iso2022_kr_korean.txt").read_bytes()
    assert iso2022_kr.count(b"\x0e") > 0.01 * len(iso2022_kr)
    assert not looks_binary(iso2022_kr)
    # CP949's Unified Hangul Code syllables are outside EUC-KR's byte ranges.
    with pytest.raises(UnicodeDecodeError):
        (QUALITY / "text/cp949_korean.txt").read_bytes().decode("euc-kr")
    # Text in JIS X 0213 does not decode as plain Shift_JIS or EUC-JP.
    for case, plain in (("shift_jis_2004", "shift_jis"), ("euc_jis_2004", "euc-jp")):
        with pytest.raises(UnicodeDecodeError):
            (QUALITY / f"text/{case}_japanese.txt").read_bytes().decode(plain)


@pytest.mark.parametrize(
    ("text", "encoding", "label"),
    [
        ("今日はいい天気ですね。散歩に行きましょう。", "iso2022_jp", "iso-2022-jp"),
        ("오늘은 날씨가 아주 좋습니다.", "iso2022_kr", "iso-2022-kr"),
        ("今天天气很好，我们去公园散步吧。", "hz", "hz-gb-2312"),
        # ISO-2022-JP-2 designates Korean and Chinese sets too.
        ("서울과 東京 그리고 北京", "iso2022_jp_2", "iso-2022-jp-2"),
    ],
)
def test_escape_encodings_are_recognised_by_their_sequences(
    text: str, encoding: str, label: str
) -> None:
    data = text.encode(encoding)
    assert data.isascii()
    decoded = decode_text(data)
    assert (decoded.text, decoded.encoding, decoded.detection) == (text, label, "escapes")
    assert decode_with(data, decoded.encoding) == text


@pytest.mark.parametrize(
    "text",
    [
        "Use ~{ and ~} to switch modes in HZ; a tilde ~~ is doubled.",
        "LaTeX: a~{b} and \\hbox~{x~} stay as written.",
        "Terminal colours: \x1b[31mred\x1b[0m and \x1b$B alone.",
        "",
    ],
)
def test_ascii_that_merely_resembles_an_escape_encoding_stays_ascii(text: str) -> None:
    decoded = decode_text(text.encode("ascii"))
    assert (decoded.text, decoded.detection) == (text, "utf-8")


def test_euc_kr_syllables_spelled_with_make_up_sequences_are_composed() -> None:
    # KS X 1001 spells a syllable outside its 2,350 as filler + three jamo (8 bytes);
    # Python's EUC-KR codec composes them, CP949 shows the jamo.
    assert "쓔".encode("euc-kr").startswith(b"\xa4\xd4")  # the filler
    data = (
        "그리고 ".encode("euc-kr") * 5
        + "쓔 ".encode("euc-kr")
        + ("마을에서 함께 살아갑니다. ".encode("euc-kr") * 5)
    )
    decoded = decode_text(data)
    assert decoded.encoding == "euc-kr"
    assert "쓔" in decoded.text
    assert "\u3164" not in decoded.text  # no HANGUL FILLER left


def test_korean_with_jamo_is_not_taken_for_japanese_kana() -> None:
    # EUC-KR's jamo row is EUC-JP's hiragana row: ㄱㄴㄷ read as EUC-JP are kana.
    text = "한글 자모 ㄱ ㄴ ㄷ ㄹ ㅁ ㅂ ㅅ 를 배웁니다. 자음은 ㅇ ㅈ ㅊ 입니다. " * 3
    data = text.encode("euc-kr")
    assert any("\u3041" <= c <= "\u30ff" for c in data.decode("euc-jp", "ignore"))
    decoded = decode_text(data)
    assert decoded.text == text
    assert decoded.encoding in ("cp949", "euc-kr")


@pytest.mark.parametrize(
    ("text", "encoding", "label"),
    [
        ("Ceci est un résumé très court.", "latin-1", "windows-1252"),
        ("Price list\n£5 — tea\n£7 — coffee\n", "cp1252", "windows-1252"),
        ("Er sagte „Fuß“ und ging.", "cp1252", "windows-1252"),
        ("Ærøskøbing på Ærø er en lille by.", "latin-1", "windows-1252"),
        ("Temp: 25°C ± 0,5°C; 3 µm; © 2024 — ½ Preis!", "cp1252", "windows-1252"),
        ("Příliš žluťoučký kůň úpěl ďábelské ódy.", "cp1250", "windows-1250"),
        ("Zażółć gęślą jaźń.", "cp1250", "windows-1250"),
        ("Árvíztűrő tükörfúrógép és egy kis szöveg.", "cp1250", "windows-1250"),
        ("Türkçe karakterler: ğüşıöç ĞÜŞİÖÇ. İstanbul güzel bir şehir.", "cp1254", "windows-1254"),
        ("Привет, как дела? Всё хорошо.", "cp1251", "windows-1251"),
        ("Привет, как дела? Всё хорошо.", "koi8-r", "koi8-r"),
        ("Καλημέρα σας, τι κάνετε;", "iso-8859-7", "windows-1253"),
        ("今日はいい天気ですね。", "shift_jis", "shift_jis"),
        ("今日はいい天気ですね。", "euc-jp", "euc-jp"),
        ("今天天气很好，我们去公园散步吧。北京的秋天非常美丽。", "gb18030", "gb18030"),
        ("오늘은 날씨가 아주 좋습니다. 공원에 산책하러 갑시다.", "cp949", "cp949"),
        ("مرحبا بالعالم، كيف حالك اليوم؟", "cp1256", "windows-1256"),
        # A stray undefined byte in Western text: Latin-1, not Arabic Windows-1256.
        ("Ancien café \x81 naïve résumé\n", "latin-1", "iso-8859-1"),
    ],
)
def test_short_texts_decode_right(text: str, encoding: str, label: str) -> None:
    decoded = decode_text(text.encode(encoding))
    assert (decoded.text, decoded.encoding, decoded.detection) == (text, label, "statistics")


def test_utf8_and_boms_stay_the_fast_path(monkeypatch: pytest.MonkeyPatch) -> None:
    def no_detector(*args: Any, **kwargs: Any) -> None:
        raise AssertionError("the detector ran")

    monkeypatch.setattr(charset_normalizer, "from_bytes", no_detector)
    for case in CASES:
        text = reference(case)
        assert decode_text(text.encode("utf-8")).encoding == "utf-8"
        assert decode_text(codecs.BOM_UTF16_LE + text.encode("utf-16-le")).text == text


# ------------------------------------------------------- UTF-16/32 without BOM


@pytest.mark.parametrize(
    ("text", "encoding"),
    [
        ("Hello, world!\n", "utf-16le"),
        ("Hello, world!\n", "utf-16be"),
        ("Hi\n", "utf-32le"),
        ("Привет, мир!\n", "utf-16le"),
        ("京都の秋を歩く。\n十一月の京都は、紅葉を見に来た観光客でにぎわいます。\n", "utf-16be"),
        ("😀 emoji outside the BMP\n", "utf-16le"),
    ],
)
def test_bomless_utf16_and_utf32_are_recognised(text: str, encoding: str) -> None:
    data = text.encode(encoding)
    assert wide_encoding(data) == encoding
    assert not looks_binary(data)
    assert decode_text(data).text == text


@pytest.mark.parametrize(
    "data",
    [
        b"text with a NUL\x00 byte",
        b"\x00\x01\x02\x03" * 64,
        random.Random(7).randbytes(4096),
        (FIXTURES / "validate" / "random.bin").read_bytes(),
        (FIXTURES / "validate" / "elf.bin").read_bytes(),
    ],
    ids=["nul-in-text", "counter", "random", "random.bin", "elf"],
)
def test_binary_with_nuls_is_not_taken_for_utf16(data: bytes) -> None:
    assert wide_encoding(data) is None
    assert looks_binary(data)
    with pytest.raises(UnsupportedContent, match="supported types are"):
        sniff(data)


# ---------------------------------------------------------------- mojibake


def _utf8_read_as(text: str, codec: str) -> bytes:
    """UTF-8 bytes read in ``codec`` and saved again as UTF-8 (double encoding)."""
    return text.encode("utf-8").decode(codec, "replace").encode("utf-8")


GARBLED: dict[str, tuple[bytes, str]] = {
    "utf8-as-cp1252-french": (
        _utf8_read_as(reference("text/latin1_french.txt"), "cp1252"),
        "UTF-8 that was read as a Windows code page",
    ),
    "utf8-as-cp1252-english": (
        _utf8_read_as(reference("text/cp1252_english.txt"), "cp1252"),
        "â€™",
    ),
    "utf8-as-cp1251-russian": (
        _utf8_read_as(reference("text/cp1251_russian.txt"), "cp1251"),
        "UTF-8 that was read as a Windows code page",
    ),
    "cp1251-as-latin1-russian": (
        reference("text/cp1251_russian.txt").encode("cp1251").decode("latin-1").encode(),
        "made only of accented Latin letters",
    ),
    "cp1253-as-latin1-greek": (
        reference("text/iso8859_7_greek.txt").encode("cp1253").decode("latin-1").encode(),
        "made only of accented Latin letters",
    ),
    "shift_jis-as-utf8-replaced": (
        (QUALITY / "text/shift_jis_japanese.txt").read_bytes().decode("utf-8", "replace").encode(),
        "could not be decoded",
    ),
}


@pytest.mark.parametrize("case", sorted(GARBLED))
def test_mojibake_is_refused_with_a_permanent_reason(case: str) -> None:
    data, reason = GARBLED[case]
    with pytest.raises(CorruptContent, match="garbled") as raised:
        validate(data, ValidationPolicy(max_bytes=1 << 20))
    assert reason in raised.value.reason
    assert not raised.value.transient


LEGIT: dict[str, str] = {
    "vietnamese": "Tiếng Việt có nhiều dấu: được, người, những, ấy, ở đây, không, biết.",
    "icelandic": "Þórður og Guðrún fóru í ævintýraferð á Íslandi með ömmu sinni í sumar.",
    "mentions-mojibake": "Broken files show Ã© for é and â€™ for ’. " + "Normal text. " * 40,
    "few-replacements": "A lost character \ufffd here and \ufffd there. " + "More text. " * 100,
    "ellipsis-and-quotes": "L’été… « Très » bien ! Fuß“ — ça va ? " * 3,
    "symbols": "Temp: 25°C ± 0,5°C; 3 µm; © 2024 — ½ Preis! ¼ × ÷ ¶ § ™ € £ ¥",
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_no_fixture_text_is_refused_in_utf8(case: str) -> None:
    assert garbled_reason(reference(case)) is None
    assert sniff(reference(case).encode("utf-8")).encoding == "utf-8"


@pytest.mark.parametrize("case", sorted(LEGIT))
def test_legitimate_unusual_text_is_not_refused(case: str) -> None:
    assert garbled_reason(LEGIT[case]) is None
    assert sniff(LEGIT[case].encode("utf-8")).kind == "text"


def test_an_html_declaration_that_gives_mojibake_is_ignored() -> None:
    page = (
        '<html><head><meta charset="koi8-r"></head><body><p>'
        + reference("text/cp1251_russian.txt")
        + "</p></body></html>"
    )
    # Valid UTF-8 outranks a declaration.
    assert sniff(page.encode("utf-8")).encoding == "utf-8"
    # Windows-1251 bytes declared as KOI8-R read as case-swapped Cyrillic ("пПХЧЕФ"):
    # the guess stands when the declaration reads less cleanly.
    assert sniff(page.encode("cp1251")).encoding == "windows-1251"
    assert sniff(page.replace("koi8-r", "windows-1251").encode("cp1251")).encoding == (
        "windows-1251"
    )


# ------------------------------------------------------------- bounded work


def _repeat(text: str, codec: str, size: int) -> bytes:
    unit = text.encode(codec)
    return unit * (size // len(unit) + 1)


@pytest.mark.parametrize("size", [100_000, 1_000_000])
def test_the_detector_sees_a_bounded_sample(monkeypatch: pytest.MonkeyPatch, size: int) -> None:
    seen: list[int] = []
    real = charset_normalizer.from_bytes

    def spy(sample: bytes, **kwargs: Any) -> charset_normalizer.CharsetMatches:
        seen.append(len(sample))
        return real(sample, **kwargs)

    monkeypatch.setattr(charset_normalizer, "from_bytes", spy)
    text = reference("text/cp1250_czech.txt") + "\n"
    data = _repeat(text, "cp1250", size)
    decoded = decode_text(data)
    assert decoded.encoding == "windows-1250"
    assert decoded.text == data.decode("cp1250")
    assert seen
    assert max(seen) <= charset.SAMPLE_BYTES


def test_the_sample_holds_the_lines_with_non_ascii_bytes() -> None:
    tail = "Последняя строка по-русски.\n".encode("cp1251")
    data = b"plain ascii text line\n" * 50_000 + tail * 3
    sample = charset.detector_sample(data)
    assert sample == tail * 3
    assert decode_text(data).encoding == "windows-1251"


def test_the_sample_keeps_whole_lines_and_cuts_only_a_giant_first_one() -> None:
    line = "データの扱い方やグラフの作り方について質問があれば声をかけてください。".encode(
        "shift_jis"
    )
    many_lines = (line + b"\n") * 2000
    sample = charset.detector_sample(many_lines)
    assert len(sample) <= charset.SAMPLE_BYTES
    assert sample.endswith(b"\n")
    assert sample.decode("shift_jis")
    one_line = (line + b" ") * 1000
    cut = charset.detector_sample(one_line)
    assert len(cut) <= charset.SAMPLE_BYTES
    assert cut.endswith(b" ")
    assert decode_text(one_line).encoding == "shift_jis"


def test_bytes_no_encoding_reads_as_text_are_refused() -> None:
    rng = random.Random(3)
    alphabet = [*range(0x20, 0x7F), *range(0xA0, 0x100)]
    data = bytes(rng.choice(alphabet) for _ in range(1_000_000))
    decoded = decode_text(data)  # never raises: validation decides
    assert (len(decoded.text), decoded.detection) == (len(data), "none")
    with pytest.raises(CorruptContent, match="encoding could not be recognised"):
        sniff(data)


# ------------------------------------------------------------------ labels


@pytest.mark.parametrize(
    "codec",
    sorted(
        {*charset.CANDIDATES, *charset._STRICT_MULTI_BYTE, *charset._JAPANESE}
        | {codec for codec, _ in charset._ESCAPES}
        | {"euc_kr"}
    ),
)
def test_every_stored_label_is_a_python_codec_of_the_same_encoding(codec: str) -> None:
    label = charset.label(codec)
    assert codecs.lookup(label).name == codecs.lookup(codec).name
    assert len(label) <= 32  # documents.encoding is VARCHAR(32)
    assert label == label.lower()


def test_alphabet_fit_prefers_the_reading_a_language_writes() -> None:
    czech = reference("text/cp1250_czech.txt").encode("cp1250")
    assert charset.alphabet_fit(czech.decode("cp1250")) == 1.0
    assert charset.alphabet_fit(czech.decode("cp1252")) < 1.0
    assert charset.alphabet_fit("12345 ½ ¼") == 1.0
