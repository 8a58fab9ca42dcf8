"""Validation and sniffing: golden fixtures per type, plus targeted edge cases."""

from __future__ import annotations

import importlib.util
import io
import re
import zipfile
from pathlib import Path
from types import ModuleType

import pytest
from tests.support.golden import FIXTURES, case_files, check_json, error_result, expected_path

from pipeline.errors import (
    ContentTooLarge,
    CorruptContent,
    EmptyContent,
    EncryptedContent,
    PipelineError,
    UnsupportedContent,
)
from pipeline.processing.decode import decode_text, decode_with, looks_binary
from pipeline.processing.kinds import DOCUMENT_KINDS, IMAGE_MIME_TYPES, MIME_TYPES
from pipeline.processing.sniff import classify_text, sniff
from pipeline.processing.validate import ValidationPolicy, validate

#: The policy every validate fixture runs under (oversize.txt is one byte over it).
FIXTURE_POLICY = ValidationPolicy(max_bytes=8192)
VALIDATE_CASES = case_files("validate")


@pytest.mark.parametrize("case", VALIDATE_CASES, ids=lambda p: p.name)
def test_validate_fixture(case: Path) -> None:
    data = case.read_bytes()
    try:
        result: object = validate(data, FIXTURE_POLICY)
    except PipelineError as exc:
        result = error_result(exc)
    check_json(expected_path(case, ".json"), result)


@pytest.mark.parametrize("case", VALIDATE_CASES, ids=lambda p: p.name)
def test_sniff_agrees_with_validate(case: Path) -> None:
    data = case.read_bytes()
    try:
        validation = validate(data, ValidationPolicy(max_bytes=1 << 20))
    except EncryptedContent:
        assert sniff(data).kind == "pdf"  # encryption is validate's own check
        return
    except PipelineError as exc:
        with pytest.raises(type(exc)):
            sniff(data)
        return
    sniffed = sniff(data)
    assert (sniffed.kind, sniffed.mime, sniffed.encoding) == (
        validation.kind,
        validation.mime,
        validation.encoding,
    )


def test_fixture_cases_cover_the_brief() -> None:
    names = {case.name for case in VALIDATE_CASES}
    assert {
        "pdf_simple.pdf",
        "docx_simple.docx",
        "html_page.html",
        "markdown.md",
        "text_utf8.txt",
        "text_utf16le_bom.txt",
        "text_utf16be_bom.txt",
        "text_cp1252.txt",
        "empty.txt",
        "image.png",
        "elf.bin",
        "random.bin",
        "zip_not_docx.zip",
        "legacy_ole.doc",
        "pdf_encrypted.pdf",
        "oversize.txt",
    } <= names


def test_mime_types_cover_every_kind() -> None:
    assert set(MIME_TYPES) == set(DOCUMENT_KINDS) - {"image"}  # an image's is its format's
    assert set(IMAGE_MIME_TYPES.values()) == {"image/png", "image/jpeg", "image/tiff"}


# ------------------------------------------------------------------ validate


def test_size_is_checked_before_anything_else() -> None:
    png = (FIXTURES / "validate" / "image.png").read_bytes()
    with pytest.raises(ContentTooLarge, match="over the limit of 10 bytes"):
        validate(png, ValidationPolicy(max_bytes=10))


def test_exactly_at_the_limit_is_accepted() -> None:
    assert validate(b"hello", ValidationPolicy(max_bytes=5)).size == 5


def test_policy_rejects_non_positive_limit() -> None:
    with pytest.raises(ValueError, match="max_bytes"):
        ValidationPolicy(max_bytes=0)


def test_encrypt_metadata_key_is_not_encryption() -> None:
    data = b"%PDF-1.7\n1 0 obj << /Type /Catalog /EncryptMetadata false >> endobj\n%%EOF\n"
    assert validate(data, FIXTURE_POLICY).kind == "pdf"


def test_inline_encrypt_dictionary_is_encryption() -> None:
    data = b"%PDF-1.4\ntrailer << /Root 1 0 R /Encrypt << /Filter /Standard >> >>\n%%EOF\n"
    with pytest.raises(EncryptedContent, match="password protected"):
        validate(data, FIXTURE_POLICY)


def test_sha256_and_size() -> None:
    result = validate(b"abc", FIXTURE_POLICY)
    assert result.sha256 == "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
    assert result.size == 3


# --------------------------------------------------------------------- sniff


@pytest.mark.parametrize(
    ("data", "what"),
    [
        (b"GIF87a\x01\x00\x01\x00", "GIF image"),
        (b"GIF89a\x01\x00\x01\x00", "GIF image"),
        (b"\x1f\x8b\x08\x00\x00\x00\x00\x00", "gzip archive"),
        (b"RIFF\x00\x00\x00\x00WEBPVP8 ", "WebP image"),
        (b"{\\rtf1\\ansi Hello}", "RTF document"),
        (b"BZh91AY&SY\x00\x00", "bzip2 archive"),
        (b"\x00\x00\x00\x18ftypmp42", "MP4/QuickTime/HEIF media file"),
    ],
)
def test_known_binary_formats_are_named(data: bytes, what: str) -> None:
    with pytest.raises(UnsupportedContent, match=re.escape(what)):
        sniff(data)


def _zip(names: list[str]) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for name in names:
            archive.writestr(name, "x")
    return buffer.getvalue()


def test_xlsx_is_named() -> None:
    with pytest.raises(UnsupportedContent, match="XLSX"):
        sniff(_zip(["[Content_Types].xml", "xl/workbook.xml"]))


def test_docx_needs_both_parts() -> None:
    assert sniff(_zip(["[Content_Types].xml", "word/document.xml"])).kind == "docx"
    with pytest.raises(UnsupportedContent, match="ZIP archive"):
        sniff(_zip(["word/document.xml"]))


def test_truncated_zip_is_corrupt() -> None:
    docx = (FIXTURES / "validate" / "docx_simple.docx").read_bytes()
    with pytest.raises(CorruptContent, match="damaged or truncated ZIP"):
        sniff(docx[: len(docx) // 2])


def test_encrypted_office_file_is_encrypted() -> None:
    data = (
        b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1" + b"\x00" * 504 + "EncryptedPackage".encode("utf-16-le")
    )
    with pytest.raises(EncryptedContent, match="Office document is encrypted"):
        sniff(data)


def test_pdf_header_after_junk_within_1024_bytes() -> None:
    assert sniff(b"X-Mailer: junk\n" * 10 + b"%PDF-1.4\n").kind == "pdf"
    assert sniff(b"a" * 1024 + b"%PDF-1.4\n").kind == "text"


def test_whitespace_only_utf16_is_empty() -> None:
    with pytest.raises(EmptyContent, match="only whitespace"):
        sniff("\ufeff \n\t".encode("utf-16-le"))


@pytest.mark.parametrize(
    ("text", "kind"),
    [
        ("<!-- c -->\n<!DOCTYPE html><p>x</p>", "html"),
        ("<?xml version='1.0'?>\n<html xmlns='http://www.w3.org/1999/xhtml'>", "html"),
        ("Some text then <body>content</body>", "html"),
        ("<div><p>one</p><ul><li>two</li></ul></div>", "html"),
        ("Use <b>bold</b> and <br> in a sentence.", "text"),
        ("# Title\n\nJust a paragraph under a heading.", "markdown"),
        ("Title\n=====\n\nA [link](https://example.com).", "markdown"),
        ("Intro:\n\n```\ncode\n```\n", "markdown"),
        ("Plain prose. It mentions *one* thing only.", "text"),
        ("Shopping:\n1. eggs\n", "text"),
        ("Shopping:\n- eggs\n- milk\n\nSee `notes`.", "markdown"),
        ("# just a comment-like line in a config\nkey = value\n", "markdown"),
    ],
)
def test_classify_text(text: str, kind: str) -> None:
    assert classify_text(text) == kind


def test_html_meta_charset_is_used_without_bom() -> None:
    page = '<html><head><meta charset="koi8-r"></head><body>Привет</body></html>'
    assert sniff(page.encode("koi8-r")).encoding == "koi8-r"
    # A BOM wins over the declaration.
    assert sniff(b"\xef\xbb\xbf" + page.encode("utf-8")).encoding == "utf-8"
    # A declaration that does not decode the bytes is ignored.
    assert sniff(page.replace("koi8-r", "ascii").encode("utf-8")).encoding == "utf-8"


# -------------------------------------------------------------------- decode


@pytest.mark.parametrize(
    ("data", "text", "encoding"),
    [
        (b"\xef\xbb\xbfhi", "hi", "utf-8"),
        ("\ufeffhi".encode("utf-16-le"), "hi", "utf-16le"),
        ("\ufeffhi".encode("utf-16-be"), "hi", "utf-16be"),
        ("\ufeffhi".encode("utf-32-le"), "hi", "utf-32le"),
        ("\ufeffhi".encode("utf-32-be"), "hi", "utf-32be"),
        ("caf\u00e9".encode(), "caf\u00e9", "utf-8"),
        (b"\x93quoted\x94 \x80", "\u201cquoted\u201d \u20ac", "windows-1252"),
        (b"caf\xe9 \x81", "caf\u00e9 \x81", "iso-8859-1"),
    ],
)
def test_decode_text(data: bytes, text: str, encoding: str) -> None:
    decoded = decode_text(data)
    assert (decoded.text, decoded.encoding) == (text, encoding)
    assert decode_with(data, decoded.encoding) == text


def test_decode_never_raises_on_broken_utf16() -> None:
    assert decode_text(b"\xff\xfeh\x00i").text == "h\ufffd"


@pytest.mark.parametrize(
    ("data", "binary"),
    [
        (b"", False),
        (b"plain text\twith tabs\r\nand\x0cform feeds", False),
        ("\ufeffUTF-16 text".encode("utf-16-le"), False),
        ("\ufeffUTF-32 text".encode("utf-32-be"), False),
        (b"text with a NUL\x00 byte", True),
        (b"a" * 99 + b"\x01", False),  # exactly 1%: still text
        (b"a" * 98 + b"\x01\x02", True),
        (b"\x1b[31mred\x1b[0m" + b" " * 10, True),
    ],
)
def test_looks_binary(data: bytes, binary: bool) -> None:
    assert looks_binary(data) is binary


# ------------------------------------------------------------- the fixtures


def _builder() -> ModuleType:
    spec = importlib.util.spec_from_file_location("build_fixtures", FIXTURES / "build_fixtures.py")
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_committed_binary_fixtures_match_the_builder() -> None:
    builder = _builder()
    built: dict[str, bytes] = builder.build()
    stale = [name for name, data in built.items() if (FIXTURES / name).read_bytes() != data]
    assert not stale, f"run: uv run python tests/fixtures/build_fixtures.py ({stale})"
    assert built == builder.build()


def test_generated_pdfs_have_exact_xref_tables() -> None:
    for path in sorted(FIXTURES.glob("*/*.pdf")):
        data = path.read_bytes()
        if b"startxref" not in data:
            continue  # the deliberately corrupt one
        xref_at = int(data.rsplit(b"startxref", 1)[1].split()[0])
        assert data[xref_at:].startswith(b"xref\n"), path.name
        lines = data[xref_at:].split(b"\n")
        count = int(lines[1].split()[1])
        entries = lines[2 : 2 + count]
        assert entries[0] == b"0000000000 65535 f "
        for number, entry in enumerate(entries[1:], start=1):
            assert len(entry) == 19, path.name
            assert entry.endswith(b" 00000 n "), path.name
            offset = int(entry[:10])
            assert data[offset:].startswith(b"%d 0 obj" % number), (path.name, number)
