"""Extraction: golden text per fixture, the output convention, and error paths."""

from __future__ import annotations

import io
import unicodedata
import zipfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from tests.support.golden import (
    FIXTURES,
    case_files,
    check_json,
    check_text,
    error_result,
    expected_path,
)

from pipeline.errors import ContentTooLarge, CorruptContent, EmptyContent, PipelineError
from pipeline.processing.extract import Extracted, PageSpan, extract
from pipeline.processing.extract.html import html_blocks
from pipeline.processing.extract.normalize import clean_block, clean_preformatted
from pipeline.processing.limits import DocxLimits, ExtractLimits
from pipeline.processing.sniff import sniff

EXTRACT_CASES = case_files("extract")


def _run(case: Path) -> Extracted:
    data = case.read_bytes()
    sniffed = sniff(data)
    return extract(data, sniffed.kind, sniffed.encoding)


@pytest.mark.parametrize("case", EXTRACT_CASES, ids=lambda p: p.name)
def test_extract_fixture(case: Path) -> None:
    """Text goes to ``<case>.expected.txt``; kind/encoding/pages or the error to JSON."""
    data = case.read_bytes()
    sniffed = sniff(data)
    try:
        result = extract(data, sniffed.kind, sniffed.encoding)
    except PipelineError as exc:
        check_json(expected_path(case, ".json"), error_result(exc))
        assert not expected_path(case, ".txt").exists()
        return
    check_text(expected_path(case, ".txt"), result.text)
    check_json(
        expected_path(case, ".json"),
        {"kind": sniffed.kind, "encoding": sniffed.encoding, "pages": result.pages},
    )


@pytest.mark.parametrize("case", EXTRACT_CASES, ids=lambda p: p.name)
def test_output_convention(case: Path) -> None:
    try:
        text = _run(case).text
    except PipelineError:
        return
    if not text:
        assert case.suffix == ".pdf"  # a PDF without a text layer, for OCR to read
        return
    assert text == text.strip()
    assert text == unicodedata.normalize("NFC", text)
    assert "\n\n\n" not in text
    for block in text.split("\n\n"):
        assert block == block.strip()
        assert "  " not in block or "\n" in block  # only code blocks keep indentation
        for line in block.split("\n"):
            assert line == line.rstrip()
            assert line


def test_multipage_pdf_page_spans() -> None:
    result = _run(FIXTURES / "extract" / "pdf_multipage.pdf")
    assert [page.number for page in result.pages] == [1, 2, 3]
    pages = [result.text[page.start : page.end] for page in result.pages]
    assert pages[0].startswith("Annual Field Notes")
    assert pages[1] == (
        "Page two covers the methods. Each site was visited twice (morning and evening)."
    )
    assert pages[2].endswith("Caf\u00e9 owners reported 42 sightings.")
    assert "\n\n".join(pages) == result.text


def test_pdf_extraction_is_safe_from_threads() -> None:
    data = (FIXTURES / "extract" / "pdf_multipage.pdf").read_bytes()
    expected = extract(data, "pdf", None)
    with ThreadPoolExecutor(max_workers=8) as pool:
        results = list(pool.map(lambda _: extract(data, "pdf", None), range(32)))
    assert all(result == expected for result in results)


def test_pdf_garbage_after_header_is_corrupt() -> None:
    with pytest.raises(CorruptContent, match="PDF is corrupt or unreadable"):
        extract(b"%PDF-1.7\n" + b"\x00garbage" * 50, "pdf", None)


def test_blank_pdf_page_has_an_empty_span(monkeypatch: pytest.MonkeyPatch) -> None:
    from pipeline.processing.extract import pdf as pdf_module

    pages = ["", "First.", "", "Second."]
    monkeypatch.setattr(pdf_module, "_read_pages", lambda _data, _max_pages: pages)
    result = pdf_module.extract_pdf(b"", 10)
    assert result.text == "First.\n\nSecond."
    assert result.pages == [
        PageSpan(number=1, start=0, end=0),
        PageSpan(number=2, start=0, end=6),
        PageSpan(number=3, start=6, end=6),
        PageSpan(number=4, start=8, end=15),
    ]


def _docx_with(document_xml: bytes) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr("[Content_Types].xml", "<Types/>")
        archive.writestr("word/document.xml", document_xml)
    return buffer.getvalue()


def test_docx_decompressed_size_is_capped() -> None:
    data = (FIXTURES / "extract" / "docx_report.docx").read_bytes()
    limits = ExtractLimits(docx=DocxLimits(max_part_bytes=1000))
    with pytest.raises(ContentTooLarge, match="expands to more than 1000 bytes"):
        extract(data, "docx", None, limits)


def test_docx_zip_bomb_is_refused_before_parsing() -> None:
    bomb = _docx_with(b"<w:document>" + b" " * 200_000 + b"</w:document>")
    limits = ExtractLimits(docx=DocxLimits(max_expanded_bytes=100_000))
    with pytest.raises(ContentTooLarge, match="zip bomb"):
        extract(bomb, "docx", None, limits)


@pytest.mark.parametrize(
    "data",
    [
        b"PK\x03\x04 not really a zip",
        (FIXTURES / "validate" / "zip_not_docx.zip").read_bytes(),
        _docx_with(b"<root>not a document</root>"),
    ],
)
def test_unreadable_docx_is_corrupt(data: bytes) -> None:
    with pytest.raises(CorruptContent, match="DOCX"):
        extract(data, "docx", None)


def test_docx_never_expands_entities() -> None:
    xml = (
        b'<?xml version="1.0"?><!DOCTYPE d [<!ENTITY x "EXPANDED">]>'
        b'<w:document xmlns:w="http://schemas.openxmlformats.org/wordprocessingml/2006/main">'
        b"<w:body><w:p><w:r><w:t>a&x;b</w:t></w:r></w:p></w:body></w:document>"
    )
    assert "EXPANDED" not in extract(_docx_with(xml), "docx", None).text


def test_html_deep_but_sane_nesting_is_read() -> None:
    markup = "<font>" * 1000 + "deep" + "<p>after</p>"  # unclosed tags pile up
    assert html_blocks(markup) == ["deep", "after"]


def test_html_hostile_nesting_is_refused_not_truncated() -> None:
    markup = "<div>" * 5000 + "deep" + "</div>" * 5000 + "<p>after</p>"
    with pytest.raises(CorruptContent, match="nests elements too deeply"):
        extract(markup.encode(), "html", "utf-8")


def test_html_does_not_fetch_external_entities() -> None:
    markup = '<!DOCTYPE html SYSTEM "http://example.invalid/x.dtd"><p>ok &amp; fine</p>'
    assert html_blocks(markup) == ["ok & fine"]


def test_empty_markdown_is_empty_content() -> None:
    with pytest.raises(EmptyContent, match="Markdown"):
        extract(b"---\n\n<!-- only a comment -->\n", "markdown", "utf-8")


def test_text_without_encoding_is_detected() -> None:
    assert extract(b"caf\xe9", "text", None).text == "caf\u00e9"


def test_clean_block_and_preformatted() -> None:
    assert clean_block(" a\u00a0\u00a0b\u200b\u00adc\r\n d\x07 ") == "a bc d"
    assert clean_block("e\u0301") == "\u00e9"
    assert clean_preformatted("\n\n    if x:\n\t\ty()\n\n\n    z  \n") == "if x:\n    y()\nz"
