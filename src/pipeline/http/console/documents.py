"""Documents: a filtered list, and a document's page (stages, timeline, chunks) with its
actions — re-run from a stage, delete — through the services the admin API uses."""

from __future__ import annotations

import uuid
from typing import Annotated, Any, Final

import anyio.to_thread
import msgspec
from litestar import Request, get, post
from litestar.di import NamedDependency
from litestar.params import PathParameter
from litestar.response import Redirect, Response, Template

from pipeline.access.console import Session
from pipeline.errors import PipelineError
from pipeline.http.console.auth import SIGNED_IN, ConsoleNotFound, run_of
from pipeline.http.console.pages import BadInput, page, parse_time, parse_uuid, read, text
from pipeline.http.state import ApiState
from pipeline.lifecycle.deletion import DeleteRequest
from pipeline.operations.cancel import CancelRequest
from pipeline.operations.common import OperationReport
from pipeline.operations.dead_letters import LetterFilter, document_history, list_letters
from pipeline.operations.requests import RerunRequest
from pipeline.queries import documents as queries
from pipeline.statuses import DOCUMENT_STATUSES, LIVE_DOCUMENT_STATUSES

PAGE_SIZE: Final = 50
CHUNK_PREVIEW: Final = 5


@get("/documents", **SIGNED_IN)
async def documents_page(
    request: Request[Any, Any, Any],
    api: NamedDependency[ApiState],
    console_session: NamedDependency[Session],
) -> Template:
    query = request.query_params
    filters = {
        name: (query.get(name) or "").strip() for name in ("status", "filename", "since", "until")
    }
    error = None
    listing = None
    try:
        status = filters["status"] or None
        if status is not None and status not in LIVE_DOCUMENT_STATUSES:
            raise BadInput(f"status: one of {', '.join(LIVE_DOCUMENT_STATUSES)}")
        if len(filters["filename"]) > 255:
            raise BadInput("filename: at most 255 characters")
        listing = await queries.list_documents(
            api.engine,
            status=status,  # checked above
            cursor=query.get("cursor") or None,
            limit=PAGE_SIZE,
            cursors=await api.cursors.codec(),
            tenant=console_session.principal.tenant,
            filename=filters["filename"] or None,
            since=parse_time(filters["since"], "since"),
            until=parse_time(filters["until"], "until"),
        )
    except (BadInput, PipelineError) as problem:  # a bad cursor is InvalidCursor
        error = str(problem)
    return page(
        "documents.html",
        console_session,
        status=400 if error else 200,
        filters=filters,
        statuses=[s for s in DOCUMENT_STATUSES if s in LIVE_DOCUMENT_STATUSES],
        listing=listing,
        error=error,
    )


async def _document_context(
    api: ApiState, session: Session, document_id: uuid.UUID
) -> dict[str, Any]:
    tenant = session.principal.tenant
    document = await queries.get_document(api.engine, document_id, tenant)
    if document is None:
        raise ConsoleNotFound(f"no document with id {document_id}")
    chunks = await queries.list_chunks(api.engine, document_id, tenant=tenant, limit=CHUNK_PREVIEW)
    cursors = await api.cursors.codec()
    history = await read(api, lambda conn: document_history(conn, document_id))
    letters = await read(
        api,
        lambda conn: list_letters(
            conn, LetterFilter(document_id=document_id), limit=20, cursors=cursors, tenant=tenant
        ),
    )
    return {
        "document": document,
        "history": history,
        "chunks": chunks,
        "letters": letters.items,
        "stages": [stage.stage for stage in document.stages or []],
        "cancel_enabled": document.status in ("pending", "processing"),
    }


@get("/documents/{document_id:str}", **SIGNED_IN)
async def document_page(
    api: NamedDependency[ApiState],
    console_session: NamedDependency[Session],
    document_id: Annotated[str, PathParameter()],
) -> Template:
    parsed = parse_uuid(document_id, "document")
    return page(
        "document.html", console_session, **await _document_context(api, console_session, parsed)
    )


@post("/documents/{document_id:str}/rerun", **SIGNED_IN)
async def rerun_document(
    request: Request[Any, Any, Any],
    api: NamedDependency[ApiState],
    console_session: NamedDependency[Session],
    document_id: Annotated[str, PathParameter()],
) -> Template:
    """Re-run (or preview re-running) from a stage: ``RerunService.rerun``, as
    ``POST /documents/{id}/rerun`` does."""
    parsed = parse_uuid(document_id, "document")
    context = await _document_context(api, console_session, parsed)
    form = await request.form()
    try:
        wanted = RerunRequest(
            ids=[parsed],
            from_stage=text(form, "from_stage", 32) or "",
            reason=text(form, "reason"),
            dry_run=form.get("dry_run") == "1",
        )
        if wanted.from_stage not in context["stages"]:
            raise BadInput("from_stage: choose one of the document's stages")
        report: OperationReport = await anyio.to_thread.run_sync(
            api.rerun.rerun, wanted, run_of(request, console_session)
        )
    except (BadInput, msgspec.ValidationError, ValueError, PipelineError) as problem:
        return page("document.html", console_session, status=400, error=str(problem), **context)
    if not report.dry_run:
        context = await _document_context(api, console_session, parsed)
    return page("document.html", console_session, result=report, action="rerun", **context)


@post("/documents/{document_id:str}/delete", **SIGNED_IN)
async def delete_document(
    request: Request[Any, Any, Any],
    api: NamedDependency[ApiState],
    console_session: NamedDependency[Session],
    document_id: Annotated[str, PathParameter()],
) -> Response[Any]:
    """Delete: ``DeletionService.delete``, as ``DELETE /documents/{id}`` does."""
    parsed = parse_uuid(document_id, "document")
    context = await _document_context(api, console_session, parsed)
    form = await request.form()
    try:
        if form.get("confirm") != "yes":
            raise BadInput("tick the box to confirm: a deleted document cannot be brought back")
        wanted = DeleteRequest(ids=[parsed], reason=text(form, "reason"))
    except BadInput as problem:
        return page("document.html", console_session, status=400, error=str(problem), **context)
    report = await anyio.to_thread.run_sync(
        api.deletion.delete, wanted, run_of(request, console_session)
    )
    (item,) = report.items
    if item.action != "deleted":
        return page(
            "document.html", console_session, status=409, result=report, action="delete", **context
        )
    return Redirect(f"/console/documents?deleted={parsed}", status_code=303)


@post("/documents/{document_id:str}/cancel", **SIGNED_IN)
async def cancel_document(
    request: Request[Any, Any, Any],
    api: NamedDependency[ApiState],
    console_session: NamedDependency[Session],
    document_id: Annotated[str, PathParameter()],
) -> Template:
    """Cancel: ``CancelService.cancel``, as ``POST /documents/{id}/cancel`` does."""
    parsed = parse_uuid(document_id, "document")
    await _document_context(api, console_session, parsed)  # 404 for another tenant's
    form = await request.form()
    try:
        wanted = CancelRequest(ids=[parsed], reason=text(form, "reason"))
    except BadInput as problem:
        context = await _document_context(api, console_session, parsed)
        return page("document.html", console_session, status=400, error=str(problem), **context)
    report = await anyio.to_thread.run_sync(
        api.cancel.cancel, wanted, run_of(request, console_session)
    )
    context = await _document_context(api, console_session, parsed)
    return page("document.html", console_session, result=report, action="cancel", **context)


ROUTES = [documents_page, document_page, rerun_document, delete_document, cancel_document]
