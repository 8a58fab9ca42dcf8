"""OCR: image headers and their limits, page selection and assembly, Tesseract, the stage.

Recognition runs the real Tesseract (Debian's ``tesseract-ocr``, which ``.ci/run``
installs) on the fixtures of ``tests/fixtures/builders/ocr.py``: pages typeset and
rendered from text these tests know.
"""

from __future__ import annotations

import re
import struct
import time
import unicodedata
import zlib
from collections import Counter
from pathlib import Path

import pytest
from tests.support.golden import FIXTURES

from pipeline.errors import (
    ContentTooLarge,
    CorruptContent,
    EmptyContent,
    TooManyPages,
    TransientError,
    UnsupportedContent,
)
from pipeline.faults import Faults
from pipeline.processing.extract import Extracted, PageSpan, extract
from pipeline.processing.extract.result import join_pages
from pipeline.processing.images import check_pixels, read_image_info
from pipeline.processing.ocr import (
    OcrOptions,
    OcrUnavailable,
    assemble,
    pages_to_render,
    recognise_image,
    render_page,
    render_scale,
    run_tesseract,
)
from pipeline.processing.validate import ValidationPolicy, validate
from pipeline.settings import Settings, SettingsError
from pipeline.stages import Outputs, Pipeline, StageContext
from pipeline.stages.artifacts import TEXT, Upload
from pipeline.stages.builtin import CHUNK, EXTRACT, PIPELINE, VALIDATE
from pipeline.stages.in_memory import InMemoryPipeline
from pipeline.wiring import make_sandbox

QUALITY = FIXTURES / "quality"
SCANNED = sorted(QUALITY.glob("pdf/scanned_*.pdf"))
IMAGES = sorted(p for p in QUALITY.glob("image/*") if not p.name.endswith(".expected.txt"))
SETTINGS = Settings().replace(embedding={"embedder": "hashing", "dimensions": 16})
POLICY = ValidationPolicy(max_bytes=1 << 24)


def chain(settings: Settings = SETTINGS, *, sandbox: bool = False) -> InMemoryPipeline:
    isolation = make_sandbox(settings) if sandbox else None
    context = StageContext(settings=settings, faults=Faults(), isolation=isolation)
    return InMemoryPipeline(PIPELINE, context)


def text_of(path: Path, pipeline: InMemoryPipeline | None = None) -> Extracted:
    upload = Upload(data=path.read_bytes(), filename=path.name, declared_content_type=None)
    result: Extracted = (pipeline or chain()).run(upload, until="ocr")[TEXT.name]
    return result


def reference(path: Path) -> str:
    return path.with_name(path.name.rsplit(".", 1)[0] + ".expected.txt").read_text()


def words(text: str) -> Counter[str]:
    return Counter(re.findall(r"\w+", unicodedata.normalize("NFKC", text).lower()))


# --------------------------------------------------------- image headers, limits


def png_header(width: int, height: int) -> bytes:
    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    crc = struct.pack(">I", zlib.crc32(b"IHDR" + header))
    return b"\x89PNG\r\n\x1a\n" + struct.pack(">I", 13) + b"IHDR" + header + crc


def jpeg_header(width: int, height: int) -> bytes:
    app0 = b"\xff\xe0" + struct.pack(">H", 16) + b"JFIF\x00\x01\x01\x00\x00\x01\x00\x01\x00\x00"
    sof = b"\xff\xc0" + struct.pack(">HBHHB", 11, 8, height, width, 1) + b"\x01\x11\x00"
    return b"\xff\xd8" + app0 + sof + b"\xff\xda" + bytes(20)


def tiff(sizes: list[tuple[int, int]], *, loop: bool = False) -> bytes:
    """A little-endian TIFF of directories only (width and height as LONGs)."""
    out = bytearray(b"II*\x00" + struct.pack("<I", 8))
    for index, (width, height) in enumerate(sizes):
        start = len(out)
        following = start + 2 + 2 * 12 + 4
        last = index == len(sizes) - 1
        out += struct.pack("<H", 2)
        out += struct.pack("<HHII", 256, 4, 1, width) + struct.pack("<HHII", 257, 4, 1, height)
        out += struct.pack("<I", 8 if loop and last else 0 if last else following)
    return bytes(out)


def test_headers_of_the_fixture_images() -> None:
    info = {path.suffix: read_image_info(path.read_bytes()) for path in IMAGES}
    assert (info[".png"].format, info[".png"].pages) == ("png", 1)
    assert (info[".jpg"].format, info[".jpg"].pages) == ("jpeg", 1)
    assert (info[".tiff"].format, info[".tiff"].pages) == ("tiff", 2)
    assert info[".tiff"].sizes == [(1700, 2200), (1700, 2200)]  # US Letter at 200 dpi


@pytest.mark.parametrize(
    ("data", "kind", "mime"),
    [
        (png_header(800, 600) + bytes(16), "image", "image/png"),
        (jpeg_header(800, 600), "image", "image/jpeg"),
        (tiff([(800, 600)]), "image", "image/tiff"),
    ],
)
def test_validate_accepts_png_jpeg_and_tiff(data: bytes, kind: str, mime: str) -> None:
    result = validate(data, POLICY)
    assert (result.kind, result.mime, result.encoding) == (kind, mime, None)


@pytest.mark.parametrize(
    ("data", "where"),
    [
        (png_header(100_000, 100_000), "PNG is 100000 x 100000 pixels"),
        (jpeg_header(65_000, 65_000), "JPEG is 65000 x 65000 pixels"),
        (tiff([(100, 100), (50_000, 50_000)]), "page 2 of the TIFF image is 50000 x 50000"),
    ],
)
def test_a_decompression_bomb_is_refused_from_its_header(data: bytes, where: str) -> None:
    # A few dozen bytes that declare gigapixels: refused before anything decodes them.
    assert len(data) < 200
    with pytest.raises(ContentTooLarge, match=re.escape(where)) as refused:
        validate(data, POLICY)
    assert "more than the limit of 40,000,000 pixels" in refused.value.reason


def test_the_pixel_limit_is_a_policy() -> None:
    small = ValidationPolicy(max_bytes=1 << 20, max_image_pixels=1000)
    with pytest.raises(ContentTooLarge, match="limit of 1,000 pixels"):
        validate(png_header(40, 26), small)
    assert validate(png_header(40, 25), small).kind == "image"
    check_pixels(read_image_info(png_header(40, 25)), 1000)
    with pytest.raises(ValueError, match="max_image_pixels"):
        ValidationPolicy(max_bytes=1, max_image_pixels=0)


@pytest.mark.parametrize(
    ("data", "problem"),
    [
        (b"\x89PNG\r\n\x1a\n" + bytes(100), "PNG image is damaged (it does not start with an IHDR"),
        (png_header(0, 10), "PNG image is damaged (its header declares an image without pixels"),
        (b"\xff\xd8\xff\xe0" + struct.pack(">H", 4) + b"ab\xff\xda" + bytes(8), "JPEG image is"),
        (jpeg_header(10, 0), "its height is only given after the image data"),
        (b"\xff\xd8\xff\xe0\x00\x04ab" + bytes(12), "JPEG image is damaged (no marker at byte 8"),
        (tiff([(10, 10), (10, 10)], loop=True), "its page directories loop or never end"),
        (b"II*\x00" + struct.pack("<I", 4096), "past the end"),
        (b"MM\x00*\x00\x00\x00\x08\x00\x01" + bytes(16), "a page without a width or a height"),
    ],
)
def test_damaged_image_headers_are_corrupt(data: bytes, problem: str) -> None:
    with pytest.raises(CorruptContent, match=re.escape(problem)):
        validate(data, POLICY)


@pytest.mark.parametrize(
    ("data", "what"),
    [(b"GIF89a\x01\x00\x01\x00" + bytes(20), "GIF image"), (b"RIFF\0\0\0\0WEBPVP8 ", "WebP")],
)
def test_other_image_formats_stay_unsupported(data: bytes, what: str) -> None:
    with pytest.raises(UnsupportedContent, match=f"{what}.* is not a supported document type"):
        validate(data, POLICY)


# ------------------------------------------------- which pages, and their assembly


def test_extract_leaves_the_empty_pages_for_ocr() -> None:
    mixed = extract((QUALITY / "pdf/scanned_mixed.pdf").read_bytes(), "pdf", None)
    assert pages_to_render(mixed) == [2]
    assert mixed.pages[1].start == mixed.pages[1].end
    scanned = extract((QUALITY / "pdf/scanned_letter.pdf").read_bytes(), "pdf", None)
    assert (scanned.text, pages_to_render(scanned)) == ("", [1, 2])
    assert extract(IMAGES[0].read_bytes(), "image", None) == Extracted(text="")


def test_assemble_puts_each_page_in_its_place() -> None:
    text = Extracted(
        text="One.\n\nThree.",
        pages=[
            PageSpan(1, 0, 4),
            PageSpan(2, 4, 4),
            PageSpan(3, 6, 12),
            PageSpan(4, 12, 12),
            PageSpan(5, 12, 12),
        ],
    )
    assert pages_to_render(text) == [2, 4, 5]
    result = assemble(text, {2: "Two.", 4: "", 5: "Five, at last."})
    assert result.text == "One.\n\nTwo.\n\nThree.\n\nFive, at last."
    assert [result.text[p.start : p.end] for p in result.pages] == [
        "One.",
        "Two.",
        "Three.",
        "",  # OCR found nothing here either: an empty span where the page stands
        "Five, at last.",
    ]
    assert [p.number for p in result.pages] == [1, 2, 3, 4, 5]


def test_join_pages_numbers_from_one() -> None:
    result = join_pages(["", "Page two.", "Page three."])
    assert result.text == "Page two.\n\nPage three."
    assert result.pages == [PageSpan(1, 0, 0), PageSpan(2, 0, 9), PageSpan(3, 11, 22)]
    assert join_pages([]) == Extracted(text="", pages=[])


def test_render_scale_keeps_a_page_under_the_pixel_limit() -> None:
    assert render_scale(612, 792, 300, 40_000_000) == pytest.approx(300 / 72)
    huge = render_scale(14_400, 14_400, 300, 40_000_000)  # a 200-inch poster page
    assert (14_400 * huge) ** 2 == pytest.approx(40_000_000)


def test_render_page_is_a_grey_pgm_at_the_resolution() -> None:
    image, dpi = render_page((QUALITY / "pdf/scanned_mixed.pdf").read_bytes(), 2, 150, 10**8)
    assert dpi == 150
    header = re.match(rb"P5\n(\d+) (\d+)\n255\n", image)
    assert header is not None
    width, height = int(header[1]), int(header[2])
    assert (width, round(height / 10)) == (1275, 165)  # US Letter at 150 dpi
    assert len(image) == header.end() + width * height
    _, lowered = render_page((QUALITY / "pdf/scanned_mixed.pdf").read_bytes(), 2, 300, 10**6)
    assert lowered < 300


# ---------------------------------------------------------------------- Tesseract


def test_missing_engine_names_the_install_step() -> None:
    options = OcrOptions(command="no-such-tesseract")
    with pytest.raises(OcrUnavailable) as missing:
        run_tesseract(b"P5\n1 1\n255\n\xff", options)
    assert "apt-get install tesseract-ocr" in missing.value.reason
    assert "replay the document's ocr stage" in missing.value.reason
    assert not missing.value.transient


def test_missing_language_names_its_package() -> None:
    image = IMAGES[0].read_bytes()
    with pytest.raises(OcrUnavailable, match="apt-get install tesseract-ocr-chi-sim"):
        recognise_image(image, None, OcrOptions(languages="eng+chi_sim"))


def test_only_images_reach_tesseract() -> None:
    # Tesseract reads input it does not take for an image as a list of files to open.
    with pytest.raises(CorruptContent, match="not a PNG, JPEG or TIFF"):
        recognise_image(b"/etc/passwd\n", None, OcrOptions())


def test_a_page_that_hangs_is_stopped(tmp_path: Path) -> None:
    hanging = tmp_path / "tesseract"
    hanging.write_text("#!/bin/sh\nexec sleep 60\n")
    hanging.chmod(0o755)
    started = time.monotonic()
    with pytest.raises(TransientError, match=r"did not finish within 0\.5 s"):
        run_tesseract(b"P5\n1 1\n255\n\xff", OcrOptions(command=str(hanging), timeout_s=0.5))
    assert time.monotonic() - started < 5


def test_tiff_pages_are_read_one_by_one() -> None:
    minutes = QUALITY / "image/minutes.tiff"
    first, second = (recognise_image(minutes.read_bytes(), page, OcrOptions()) for page in (0, 1))
    assert first.startswith("Minutes of the Garden Committee")
    assert second.startswith("Any Other Business")


# -------------------------------------------------------------------------- the stage


@pytest.mark.parametrize("path", [*SCANNED, *IMAGES], ids=lambda p: p.name)
def test_recognition_of_clean_pages(path: Path) -> None:
    expected, found = words(reference(path)), words(text_of(path).text)
    common = sum((expected & found).values())
    recall, precision = common / sum(expected.values()), common / sum(found.values())
    assert (recall, precision) >= (0.95, 0.95), (recall, precision)


def test_a_mixed_pdf_keeps_its_text_layer_and_fills_the_scanned_page() -> None:
    path = QUALITY / "pdf/scanned_mixed.pdf"
    before = extract(path.read_bytes(), "pdf", None)
    after = text_of(path, chain(sandbox=True))  # as the workers run it: page by page, sandboxed
    pages = [after.text[p.start : p.end] for p in after.pages]
    assert [p.number for p in after.pages] == [1, 2, 3]
    assert pages[0] == before.text[before.pages[0].start : before.pages[0].end]
    assert pages[2] == before.text[before.pages[2].start : before.pages[2].end]
    assert pages[1].startswith("Appendix A: Field Sheet\n\nThe field sheets were typed up")


def test_a_scanned_page_under_a_stamp_is_read_too() -> None:
    """A scanner's software stamps "Page 1" as real text on each scanned page: the text
    layer is not empty, but holds only the stamp. Such pages are read as well, and the
    recognised text (the stamp included, since the rendered page shows it) replaces it."""
    path = QUALITY / "pdf/scanned_stamped.pdf"
    layer = extract(path.read_bytes(), "pdf", None)
    assert [layer.text[p.start : p.end] for p in layer.pages] == ["Page 1", "Page 2"]
    as_before = text_of(path, chain(SETTINGS.replace(ocr={"sparse_page_chars": 0})))
    assert as_before.text == layer.text  # only pages without any text: the stamps alone
    read = text_of(path)
    pages = [read.text[p.start : p.end] for p in read.pages]
    assert [p.number for p in read.pages] == [1, 2]
    assert pages[0].startswith("Minutes of the Garden Committee")
    assert "Page 1" in pages[0]
    assert "Page 2" in pages[1]


def test_a_page_keeps_its_layer_when_ocr_reads_less() -> None:
    text = join_pages(["A short title", ""])
    assert pages_to_render(text, 32) == [1, 2]
    assert pages_to_render(text, 0) == [2]
    kept = assemble(text, {1: "A", 2: "Read from the scan"})
    assert [kept.text[p.start : p.end] for p in kept.pages] == [
        "A short title",
        "Read from the scan",
    ]


@pytest.mark.parametrize(
    "path",
    [FIXTURES / "extract/pdf_multipage.pdf", FIXTURES / "extract/docx_report.docx"],
    ids=lambda p: p.name,
)
def test_a_document_with_text_passes_untouched(path: Path) -> None:
    upload = Upload(data=path.read_bytes(), filename=path.name, declared_content_type=None)
    extracted = chain().run(upload, until="extract")[TEXT.name]
    artifacts = chain(SETTINGS.replace(ocr={"command": "no-such-tesseract"})).run(
        upload, until="ocr"
    )
    assert artifacts[TEXT.name] == extracted  # not even an engine is needed


SKIP_CASES = sorted(
    path
    for kind in ("pdf", "docx", "html", "markdown", "text", "image")
    for path in QUALITY.glob(f"{kind}/*")
    if not path.name.endswith(".expected.txt") and path.name != "README.md"
)


@pytest.mark.parametrize("path", SKIP_CASES, ids=lambda p: p.name)
def test_ocr_skips_exactly_the_documents_it_would_pass_through(path: Path) -> None:
    """The skip predicate the engine runs at extract's completion holds exactly when
    compute gives the text back as it came (the same object: nothing is stored)."""
    from pipeline.errors import PipelineError
    from pipeline.stages.artifacts import VALIDATION
    from pipeline.stages.ocr import SPEC as OCR
    from pipeline.stages.spec import Inputs

    context = StageContext(settings=SETTINGS, faults=Faults(), isolation=None)
    upload = Upload(data=path.read_bytes(), filename=path.name, declared_content_type=None)
    artifacts = chain().run(upload, until="extract")
    inputs = Inputs({a.name: artifacts[a.name] for a in OCR.reads})
    skip = OCR.make_skip(context)
    assert skip is not None
    skipped = skip(inputs)
    if artifacts[VALIDATION.name].kind == "image" or path.name.startswith("scanned"):
        assert not skipped
    try:
        passed_through = OCR.make(context)(inputs)[TEXT] is artifacts[TEXT.name]
    except PipelineError:
        passed_through = False
    assert skipped == passed_through


def test_the_page_limit() -> None:
    settings = SETTINGS.replace(ocr={"max_pages": 1})
    with pytest.raises(TooManyPages) as refused:
        text_of(QUALITY / "pdf/scanned_letter.pdf", chain(settings))
    assert refused.value.reason == (
        "the PDF has 2 pages without much text to read by OCR, more than the limit of 1 "
        "(PIPELINE_OCR_MAX_PAGES); split it into smaller files"
    )
    with pytest.raises(TooManyPages, match="the TIFF image has 2 pages to read by OCR"):
        text_of(QUALITY / "image/minutes.tiff", chain(settings))
    assert text_of(QUALITY / "pdf/scanned_mixed.pdf", chain(settings)).text  # one page: fine


def test_no_text_found_is_empty_content(tmp_path: Path) -> None:
    blank = tmp_path / "blank.png"
    raw = b"".join(b"\x00" + b"\xff" * 400 for _ in range(300))  # 400 x 300, all white
    chunks = [
        png_header(400, 300),
        _chunk(b"IDAT", zlib.compress(raw)),
        _chunk(b"IEND", b""),
    ]
    blank.write_bytes(b"".join(chunks))
    with pytest.raises(EmptyContent) as empty:
        text_of(blank)
    assert empty.value.reason == (
        "no text could be found: OCR read no text in the PNG image; if it does show text, "
        "scan it again at 300 dpi or more, upright and in focus"
    )


def _chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def test_a_missing_engine_fails_the_stage_until_it_is_installed() -> None:
    path = QUALITY / "image/receipt.png"
    with pytest.raises(OcrUnavailable, match="apt-get install tesseract-ocr"):
        text_of(path, chain(SETTINGS.replace(ocr={"command": "no-such-tesseract"}), sandbox=True))
    assert text_of(path, chain(sandbox=True)).text.startswith("Riverside Bakery")  # the replay


def test_without_the_ocr_stage_chunk_refuses_a_scan() -> None:
    no_ocr = Pipeline(version="no-ocr", stages=(VALIDATE, EXTRACT, CHUNK))
    context = StageContext(settings=SETTINGS, faults=Faults(), isolation=None)
    path = QUALITY / "pdf/scanned_letter.pdf"
    upload = Upload(data=path.read_bytes(), filename=path.name, declared_content_type=None)
    with pytest.raises(EmptyContent, match="this pipeline has no ocr stage before chunk"):
        InMemoryPipeline(no_ocr, context).run(upload)


def test_summary_and_settings() -> None:
    spec = PIPELINE.spec("ocr")
    assert spec.policy.time_limit_ms == 300_000
    summary = spec.summarize(Outputs({TEXT: Extracted(text="Text", pages=[PageSpan(1, 0, 4)])}))
    assert summary == {"characters": 4, "pages": 1}
    with pytest.raises(SettingsError, match="PIPELINE_OCR_LANGUAGES"):
        Settings.from_env({"PIPELINE_OCR_LANGUAGES": "eng; rm -rf /"})
    settings = Settings.from_env({"PIPELINE_OCR_LANGUAGES": "eng+deu", "PIPELINE_OCR_DPI": "200"})
    assert (settings.ocr.languages, settings.ocr.dpi) == ("eng+deu", 200)
