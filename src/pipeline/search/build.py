"""The search service of one API process, from its settings."""

from __future__ import annotations

from sqlalchemy.ext.asyncio import AsyncEngine

from pipeline.embedding import make_embedder
from pipeline.search.semantic import ChosenVectorSearch
from pipeline.search.service import SearchService
from pipeline.settings import Settings


def make_search(settings: Settings, engine: AsyncEngine) -> SearchService:
    embedder = make_embedder(settings)
    nearest = ChosenVectorSearch(
        max_vectors=settings.search.exact_max_vectors, dimensions=embedder.dimensions
    )
    return SearchService(engine, embedder, nearest, candidates=settings.search.candidates)
