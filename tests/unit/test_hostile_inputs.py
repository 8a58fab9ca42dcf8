"""Hostile input: every limit on the pure functions and in the sandbox, one by one.

Each test feeds one generated hostile document (see ``tests/support/hostile.py``) to the code
that must stop it, and checks the outcome: a permanent error with a reason a person
can act on, or a bounded result. The quadratic-walk regressions have no timed
assertion: at these sizes the old code needed many minutes, so it would fail on the
suite's timeout, while the linear code needs well under a second.
"""

from __future__ import annotations

import io
import zipfile

import pytest
from tests.support import hostile
from tests.support.sandbox_targets import recurse

from pipeline.engine.failures import classify
from pipeline.engine.sandbox import (
    ParserCrashed,
    ParserMemoryExceeded,
    ParserTimeout,
    ParserTooDeep,
    Sandbox,
    SandboxLimits,
)
from pipeline.errors import (
    TOO_DEEP_REASON,
    ArchiveTooLarge,
    CorruptContent,
    PermanentError,
    StageError,
    TextTooLong,
    TooManyPages,
)
from pipeline.processing.chunk import ChunkPolicy, chunk
from pipeline.processing.extract import extract
from pipeline.processing.extract.docx import read_capped
from pipeline.processing.extract.html import html_blocks
from pipeline.processing.limits import DocxLimits, ExtractLimits
from pipeline.processing.tokens import MAX_TOKEN_CHARS, count_tokens
from pipeline.processing.validate import ValidationPolicy, validate
from pipeline.settings import Settings, SettingsError
from pipeline.stages.builtin import CHUNK, EXTRACT
from pipeline.stages.extract import extract_limits

MIB = hostile.MIB
SANDBOX = Sandbox(SandboxLimits(seconds=30, memory_mb=1024))

# ---------------------------------------------------------------------------- DOCX


def test_docx_zip_bomb_is_refused_from_its_directory() -> None:
    bomb = hostile.docx_bomb(101 * MIB)  # about 100 KB on the wire
    assert len(bomb) < MIB
    with pytest.raises(ArchiveTooLarge) as caught:
        extract(bomb, "docx", None)
    assert caught.value.reason == (
        "DOCX expands to more than 100 MiB when decompressed (zip bomb?); split the document"
    )


def test_docx_part_over_the_part_limit() -> None:
    limits = ExtractLimits(docx=DocxLimits(max_part_bytes=2 * MIB, max_ratio=10_000))
    with pytest.raises(ArchiveTooLarge) as caught:
        extract(hostile.docx_bomb(3 * MIB), "docx", None, limits)
    assert caught.value.reason == (
        "DOCX part 'word/document.xml' expands to more than 2 MiB when decompressed "
        "(zip bomb?); split the document"
    )


def test_docx_compression_ratio() -> None:
    with pytest.raises(ArchiveTooLarge) as caught:
        extract(hostile.docx_bomb(2 * MIB), "docx", None)
    assert caught.value.reason == (
        "DOCX part 'word/document.xml' is compressed more than 100:1 (zip bomb?); "
        "re-save it from a word processor"
    )


def test_small_part_is_never_refused_for_its_ratio() -> None:
    # Compressed about a thousandfold too, but under the 1 MiB grace: harmless.
    assert extract(hostile.docx_bomb(500_000), "docx", None).text == "Quarterly report"


def test_docx_with_too_many_parts() -> None:
    limits = ExtractLimits(docx=DocxLimits(max_parts=20))
    with pytest.raises(ArchiveTooLarge, match=r"^DOCX has 32 parts, more than the limit of 20;"):
        extract(hostile.docx_with_parts(30), "docx", None, limits)
    assert extract(hostile.docx_with_parts(18), "docx", None, limits).text == "Quarterly report"


def test_docx_directory_that_lies_small_is_never_inflated_past_its_claim() -> None:
    lying = hostile.lie_about_size(hostile.docx_bomb(3 * MIB), "word/document.xml", 1000)
    with pytest.raises(CorruptContent, match="Bad CRC-32"):
        extract(lying, "docx", None)


def test_docx_directory_that_lies_large_is_refused_unread() -> None:
    lying = hostile.lie_about_size(hostile.docx_bomb(100_000), "word/document.xml", 3 << 30)
    with pytest.raises(ArchiveTooLarge, match="expands to more than 100 MiB"):
        extract(lying, "docx", None)


def test_part_is_decompressed_against_a_running_budget() -> None:
    """Whatever the directory claimed, reading stops once the real bytes pass a limit."""
    info = zipfile.ZipInfo("word/document.xml")
    info.file_size, info.compress_size = MIB, MIB  # the claim: 1 MiB, not compressed
    limits = DocxLimits(max_part_bytes=2 * MIB)
    with pytest.raises(ArchiveTooLarge, match="expands to more than 2 MiB"):
        read_capped(io.BytesIO(b" " * (5 * MIB)), info, limits)
    info.compress_size = 10_000  # the claim: 1 MiB from 10 KB, ratio about 100
    with pytest.raises(ArchiveTooLarge, match="compressed more than 100:1"):
        read_capped(io.BytesIO(b" " * (5 * MIB)), info, DocxLimits())
    assert read_capped(io.BytesIO(b"<w:document/>"), info, limits) == b"<w:document/>"


def test_docx_nested_too_deep_is_corrupt_and_never_recurses_far() -> None:
    with pytest.raises(CorruptContent) as caught:
        extract(hostile.docx_nested(300), "docx", None)
    assert caught.value.reason == (
        "DOCX nests elements too deeply to be read (over 256 levels); "
        "re-save it from a word processor"
    )
    # Just under libxml2's limit, the recursive walk is still far from Python's.
    assert extract(hostile.docx_nested(120), "docx", None).text == "Quarterly report"


# ----------------------------------------------------------------------------- PDF


def test_pdf_over_the_page_limit_is_refused_before_reading_a_page() -> None:
    with pytest.raises(TooManyPages) as caught:
        extract(hostile.pdf_pages(2001), "pdf", None)
    assert caught.value.reason == (
        "PDF has 2001 pages, more than the limit of 2000; split it into smaller files"
    )
    at_limit = extract(hostile.pdf_pages(20), "pdf", None, ExtractLimits(max_pdf_pages=20))
    assert len(at_limit.pages) == 20


def test_pdf_with_deeply_nested_objects_is_read() -> None:
    # PDFium stops parsing objects 64 levels down: 100,000 levels cost it nothing.
    result = SANDBOX.run(extract, hostile.pdf_nested_arrays(100_000), "pdf", None)
    assert result.text == "Nested"


def test_pdf_with_a_deep_page_tree_is_corrupt() -> None:
    with pytest.raises(CorruptContent, match=r"^PDF is corrupt or unreadable \(PDFium"):
        SANDBOX.run(extract, hostile.pdf_deep_page_tree(5000), "pdf", None)


def test_pdf_inflate_bomb_is_stopped_by_the_memory_cap() -> None:
    box = Sandbox(SandboxLimits(seconds=30, memory_mb=256))
    with pytest.raises((ParserCrashed, ParserMemoryExceeded)) as caught:
        box.run(extract, hostile.pdf_inflate_bomb(300), "pdf", None)
    assert isinstance(caught.value, PermanentError)
    assert "256 MiB memory cap" in caught.value.reason or (
        caught.value.reason == "parsing needs more than 256 MiB of memory"
    )


def test_pdf_drawing_a_form_a_million_times_is_stopped_by_a_limit() -> None:
    """A 4 KB file asking for 100**3 texts: memory cap or hard time limit, whichever
    comes first on this machine; both are clear, and the caller carries on."""
    box = Sandbox(SandboxLimits(seconds=1, memory_mb=1024))
    with pytest.raises((ParserCrashed, ParserTimeout)) as caught:
        box.run(extract, hostile.pdf_form_fanout(3, 100), "pdf", None)
    assert caught.value.reason in (
        "the parser crashed (signal 6, SIGABRT) on this file; "
        "it probably ran out of its 1024 MiB memory cap",
        "parsing did not finish within 1 s (hard limit); the parser was stopped",
    )
    assert SANDBOX.run(extract, hostile.pdf_pages(2), "pdf", None).text == "Page\n\nPage"


# ---------------------------------------------------------------------------- HTML


def test_html_nested_a_million_levels_deep_is_refused_in_the_sandbox() -> None:
    with pytest.raises(CorruptContent) as caught:
        SANDBOX.run(extract, hostile.html_nested(1_000_000), "html", "utf-8")
    assert caught.value.reason == (
        "HTML nests elements too deeply to be read (over 2048 levels); "
        "fix the markup and upload it again"
    )


def test_html_many_main_elements_are_found_in_one_pass() -> None:
    markup = "<p>chrome</p>" + "<main><p>m</p></main>" * 200_000
    assert html_blocks(markup) == ["m"] * 200_000


def test_html_headers_deep_in_the_tree_are_judged_in_one_pass() -> None:
    # Each <header> sits 2,000 levels down: asking each one for its ancestors is
    # over a billion steps.
    markup = "<div>" * 2000 + "<header>banner</header>" * 600_000 + "<p>body</p>"
    assert html_blocks(markup) == ["body"]
    inside_article = "<article>" + "<header>byline</header>" * 3 + "</article>"
    assert html_blocks(inside_article) == ["byline"] * 3


def test_html_text_after_a_run_of_removed_elements_is_joined_once() -> None:
    # Appending each tail to the text before it copies that text every time: a
    # million removed siblings cost about 5 * 10**11 bytes copied.
    markup = "<p>a" + "<script>s</script>x" * 1_000_000 + "</p><p>b<nav>n</nav>c</p>"
    assert html_blocks(markup) == ["a" + "x" * 1_000_000, "bc"]


# ---------------------------------------------------------------------------- text


def test_one_line_of_50_mb_is_refused_before_it_is_cleaned() -> None:
    data = hostile.one_line_text(50 * MIB)
    validation = validate(data, ValidationPolicy(max_bytes=64 * MIB))
    assert validation.kind == "text"
    with pytest.raises(TextTooLong) as caught:
        extract(data, validation.kind, validation.encoding)
    assert caught.value.reason == (
        "the document's text is 52,428,800 characters long, more than the limit of "
        "10,000,000; split it into smaller documents"
    )


def test_text_limit_applies_to_what_every_kind_yields() -> None:
    limits = ExtractLimits(max_text_chars=100)
    markup = b"<html><body>" + b"<p>word</p>" * 30 + b"</body></html>"
    with pytest.raises(TextTooLong, match=r"^the document's text is 178 characters long"):
        extract(markup, "html", "utf-8", limits)
    assert extract(b"x" * 100, "text", "utf-8", limits).text == "x" * 100


def test_long_line_under_the_limit_is_chunked_into_bounded_windows() -> None:
    text = extract(hostile.one_line_text(2 * MIB), "text", "utf-8").text
    policy = ChunkPolicy()
    chunks = chunk(text, policy)
    assert len(chunks) > 1000
    assert all(piece.token_count <= policy.target_tokens for piece in chunks)
    assert all(piece.token_count == count_tokens(piece.text) for piece in chunks)
    assert chunks[0].start == 0
    assert chunks[-1].end == len(text)


def test_line_without_any_space_is_cut_into_tokens_and_windows() -> None:
    text = "a" * 1_000_000
    chunks = chunk(text, ChunkPolicy())
    assert len(chunks) == -(-len(text) // (MAX_TOKEN_CHARS * 200))
    assert max(len(piece.text) for piece in chunks) <= MAX_TOKEN_CHARS * 200
    assert "".join(piece.text for piece in chunks) == text  # no overlap: no sentences


# --------------------------------------------------------- sandbox, classification


def test_recursion_in_the_sandbox_is_a_permanent_refusal() -> None:
    with pytest.raises(ParserTooDeep) as caught:
        SANDBOX.run(recurse, 0)
    assert isinstance(caught.value, CorruptContent)
    assert caught.value.reason == TOO_DEEP_REASON


@pytest.mark.parametrize(
    "error",
    [
        ArchiveTooLarge("DOCX expands to more than 100 MiB when decompressed (zip bomb?)"),
        TooManyPages("PDF has 2001 pages, more than the limit of 2000"),
        TextTooLong("the document's text is 52,428,800 characters long"),
        ParserCrashed("the parser crashed (signal 11, SIGSEGV) on this file"),
        ParserMemoryExceeded("parsing needs more than 256 MiB of memory"),
        ParserTooDeep(TOO_DEEP_REASON),
    ],
    ids=lambda error: type(error).__name__,
)
def test_every_refusal_is_permanent(error: StageError) -> None:
    failure = classify(error, EXTRACT.policy)
    assert failure.transient is False
    assert failure.reason == error.reason
    assert failure.error_type == type(error).__name__


def test_recursion_error_outside_the_sandbox_is_permanent_too() -> None:
    error = RecursionError("maximum recursion depth exceeded")
    failure = classify(error, CHUNK.policy)
    assert failure.transient is False
    assert failure.reason == TOO_DEEP_REASON


# ------------------------------------------------------------------------ settings


def test_limits_come_from_settings() -> None:
    settings = Settings.from_env(
        {
            "PIPELINE_MAX_TEXT_CHARS": "5000",
            "PIPELINE_MAX_PDF_PAGES": "10",
            "PIPELINE_DOCX_MAX_EXPANDED_MB": "20",
            "PIPELINE_DOCX_MAX_PART_MB": "8",
            "PIPELINE_DOCX_MAX_PARTS": "50",
            "PIPELINE_DOCX_MAX_RATIO": "40",
        }
    )
    assert extract_limits(settings) == ExtractLimits(
        max_text_chars=5000,
        max_pdf_pages=10,
        docx=DocxLimits(
            max_expanded_bytes=20 * MIB, max_part_bytes=8 * MIB, max_parts=50, max_ratio=40
        ),
    )
    assert extract_limits(Settings.from_env({})) == ExtractLimits()


@pytest.mark.parametrize(
    ("name", "value", "message"),
    [
        ("PIPELINE_MAX_TEXT_CHARS", "0", "at least 1"),
        ("PIPELINE_MAX_PDF_PAGES", "many", "whole number"),
        ("PIPELINE_DOCX_MAX_EXPANDED_MB", "-5", "at least 1"),
        ("PIPELINE_DOCX_MAX_PART_MB", "0", "at least 1"),
        ("PIPELINE_DOCX_MAX_PARTS", "0", "at least 1"),
        ("PIPELINE_DOCX_MAX_RATIO", "1", "at least 2"),
    ],
)
def test_bad_limits_are_refused_with_the_variable_named(
    name: str, value: str, message: str
) -> None:
    with pytest.raises(SettingsError, match=message) as raised:
        Settings.from_env({name: value})
    assert name in str(raised.value)
