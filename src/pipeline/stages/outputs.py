"""Intermediate outputs kept in ``stage_outputs``, encoded as MessagePack.

These are internal storage formats, not wire formats: compact, typed, and
versioned by their Struct definitions.
"""

from __future__ import annotations

import msgspec


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


def encode(value: ChunkPlan | EmbeddingSet) -> bytes:
    return msgspec.msgpack.encode(value)


def decode_plan(payload: bytes) -> ChunkPlan:
    return msgspec.msgpack.decode(payload, type=ChunkPlan)


def decode_embeddings(payload: bytes) -> EmbeddingSet:
    return msgspec.msgpack.decode(payload, type=EmbeddingSet)
