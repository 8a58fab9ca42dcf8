"""/search: lexical (BM25), semantic and hybrid search over indexed chunks."""

from __future__ import annotations

from typing import Annotated

from litestar import get
from litestar.di import NamedDependency
from litestar.params import QueryParameter

from pipeline.access.keys import Principal
from pipeline.http.auth import access
from pipeline.http.contract import AUTH, documented
from pipeline.http.documents import document_links
from pipeline.http.problems import Problem
from pipeline.http.state import ApiState
from pipeline.search.results import SearchMode, SearchRequest, SearchResults
from pipeline.text import NO_NUL

MODE_HELP = (
    "hybrid: BM25 and the embedding model fused by reciprocal rank; lexical: BM25 alone; "
    "semantic: nearest vectors alone. Default: hybrid, or lexical where the pipeline runs "
    "without its embedding model."
)


@get(
    "/search",
    tags=["search"],
    summary="Search chunks: lexical (BM25), semantic, or both fused",
    **access("read"),
    **documented(
        *AUTH,
        409,
        422,
        503,
        described={409: "Semantic search was asked for where it cannot run (no model or vectors)"},
        links={200: document_links("/hits/0/document_id")},
    ),
)
async def search(
    api: NamedDependency[ApiState],
    principal: NamedDependency[Principal],
    q: Annotated[str, QueryParameter(name="q", min_length=1, max_length=1000, pattern=NO_NUL)],
    limit: Annotated[int, QueryParameter(name="limit", ge=1, le=100)] = 10,
    mode: Annotated[SearchMode | None, QueryParameter(name="mode", description=MODE_HELP)] = None,
    per_document: Annotated[
        bool,
        QueryParameter(name="per_document", description="At most one hit (the best) per document."),
    ] = False,
) -> SearchResults:
    if not q.strip():
        raise Problem(422, "the query 'q' is blank")
    request = SearchRequest(
        query=q, tenant=principal.tenant, limit=limit, mode=mode, per_document=per_document
    )
    # SemanticSearchUnavailable is a 409 problem (pipeline.http.problems, by type).
    return await api.search.search(request)
