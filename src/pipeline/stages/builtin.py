"""The built-in pipeline: validate → extract → ocr → chunk → embed → index.

A definition of your own reuses these specs and places stages of its own between them
(README, "Writing a stage").
"""

from __future__ import annotations

from typing import Final

from pipeline.stages import chunk, embed, extract, index, ocr, validate
from pipeline.stages.artifacts import (
    CHUNKS,
    SEARCHABLE,
    TEXT,
    UPLOAD,
    VALIDATION,
    VECTORS,
)
from pipeline.stages.pipeline import Pipeline

__all__ = [
    "CHUNK",
    "CHUNKS",
    "EMBED",
    "EXTRACT",
    "INDEX",
    "OCR",
    "PIPELINE",
    "SEARCHABLE",
    "TEXT",
    "UPLOAD",
    "VALIDATE",
    "VALIDATION",
    "VECTORS",
]

VALIDATE: Final = validate.SPEC
EXTRACT: Final = extract.SPEC
OCR: Final = ocr.SPEC
CHUNK: Final = chunk.SPEC
EMBED: Final = embed.SPEC
INDEX: Final = index.SPEC

PIPELINE: Final = Pipeline(
    version="builtin-2", stages=(VALIDATE, EXTRACT, OCR, CHUNK, EMBED, INDEX)
)
