"""The built-in artifacts: what the upload provides and the built-in stages write.

An artifact's value is a msgspec Struct. The engine stores most of them as MessagePack
in the ``artifacts`` table; the ones the API reads (the upload, the validation, the
text, the searchable chunks) it keeps in tables of their own
(:mod:`pipeline.engine.artifacts`). A custom stage reads any of these by importing
them, and declares its own the same way.
"""

from __future__ import annotations

import msgspec

from pipeline.processing.extract import Extracted
from pipeline.processing.validate import Validation
from pipeline.stages.spec import Artifact


class Upload(msgspec.Struct, frozen=True):
    """The document as the client sent it."""

    data: bytes
    filename: str
    declared_content_type: str | None


class ChunkDraft(msgspec.Struct, frozen=True, array_like=True):
    ordinal: int
    start: int
    end: int
    text: str
    token_count: int
    page: int | None


class ChunkPlan(msgspec.Struct, frozen=True):
    chunks: list[ChunkDraft]


class EmbeddingSet(msgspec.Struct, frozen=True):
    """One float32 little-endian vector per chunk, in ordinal order."""

    model: str
    dimensions: int
    vectors: list[bytes]


class IndexRow(msgspec.Struct, frozen=True):
    ordinal: int
    text: str
    start_offset: int
    end_offset: int
    token_count: int
    page: int | None
    embedding: list[float]
    embedding_model: str


class SearchableChunks(msgspec.Struct, frozen=True):
    """The chunks search reads, each with its embedding."""

    rows: list[IndexRow]


UPLOAD = Artifact("upload", Upload, "the uploaded bytes, filename and declared type")
VALIDATION = Artifact("validation", Validation, "the real type, encoding, checksum and size")
TEXT = Artifact("text", Extracted, "the normalised text and its page spans")
CHUNKS = Artifact("chunks", ChunkPlan, "overlapping, sentence-aware chunks with token counts")
VECTORS = Artifact("vectors", EmbeddingSet, "one embedding per chunk")
SEARCHABLE = Artifact(
    "searchable_chunks", SearchableChunks, "the chunks, embeddings and terms search reads"
)
