"""PDF extraction quality: damaged files repaired, RTL in logical order, unmapped glyphs dropped.

The fixtures are tests/fixtures/quality/pdf (built by tests/fixtures/builders/pdf.py);
each must come out as its reference text, word for word.
"""

from __future__ import annotations

import importlib.util
import re
from pathlib import Path

import pypdfium2 as pdfium
import pytest
from tests.support import hostile
from tests.support.golden import FIXTURES, case_files, expected_path

from pipeline.engine.sandbox import Sandbox, SandboxLimits
from pipeline.errors import CorruptContent, EncryptedContent, TooManyPages
from pipeline.processing.extract import extract
from pipeline.processing.extract.pdf_glyphs import SUSPECT, PageChar, page_text, reorder
from pipeline.processing.extract.pdf_repair import repair
from pipeline.processing.limits import ExtractLimits

QUALITY = FIXTURES / "quality" / "pdf"


def _own_cases() -> list[Path]:
    """The cases builders/pdf.py writes (others' PDFs are held to the quality bar only)."""
    path = FIXTURES / "builders" / "pdf.py"
    spec = importlib.util.spec_from_file_location("fixture_builder_pdf", path)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    built = {Path(name).name for name in module.build()}
    return [case for case in case_files("quality/pdf") if case.name in built]


CASES = _own_cases()
REFUSED_BY_PDFIUM = [
    "damaged_root_is_page_tree",
    "damaged_truncated_trailer",
    "damaged_wrong_root",
]


def _words(text: str) -> list[str]:
    return text.split()


def _extract(name: str) -> str:
    return extract((QUALITY / f"{name}.pdf").read_bytes(), "pdf", None).text


@pytest.mark.parametrize("case", CASES, ids=lambda path: path.name)
def test_fixture_reads_as_its_reference_text(case: Path) -> None:
    text = extract(case.read_bytes(), "pdf", None).text
    assert _words(text) == _words(expected_path(case, ".txt").read_text("utf-8"))
    assert not SUSPECT.search(text)


# ------------------------------------------------------------------ repair


@pytest.mark.parametrize("name", REFUSED_BY_PDFIUM)
def test_pdfium_alone_refuses_the_damaged_files(name: str) -> None:
    with pytest.raises(pdfium.PdfiumError):
        pdfium.PdfDocument((QUALITY / f"{name}.pdf").read_bytes())


def test_repaired_file_keeps_its_pages() -> None:
    intact = extract((QUALITY / "survey_report.pdf").read_bytes(), "pdf", None)
    repaired = extract((QUALITY / "damaged_wrong_root.pdf").read_bytes(), "pdf", None)
    assert repaired == intact
    assert len(repaired.pages) == 4


def test_repair_runs_in_the_sandbox() -> None:
    data = (QUALITY / "damaged_truncated_trailer.pdf").read_bytes()
    result = Sandbox(SandboxLimits(seconds=30, memory_mb=1024)).run(extract, data, "pdf", None)
    assert result.text.startswith("Notice to Tenants of Harbour Court")


def test_repaired_file_is_held_to_the_page_limit() -> None:
    data = (QUALITY / "damaged_wrong_root.pdf").read_bytes()
    with pytest.raises(TooManyPages, match="PDF has 4 pages, more than the limit of 3"):
        extract(data, "pdf", None, ExtractLimits(max_pdf_pages=3))


def test_damaged_encrypted_file_is_still_reported_as_encrypted() -> None:
    encrypted = (FIXTURES / "extract" / "pdf_encrypted.pdf").read_bytes()
    damaged = encrypted.replace(b"/Root 1 0 R", b"/Root 2 0 R")
    with pytest.raises(pdfium.PdfiumError):
        pdfium.PdfDocument(damaged)
    with pytest.raises(EncryptedContent, match="PDF is encrypted"):
        extract(damaged, "pdf", None)


def test_truly_corrupt_file_keeps_pdfiums_reason() -> None:
    data = (QUALITY / "damaged_wrong_root.pdf").read_bytes()
    gutted = re.sub(rb"\d+ 0 obj", b"x 0 obj", data)
    with pytest.raises(CorruptContent) as caught:
        extract(gutted, "pdf", None)
    assert caught.value.reason == (
        "PDF is corrupt or unreadable (PDFium: not a valid PDF structure); "
        "re-export it and upload it again"
    )
    assert repair(gutted, 100) is None


# ----------------------------------------------------------------------- RTL


def test_ligature_glyph_keeps_its_letters_in_order() -> None:
    # A lam-alef glyph used to come out as alef-lam ("والطالب").
    assert "والطلاب" in _extract("arabic_visual_order")
    assert "والطلاب" in _extract("arabic_logical_order")


def _line(text: str, *, rightwards: bool, start: float = 100.0) -> list[PageChar]:
    step = 6.0 if rightwards else -6.0
    return [PageChar(ch, start + i * step, 700.0) for i, ch in enumerate(text)]


def test_logical_rtl_line_is_not_reordered() -> None:
    # PDFium delivered logical order: each letter left of the one before it.
    chars = _line("שלום עולם", rightwards=False, start=500.0)
    assert page_text(chars) == "שלום עולם"


def test_visual_rtl_line_is_reordered() -> None:
    visual = "םלוע םולש"  # what the page shows from left to right
    assert page_text(_line(visual, rightwards=True)) == "שלום עולם"


def test_glyph_with_several_letters_is_restored() -> None:
    # "لا" drawn as one glyph: PDFium gives its two letters reversed, at one origin.
    chars = [
        PageChar("م", 500.0, 700.0),
        PageChar("\u0627", 494.0, 700.0),  # alef
        PageChar("ل", 494.0, 700.0),
        PageChar("س", 488.0, 700.0),
    ]
    assert page_text(chars) == "ملاس"


def test_reorder_keeps_numbers_and_latin_left_to_right() -> None:
    # The paragraph direction is that of the majority of the line's letters: here RTL.
    visual = list("2024 םע WhatsApp תצובקב ושמתשה")
    assert "".join(reorder(visual)) == "השתמשו בקבוצת WhatsApp עם 2024"


def test_latin_line_is_left_alone() -> None:
    assert page_text(_line("plain text", rightwards=True)) == "plain text"


# ------------------------------------------------------------ unmapped glyphs


def test_unmapped_and_private_use_glyphs_are_dropped() -> None:
    chars = [
        PageChar("\uf0b7", 72.0, 700.0),
        PageChar(" ", 78.0, 700.0),
        PageChar("A", 84.0, 700.0, unmapped=True),
        PageChar("o", 90.0, 700.0),
        PageChar("\ufffd", 96.0, 700.0),
        PageChar("k", 102.0, 700.0),
    ]
    assert page_text(chars) == " ok"


def test_unmapped_fixture_used_to_leak_raw_codes() -> None:
    text = _extract("unmapped_glyphs")
    assert text.startswith("Greenhouse Care Guide A small greenhouse")
    assert "\uf0b7" not in text
    assert "\u0f02" not in text  # the swash glyph's raw code


def _two_font_page(content: bytes, font: bytes) -> bytes:
    return hostile.pdf(
        [
            b"<< /Type /Catalog /Pages 2 0 R >>",
            b"<< /Type /Pages /Kids [3 0 R] /Count 1 >>",
            b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] /Contents 4 0 R "
            b"/Resources << /Font << /F1 5 0 R /F2 6 0 R >> >> >>",
            b"<< /Length %d >>\nstream\n" % len(content) + content + b"\nendstream",
            b"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica >>",
            font,
        ]
    )


def test_a_font_without_any_mapping_is_found_by_sampling() -> None:
    # Printable raw codes (A-Z) raise no suspicion in the text; PDFium's flags do.
    font = (
        b"<< /Type /Font /Subtype /Type1 /BaseFont /ABCDEF+Custom /Encoding << /Type /Encoding "
        b"/Differences [65 " + b" ".join(b"/g%d" % n for n in range(26)) + b"] >> >>"
    )
    garbage = b"(" + b"QXZTRWPLMN " * 20 + b") Tj"
    readable = b"BT /F1 11 Tf 72 700 Td (Readable words stay.) Tj ET "
    unmapped = b"BT /F2 11 Tf 72 680 Td " + garbage + b" ET"
    assert extract(_two_font_page(readable + unmapped, font), "pdf", None).text == (
        "Readable words stay."
    )
    # Nothing readable is left: the page has no text layer, and is left to OCR.
    nothing = extract(_two_font_page(unmapped, font), "pdf", None)
    assert nothing.text == ""
    assert [(page.start, page.end) for page in nothing.pages] == [(0, 0)]
