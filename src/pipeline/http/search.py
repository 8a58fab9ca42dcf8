"""/search: ranked full-text search over indexed chunks."""

from __future__ import annotations

from typing import Annotated

from litestar import get
from litestar.di import NamedDependency
from litestar.params import QueryParameter

from pipeline.http.auth import access
from pipeline.http.problems import Problem
from pipeline.http.state import ApiState
from pipeline.services import queries
from pipeline.services.keys import Principal
from pipeline.services.queries import SearchResults
from pipeline.services.text import NO_NUL


@get("/search", tags=["search"], summary="Full-text search over chunks", **access("read"))
async def search(
    api: NamedDependency[ApiState],
    principal: NamedDependency[Principal],
    q: Annotated[str, QueryParameter(name="q", min_length=1, max_length=1000, pattern=NO_NUL)],
    limit: Annotated[int, QueryParameter(name="limit", ge=1, le=100)] = 10,
) -> SearchResults:
    if not q.strip():
        raise Problem(422, "the query 'q' is blank")
    return await queries.search(api.engine, q, limit=limit, tenant=principal.tenant)
