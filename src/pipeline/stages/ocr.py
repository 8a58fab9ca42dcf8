"""ocr: the text of scanned PDF pages and of images, recognised by Tesseract.

Between extract and chunk; it reads the text extract wrote and revises it. A document
whose text has no empty or nearly empty page and that is not an image passes through
untouched (the same value, so nothing is rewritten); ``build_skip`` tells the engine
so ahead of time, which then skips the stage at extract's completion. Otherwise each
page to read (a PDF page without a text layer, or with only a stamp on it (fewer than
``PIPELINE_OCR_SPARSE_PAGE_CHARS`` characters), an image, each page of a multi-page
TIFF) is rendered and recognised in its own sandboxed call: a page that hangs is
killed at the sandbox's hard limit (``PIPELINE_PARSER_TIME_LIMIT_S``) while the stage's
own time limit, far longer, bounds the whole document; the page limit
(``PIPELINE_OCR_MAX_PAGES``) refuses documents that could never finish within it.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Final, TypeVar

from pipeline.errors import EmptyContent, TooManyPages
from pipeline.processing.extract import check_text_length
from pipeline.processing.extract.result import Extracted, join_pages
from pipeline.processing.images import read_image_info
from pipeline.processing.ocr import (
    OcrOptions,
    assemble,
    pages_to_render,
    recognise_image,
    recognise_pdf_page,
)
from pipeline.processing.validate import Validation
from pipeline.progress import report_progress
from pipeline.settings import Settings
from pipeline.stages.artifacts import TEXT, UPLOAD, VALIDATION
from pipeline.stages.spec import (
    Compute,
    Inputs,
    Isolation,
    Outputs,
    Skip,
    StageContext,
    StagePolicy,
    StageSpec,
)

T = TypeVar("T")

_TIMEOUT_MARGIN_S: Final = 1.0
"""Tesseract is stopped this long before the sandbox would kill its process."""


def ocr_options(settings: Settings) -> OcrOptions:
    sandbox_s = settings.limits.parser_time_limit_ms / 1000
    return OcrOptions(
        command=settings.ocr.command,
        languages=settings.ocr.languages,
        dpi=settings.ocr.dpi,
        max_pixels=settings.ocr.max_image_pixels,
        timeout_s=max(sandbox_s - _TIMEOUT_MARGIN_S, sandbox_s / 2),
    )


def build(context: StageContext) -> Compute:
    options = ocr_options(context.settings)
    max_pages = context.settings.ocr.max_pages
    sparse_chars = context.settings.ocr.sparse_page_chars
    max_chars = context.settings.limits.max_text_chars
    run = _runner(context.isolation)

    def compute(inputs: Inputs) -> Outputs:
        validation, text = inputs[VALIDATION], inputs[TEXT]
        if validation.kind == "image":
            data = inputs[UPLOAD].data
            info = read_image_info(data)
            _check_pages(info.pages, max_pages, f"the {info.name} image has {info.pages} pages")
            pages = [None] if info.pages == 1 else list(range(info.pages))
            texts = []
            for index, page in enumerate(pages):
                report_progress(index, len(pages))
                texts.append(run(recognise_image, data, page, options))
            result = join_pages(texts)
            where = f"in the {info.name} image"
        else:
            if _passes_through(validation, text, sparse_chars):
                return Outputs({TEXT: text})  # the same object: the engine stores nothing
            numbers = pages_to_render(text, sparse_chars)
            data = inputs[UPLOAD].data  # only now: a text-layer document never loads it
            if not numbers:  # a PDF without a single page
                raise EmptyContent("no text could be extracted: the PDF has no pages")
            _check_pages(
                len(numbers), max_pages, f"the PDF has {len(numbers)} pages without much text"
            )
            recognised: dict[int, str] = {}
            for index, number in enumerate(numbers):
                report_progress(index, len(numbers))
                recognised[number] = run(recognise_pdf_page, data, number, options)
            result = assemble(text, recognised)
            where = _pdf_pages(len(numbers), len(text.pages))
        report_progress(1, 1)
        check_text_length(len(result.text), max_chars)
        if not result.text:
            raise EmptyContent(
                f"no text could be found: OCR read no text {where}; if it does show text, "
                "scan it again at 300 dpi or more, upright and in focus"
            )
        return Outputs({TEXT: result})

    return compute


def _passes_through(validation: Validation, text: Extracted, sparse_chars: int) -> bool:
    """Whether OCR has nothing to do: not an image, and text on every page of the layer."""
    return (
        validation.kind != "image" and bool(text.text) and not pages_to_render(text, sparse_chars)
    )


def build_skip(context: StageContext) -> Skip:
    """The skip predicate: exactly when ``compute`` would give the text back unchanged."""
    sparse_chars = context.settings.ocr.sparse_page_chars

    def skip(inputs: Inputs) -> bool:
        return _passes_through(inputs[VALIDATION], inputs[TEXT], sparse_chars)

    return skip


def _runner(isolation: Isolation | None) -> Callable[..., Any]:
    """Calls a recognition function in the sandbox (or here, without one: unit tests)."""
    if isolation is None:
        return lambda fn, *args: fn(*args)
    return isolation.run


def _check_pages(count: int, max_pages: int, what: str) -> None:
    if count > max_pages:
        raise TooManyPages(
            f"{what} to read by OCR, more than the limit of {max_pages} "
            "(PIPELINE_OCR_MAX_PAGES); split it into smaller files"
        )


def _pdf_pages(count: int, total: int) -> str:
    if total == 1:
        return "on the PDF's one page, which has no text layer"
    return f"on the PDF's {count} pages, which have no text layer"


def summarize(outputs: Outputs) -> dict[str, Any]:
    result = outputs[TEXT]
    return {"characters": len(result.text), "pages": len(result.pages)}


SPEC = StageSpec(
    name="ocr",
    reads=(UPLOAD, VALIDATION, TEXT),
    writes=(TEXT,),
    # About a second or two per page: 100 pages fit well within five minutes.
    policy=StagePolicy(max_retries=3, time_limit_ms=300_000),
    build=build,
    summarize=summarize,
    description="text of scanned PDF pages and images, by Tesseract OCR (sandboxed, per page)",
    # A document with a text layer on every page skips OCR: no hop, no message, no claim.
    skip=build_skip,
)
