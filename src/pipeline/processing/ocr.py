"""Optical character recognition: the text of scanned PDF pages and of images.

The engine is Tesseract 5 (Debian's ``tesseract-ocr``, with one ``tesseract-ocr-<lang>``
package per language), called as a program: the image goes in on standard input, the
text comes back on standard output. It is the maintained open-source OCR engine that
runs offline with its models installed by the system's package manager; nothing is
downloaded at run time.

* **PDF pages** without a text layer are rendered by PDFium (pypdfium2, the library
  extraction already uses) to a grey bitmap at a fixed resolution (300 dpi), handed to
  Tesseract as a PGM image with that resolution, so it does not have to guess. A page
  so large that it would exceed the pixel limit at that resolution is rendered at a
  lower one.
* **Images** (PNG, JPEG, TIFF) go to Tesseract as they were uploaded; Tesseract reads
  them with Leptonica. Validation has already checked their magic number and their
  declared size (:mod:`pipeline.processing.images`), and that matters: Tesseract
  treats input it does not recognise as an image as a list of file names to read, so
  nothing else may ever reach it. A multi-page TIFF is read one page at a time
  (Tesseract's ``tessedit_page_number``).

Each function here that runs Tesseract is what the OCR stage runs in the sandbox, one
page per call, so a page that hangs or balloons is killed on its own. Tesseract
inherits the child's memory and CPU limits; it also gets its own timeout, shorter than
the sandbox's, so that it is stopped (and the page reported as too slow) before the
child is killed. One thread per call (``OMP_THREAD_LIMIT=1``): pages and documents
already run in parallel, and Tesseract's OpenMP threads only contend with them.
"""

from __future__ import annotations

import math
import os
import re
import shutil
import subprocess
from collections.abc import Mapping
from typing import Final

import msgspec
import pypdfium2 as pdfium

from pipeline.errors import CorruptContent, PermanentError, TransientError
from pipeline.processing.extract.normalize import clean_block, join_blocks, split_paragraphs
from pipeline.processing.extract.pdf import PDFIUM_LOCK
from pipeline.processing.extract.result import Extracted, join_pages
from pipeline.processing.images import DEFAULT_MAX_IMAGE_PIXELS, image_format

INSTALL_STEP: Final = "apt-get install tesseract-ocr"
_POINTS_PER_INCH: Final = 72
_MISSING_LANGUAGE: Final = re.compile(r"Failed loading language '([^']+)'")
_MAX_MESSAGE: Final = 200


class OcrUnavailable(PermanentError):
    """The OCR engine, or the data of a language it is asked for, is not installed.

    Permanent, as retrying on the same machine cannot help; once it is installed, a
    replay of the document's ``ocr`` stage reads it.
    """


class OcrOptions(msgspec.Struct, frozen=True, kw_only=True):
    """How pages are rendered and recognised (from the ``ocr`` settings)."""

    command: str = "tesseract"
    languages: str = "eng"
    """Tesseract's ``-l``: language codes joined by ``+`` (checked by the settings)."""
    dpi: int = 300
    max_pixels: int = DEFAULT_MAX_IMAGE_PIXELS
    """Largest bitmap a PDF page is rendered to (the resolution drops to fit)."""
    timeout_s: float = 29.0
    """Tesseract's own time limit for one page."""

    def __post_init__(self) -> None:
        if self.dpi < 1 or self.max_pixels < 1 or self.timeout_s <= 0:
            raise ValueError("dpi, max_pixels and timeout_s must be positive")


# --- which pages, and putting their text in place ---------------------------------------


def pages_to_render(text: Extracted, sparse_chars: int = 0) -> list[int]:
    """The numbers of the pages to read by OCR, in order: those without text (empty
    spans), and those whose text layer holds fewer than ``sparse_chars`` characters
    besides spaces (a scanned page under a stamped page number or Bates number)."""
    return [
        page.number
        for page in text.pages
        if page.start == page.end or _visible(text.text[page.start : page.end]) < sparse_chars
    ]


def _visible(text: str) -> int:
    return sum(not character.isspace() for character in text)


def normalise(recognised: str) -> str:
    """Tesseract's text in the extractors' convention: one block per paragraph."""
    return join_blocks(clean_block(paragraph) for paragraph in split_paragraphs(recognised))


def assemble(text: Extracted, recognised: Mapping[int, str]) -> Extracted:
    """``text`` with the recognised text of the pages read by OCR put in place.

    ``recognised`` maps a page number to its (normalised) text. A page read by OCR
    takes the recognised text when it holds more than the page's text layer (which the
    rendered page shows too: a stamp is read with the scan under it), and keeps its
    layer otherwise. Pages keep their order and their separators; every span is
    recomputed, an empty page (one OCR found nothing on either) keeping an empty span.
    """
    pages = []
    for page in text.pages:
        layer = text.text[page.start : page.end]
        read = recognised.get(page.number, "")
        pages.append(read if _visible(read) > _visible(layer) else layer)
    return join_pages(pages)


# --- recognition (each runs in the sandbox) ---------------------------------------------


def recognise_pdf_page(data: bytes, number: int, options: OcrOptions) -> str:
    """The text Tesseract reads on page ``number`` (1-based) of a PDF, rendered."""
    image, dpi = render_page(data, number, options.dpi, options.max_pixels)
    return normalise(run_tesseract(image, options, dpi=dpi))


def recognise_image(data: bytes, page: int | None, options: OcrOptions) -> str:
    """The text Tesseract reads in an image (``page``: 0-based, of a multi-page TIFF)."""
    if image_format(data) is None:  # never hand Tesseract anything else (see above)
        raise CorruptContent("the file is not a PNG, JPEG or TIFF image")
    return normalise(run_tesseract(data, options, page=page))


def render_scale(width: float, height: float, dpi: int, max_pixels: int) -> float:
    """Pixels per point to render a page of ``width`` x ``height`` points at ``dpi``,
    lowered so that the bitmap has at most ``max_pixels`` pixels."""
    scale = dpi / _POINTS_PER_INCH
    if width * height * scale * scale > max_pixels:
        scale = math.sqrt(max_pixels / (width * height))
    return scale


def render_page(data: bytes, number: int, dpi: int, max_pixels: int) -> tuple[bytes, int]:
    """Page ``number`` of a PDF as a grey PGM image, and the resolution it has."""
    with PDFIUM_LOCK:
        try:
            document = pdfium.PdfDocument(data)
        except pdfium.PdfiumError as exc:
            raise CorruptContent(f"PDF could not be opened to render page {number}") from exc
        try:
            page = document[number - 1]
            try:
                width, height = page.get_size()
                if width <= 0 or height <= 0:
                    raise CorruptContent(f"page {number} of the PDF has no area to render")
                scale = render_scale(width, height, dpi, max_pixels)
                bitmap = page.render(scale=scale, grayscale=True)
                try:
                    image = _pgm(bytes(bitmap.buffer), bitmap.width, bitmap.height, bitmap.stride)
                finally:
                    bitmap.close()
            finally:
                page.close()
        except pdfium.PdfiumError as exc:
            raise CorruptContent(f"page {number} of the PDF could not be rendered: {exc}") from exc
        finally:
            document.close()
    return image, round(scale * _POINTS_PER_INCH)


def _pgm(buffer: bytes, width: int, height: int, stride: int) -> bytes:
    """A binary PGM (P5) image from a one-byte-per-pixel bitmap with ``stride``."""
    header = b"P5\n%d %d\n255\n" % (width, height)
    if stride == width:
        return header + buffer[: width * height]
    rows = (buffer[row * stride : row * stride + width] for row in range(height))
    return header + b"".join(rows)


def run_tesseract(
    image: bytes, options: OcrOptions, *, dpi: int | None = None, page: int | None = None
) -> str:
    """What Tesseract reads in ``image`` (its raw text output).

    Raises:
        OcrUnavailable: Tesseract, or a language's data, is not installed.
        CorruptContent: Tesseract could not read the image.
        TransientError: it did not finish within ``options.timeout_s``.
    """
    program = shutil.which(options.command)
    if program is None:
        raise OcrUnavailable(missing_engine_reason(options.command))
    arguments = [program, "stdin", "stdout", "--psm", "3", "-l", options.languages]
    if dpi is not None:
        arguments += ["--dpi", str(dpi)]
    if page is not None:
        arguments += ["-c", f"tessedit_page_number={page}"]
    environment = {**os.environ, "OMP_THREAD_LIMIT": "1"}
    try:
        finished = subprocess.run(  # noqa: S603 - a fixed program, the image on stdin
            arguments,
            input=image,
            capture_output=True,
            timeout=options.timeout_s,
            env=environment,
            check=False,
        )
    except subprocess.TimeoutExpired:
        raise TransientError(
            f"OCR of one page did not finish within {options.timeout_s:g} s; it was stopped"
        ) from None
    stderr = finished.stderr.decode("utf-8", "replace")
    missing = _MISSING_LANGUAGE.search(stderr)
    if missing is not None:  # even when it went on with the other languages: say so
        raise _missing_language(missing.group(1), options)
    if finished.returncode != 0:
        raise _failure(stderr)
    return finished.stdout.decode("utf-8", "replace")


def missing_engine_reason(command: str) -> str:
    return (
        f"the OCR engine is not installed ({command!r} is not on the PATH): install it "
        f"with `{INSTALL_STEP} tesseract-ocr-eng` (the Docker image has it), then "
        "replay the document's ocr stage"
    )


def _package(language: str) -> str:
    """Debian's package suffix for a Tesseract language code (``chi_sim``: ``chi-sim``)."""
    return language.lower().replace("_", "-")


def _missing_language(language: str, options: OcrOptions) -> OcrUnavailable:
    return OcrUnavailable(
        f"the OCR engine has no data for the language {language!r} "
        f"(PIPELINE_OCR_LANGUAGES={options.languages}): install it with "
        f"`apt-get install tesseract-ocr-{_package(language)}`, then replay the "
        "document's ocr stage"
    )


def _failure(stderr: str) -> CorruptContent:
    lines = [line for line in stderr.strip().splitlines() if line.strip()]
    detail = lines[0][:_MAX_MESSAGE] if lines else "no message"
    return CorruptContent(f"the OCR engine could not read the image ({detail})")
