"""A search request and its answer, as they travel over HTTP (msgspec Structs)."""

from __future__ import annotations

import uuid
from typing import Literal

import msgspec

from pipeline.search.fusion import ListName

SearchMode = Literal["hybrid", "lexical", "semantic"]
SEARCH_MODES: tuple[SearchMode, ...] = ("hybrid", "lexical", "semantic")


class SearchRequest(msgspec.Struct, frozen=True, kw_only=True):
    """One search, passed whole from the HTTP handler to the service."""

    query: str
    tenant: str
    limit: int = 10
    mode: SearchMode | None = None
    """None: hybrid where the embedder is a real model, lexical with the hashing one."""
    per_document: bool = False
    """At most one hit per document (its best chunk)."""


class SearchHit(msgspec.Struct, frozen=True):
    document_id: uuid.UUID
    filename: str
    chunk_ordinal: int
    snippet: str
    score: float
    """BM25 (lexical), cosine similarity (semantic) or the fused reciprocal-rank score."""
    found_by: list[ListName]
    lexical_rank: int | None
    semantic_rank: int | None


class SearchResults(msgspec.Struct, frozen=True):
    query: str
    mode: SearchMode
    embedding_model: str | None
    """The model whose vectors were compared (null in lexical mode)."""
    per_document: bool
    hits: list[SearchHit]
    warnings: list[str] = msgspec.field(default_factory=list)
    """Why a list could not take part (hybrid then answers with the other)."""
