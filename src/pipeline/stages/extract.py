"""extract: text from the document's bytes, by the kind validate detected."""

from __future__ import annotations

from typing import Any, Final

from pipeline.faults import never_returns
from pipeline.processing.extract import extract
from pipeline.processing.kinds import DocumentKind
from pipeline.processing.limits import MIB, DocxLimits, ExtractLimits
from pipeline.settings import Settings
from pipeline.stages.artifacts import TEXT, UPLOAD, VALIDATION
from pipeline.stages.spec import Compute, Inputs, Outputs, StageContext, StagePolicy, StageSpec

SANDBOXED: Final[frozenset[DocumentKind]] = frozenset({"pdf", "docx", "html"})
"""Kinds parsed by C libraries on untrusted input: these run in the sandbox."""


def extract_limits(settings: Settings) -> ExtractLimits:
    """The hostile-input limits of extraction, from settings."""
    return ExtractLimits(
        max_text_chars=settings.limits.max_text_chars,
        max_pdf_pages=settings.limits.max_pdf_pages,
        docx=DocxLimits(
            max_expanded_bytes=settings.limits.docx_max_expanded_mb * MIB,
            max_part_bytes=settings.limits.docx_max_part_mb * MIB,
            max_parts=settings.limits.docx_max_parts,
            max_ratio=settings.limits.docx_max_ratio,
        ),
    )


def build(context: StageContext) -> Compute:
    limits = extract_limits(context.settings)
    sandbox, faults = context.isolation, context.faults

    def compute(inputs: Inputs) -> Outputs:
        upload, validation = inputs[UPLOAD], inputs[VALIDATION]
        kind = validation.kind
        if sandbox is None or kind not in SANDBOXED:
            text = extract(upload.data, kind, validation.encoding, limits)
        else:
            if faults and faults.hang_parser("extract", upload.filename):
                sandbox.run(never_returns, upload.data)
            # The limits travel with the call: they are checked in the child, so an
            # oversized result is refused there and never pickled back.
            text = sandbox.run(extract, upload.data, kind, validation.encoding, limits)
        return Outputs({TEXT: text})

    return compute


def summarize(outputs: Outputs) -> dict[str, Any]:
    result = outputs[TEXT]
    return {"characters": len(result.text), "pages": len(result.pages)}


SPEC = StageSpec(
    name="extract",
    reads=(UPLOAD, VALIDATION),
    writes=(TEXT,),
    # Parsing untrusted PDFs and DOCX files is the slowest and riskiest step.
    policy=StagePolicy(time_limit_ms=60_000),
    build=build,
    summarize=summarize,
    description="text from plain text, Markdown, HTML, PDF and DOCX (untrusted parsers sandboxed)",
)
