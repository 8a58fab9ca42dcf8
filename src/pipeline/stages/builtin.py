"""One handler per stage, built from settings: the executor's table of work."""

from __future__ import annotations

from pipeline.embedding import make_embedder
from pipeline.engine.sandbox import Sandbox, SandboxLimits
from pipeline.faults import Faults
from pipeline.processing.chunk import ChunkPolicy
from pipeline.processing.limits import MIB, DocxLimits, ExtractLimits
from pipeline.processing.validate import ValidationPolicy
from pipeline.settings import Settings
from pipeline.stages import StageName
from pipeline.stages.chunk import ChunkHandler
from pipeline.stages.embed import EmbedHandler
from pipeline.stages.extract import ExtractHandler
from pipeline.stages.handler import AnyHandler, StageHandler
from pipeline.stages.index import IndexHandler
from pipeline.stages.validate import ValidateHandler

__all__ = [
    "AnyHandler",
    "StageHandler",
    "make_extract_limits",
    "make_handlers",
    "make_sandbox",
]


def make_sandbox(settings: Settings) -> Sandbox:
    limits = SandboxLimits(
        seconds=settings.limits.parser_time_limit_ms / 1000,
        memory_mb=settings.limits.parser_memory_mb,
    )
    return Sandbox(limits)


def make_extract_limits(settings: Settings) -> ExtractLimits:
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


def make_handlers(
    settings: Settings, *, faults: Faults | None = None, sandbox: bool = True
) -> dict[StageName, AnyHandler]:
    """The stage handlers; ``sandbox=False`` parses in-process (for unit tests only)."""
    faults = faults if faults is not None else Faults(settings.faults)
    return {
        "validate": ValidateHandler(ValidationPolicy(max_bytes=settings.limits.max_upload_bytes)),
        "extract": ExtractHandler(
            make_sandbox(settings) if sandbox else None, faults, make_extract_limits(settings)
        ),
        "chunk": ChunkHandler(
            ChunkPolicy(
                target_tokens=settings.stages.chunk_target_tokens,
                overlap_tokens=settings.stages.chunk_overlap_tokens,
            )
        ),
        "embed": EmbedHandler(make_embedder(settings), settings.embedding.batch_size),
        "index": IndexHandler(),
    }
