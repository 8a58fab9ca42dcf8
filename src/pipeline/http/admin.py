"""The admin API: dead letters (list, show, replay, discard), reruns and operation jobs.

Handlers parse, call a service and format. The operator services are synchronous
(shared with the CLI and the workers), so they run in a worker thread on the API's
sync engine. A replay, discard or rerun that selects at most ``admin_sync_limit``
items (or is a dry run) runs during the request and answers 200 with its report;
a bigger one is recorded as an operation job, carried out by a worker on the
``operations`` queue, and answered 202 with a link to poll.

Every endpoint needs the ``admin`` scope and acts for the key's tenant only: its
documents, their dead letters and its jobs. Anything else answers exactly like an id
that does not exist (404, or "skipped: no such ..." in a bulk report).
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Annotated, Any, ClassVar, TypeVar

import anyio.to_thread
import msgspec
from litestar import Controller, Request, Response, Router, get, post
from litestar.di import NamedDependency
from litestar.openapi.datastructures import ResponseSpec
from litestar.params import JSONBody, PathParameter, QueryParameter
from sqlalchemy import Connection

from pipeline.access.keys import Principal
from pipeline.http.auth import access
from pipeline.http.contract import AUTH, LinkTo, documented
from pipeline.http.documents import parse_id
from pipeline.http.json_body import StrictJSONRequest
from pipeline.http.problems import Problem
from pipeline.http.state import ApiState
from pipeline.operations import dead_letters
from pipeline.operations.cancel import CancelRequest
from pipeline.operations.common import (
    DEFAULT_RATE,
    NotFound,
    OperationReport,
    Operator,
    RunContext,
)
from pipeline.operations.dead_letters import LetterDetail, LetterFilter, LetterPage
from pipeline.operations.jobs import JobView, create_job, get_job, job_message
from pipeline.operations.requests import (
    DiscardRequest,
    OperationRequest,
    Reason,
    ReplayRequest,
    RerunRequest,
)
from pipeline.operations.rerun import DocumentFilter
from pipeline.operations.stage_controls import StageState
from pipeline.stages import StageName
from pipeline.stages.spec import NAME_PATTERN
from pipeline.statuses import DeadLetterStatus, JobKind, JobStatus
from pipeline.text import NO_NUL

logger = logging.getLogger(__name__)

MAX_PACED_SECONDS = 5.0
"""A paced request that would hold the connection longer than this runs as a job."""
T = TypeVar("T")
R = TypeVar("R", ReplayRequest, DiscardRequest, RerunRequest)


class JobLinks(msgspec.Struct, frozen=True):
    self: str


class JobAccepted(msgspec.Struct, frozen=True):
    """A bulk action accepted as a background job; poll ``links.self`` for progress."""

    job_id: uuid.UUID
    status: JobStatus
    total: int
    """How many items the selection matched when the job was accepted."""
    links: JobLinks


class DocumentRerunBody(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """Re-run one document from ``from_stage`` (that stage and every one after it)."""

    stage_fields: ClassVar[tuple[str, ...]] = ("from_stage",)

    from_stage: StageName
    reason: Reason | None = None
    dry_run: bool = False
    to_current_plan: bool = False
    """Move the document onto the active definition's stages from ``from_stage`` on."""


class DocumentCancelBody(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """Cancel one document: its unfinished stages stop, and it fails with the reason."""

    reason: Reason | None = None
    dry_run: bool = False


class StagePauseBody(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    reason: Reason | None = None


GET_OPERATION = "OperationsJobIdGetOperation"
GET_LETTER = "DeadLettersLetterIdGetLetter"
LIST_LETTERS = "DeadLettersListLetters"
JOB_LINKS = {
    202: {"GetOperation": LinkTo(GET_OPERATION, {"job_id": "$response.body#/job_id"}, "Poll it")}
}
BULK_SUCCESSES = {
    200: ResponseSpec(OperationReport, description="Done now: what happened to each item"),
    202: ResponseSpec(JobAccepted, description="Too many items: accepted as a background job"),
}
BULK_PROBLEMS = (400, *AUTH, 413, 422, 503)
BULK_WHEN = {503: "The job was recorded but could not be queued, or the database is unavailable"}


def run_of(request: Request[Any, Any, Any], principal: Principal) -> RunContext:
    """Who acts, and for whom: the audit trail's "who" is the key (tenant and prefix) and
    the client address; the action touches the key's tenant's items only."""
    host = request.client.host if request.client else None
    operator = Operator(name=f"{principal.label}@{host or 'unknown'}", via="api")
    return RunContext(operator=operator, tenant=principal.tenant)


def as_utc(value: datetime | None) -> datetime | None:
    """Naive datetimes are UTC."""
    if value is not None and value.tzinfo is None:
        return value.replace(tzinfo=UTC)
    return value


def _letter_filter_utc(selection: LetterFilter | None) -> LetterFilter | None:
    if selection is None:
        return None
    return msgspec.structs.replace(
        selection, since=as_utc(selection.since), until=as_utc(selection.until)
    )


def _document_filter_utc(selection: DocumentFilter | None) -> DocumentFilter | None:
    if selection is None:
        return None
    return msgspec.structs.replace(
        selection, since=as_utc(selection.since), until=as_utc(selection.until)
    )


def parse_job_id(raw: str) -> uuid.UUID:
    try:
        return uuid.UUID(raw)
    except ValueError:
        raise Problem(404, f"no operation with id {raw!r}") from None


async def _read(api: ApiState, query: Callable[[Connection], T]) -> T:
    def run() -> T:
        with api.sync_engine.connect() as conn:
            return query(conn)

    return await anyio.to_thread.run_sync(run)


async def run_or_queue(
    api: ApiState,
    kind: JobKind,
    body: R,
    run: RunContext,
    select: Callable[[R, str | None], list[uuid.UUID]],
    operate: Callable[[R, RunContext], OperationReport],
) -> Response[OperationReport | JobAccepted]:
    """Run the action now if it is small (or a dry run), else queue it as the tenant's job
    (the console's bulk forms go through here too)."""
    if not body.dry_run:
        total = len(await anyio.to_thread.run_sync(select, body, run.tenant))
        paced = hasattr(body, "rate")  # replays and reruns are paced; discards are not
        rate = getattr(body, "rate", None) or DEFAULT_RATE
        paced_seconds = total / rate if paced else 0.0
        if total > api.settings.operations.admin_sync_limit or paced_seconds > MAX_PACED_SECONDS:
            return await _queue(api, kind, body, run, total)
    report = await anyio.to_thread.run_sync(operate, body, run)
    return Response(report, status_code=200)


async def _queue(
    api: ApiState, kind: JobKind, body: OperationRequest, run: RunContext, total: int
) -> Response[OperationReport | JobAccepted]:
    tenant = run.tenant
    assert tenant is not None  # the API acts for a key's tenant (only the CLI for every one)

    def record() -> uuid.UUID:
        with api.sync_engine.begin() as conn:
            return create_job(conn, kind, body, run.operator, tenant)

    job_id = await anyio.to_thread.run_sync(record)
    # Sent only once the job is committed, so the worker always finds it.
    try:
        await anyio.to_thread.run_sync(api.dispatcher.send, job_message(job_id))
    except Exception:
        logger.exception("admin: operation job %s recorded but not queued", job_id)
        raise Problem(
            503,
            f"operation job {job_id} was recorded but could not be queued (the broker "
            "did not answer), so it will not start; nothing was changed, retry later",
            job_id=str(job_id),
        ) from None
    location = f"/operations/{job_id}"
    accepted = JobAccepted(job_id=job_id, status="queued", total=total, links=JobLinks(location))
    return Response(accepted, status_code=202, headers={"Location": location})


class DeadLetterController(Controller):
    path = "/dead-letters"

    @get(
        "/",
        summary="List dead letters, newest first",
        description="Every filter narrows the selection; naive datetimes are UTC. "
        "Page with `cursor` (the previous page's `next_cursor`) until it is null.",
        **documented(
            *AUTH,
            422,
            503,
            links={
                200: {
                    "GetLetter": LinkTo(
                        GET_LETTER, {"letter_id": "$response.body#/items/0/id"}, "The letter"
                    ),
                    "NextPage": LinkTo(
                        LIST_LETTERS,
                        {"cursor": "$response.body#/next_cursor"},
                        "The next page (while `next_cursor` is not null)",
                    ),
                }
            },
        ),
    )
    async def list_letters(
        self,
        request: Request[Any, Any, Any],
        api: NamedDependency[ApiState],
        principal: NamedDependency[Principal],
        stage: Annotated[
            str | None,
            QueryParameter(
                name="stage", required=False, max_length=32, pattern=NAME_PATTERN.pattern
            ),
        ] = None,
        error_type: Annotated[
            str | None,
            QueryParameter(name="error_type", required=False, max_length=255, pattern=NO_NUL),
        ] = None,
        since: Annotated[
            datetime | None,
            QueryParameter(name="since", required=False, description="failed at or after"),
        ] = None,
        until: Annotated[
            datetime | None,
            QueryParameter(name="until", required=False, description="failed before"),
        ] = None,
        document_id: Annotated[
            uuid.UUID | None, QueryParameter(name="document_id", required=False)
        ] = None,
        status: Annotated[
            DeadLetterStatus | None, QueryParameter(name="status", required=False)
        ] = None,
        limit: Annotated[int, QueryParameter(name="limit", ge=1, le=500)] = 50,
        cursor: Annotated[str | None, QueryParameter(name="cursor", required=False)] = None,
    ) -> LetterPage:
        _refuse_numeric_times(request, ("since", "until"))
        selection = LetterFilter(
            stage=stage,
            error_type=error_type,
            since=as_utc(since),
            until=as_utc(until),
            document_id=document_id,
            status=status,
        )
        cursors = await api.cursors.codec()
        # A cursor this API did not issue is InvalidCursor: a 422 (problems.py, by type).
        return await _read(
            api,
            lambda conn: dead_letters.list_letters(
                conn,
                selection,
                limit=limit,
                cursors=cursors,
                cursor=cursor,
                tenant=principal.tenant,
            ),
        )

    @get(
        "/{letter_id:str}",
        summary="A dead letter: error, traceback, original message and the document's history",
        **documented(*AUTH, 404, 503),
    )
    async def get_letter(
        self,
        api: NamedDependency[ApiState],
        principal: NamedDependency[Principal],
        letter_id: Annotated[str, PathParameter()],
    ) -> LetterDetail:
        try:
            parsed = uuid.UUID(letter_id)
        except ValueError:
            raise Problem(404, f"no dead letter with id {letter_id!r}") from None
        letter = await _read(
            api, lambda conn: dead_letters.get_letter(conn, parsed, tenant=principal.tenant)
        )
        if letter is None:
            raise Problem(404, f"no dead letter with id {letter_id!r}")
        return letter

    @post(
        "/replay",
        status_code=200,
        summary="Replay dead letters",
        description="Re-sends each selected letter's original message (`ids`, or every "
        "letter a `filter` matches, oldest first, up to `limit`). Letters not `dead` are "
        "skipped unless `force`. Small selections and dry runs answer 200 with the "
        "report; larger ones 202 with an operation job to poll.",
        **documented(
            *BULK_PROBLEMS, described=BULK_WHEN, successes=BULK_SUCCESSES, links=JOB_LINKS
        ),
    )
    async def replay(
        self,
        request: Request[Any, Any, Any],
        api: NamedDependency[ApiState],
        principal: NamedDependency[Principal],
        data: JSONBody[ReplayRequest],
    ) -> Response[OperationReport | JobAccepted]:
        body = msgspec.structs.replace(data, filter=_letter_filter_utc(data.filter))
        run = run_of(request, principal)
        return await run_or_queue(api, "replay", body, run, api.replay.select, api.replay.replay)

    @post(
        "/discard",
        status_code=200,
        summary="Discard dead letters",
        description="Marks each selected letter `discarded` (it stays for the record). "
        "Letters not `dead` are skipped unless `force`. Small selections and dry runs "
        "answer 200 with the report; larger ones 202 with an operation job to poll.",
        **documented(
            *BULK_PROBLEMS, described=BULK_WHEN, successes=BULK_SUCCESSES, links=JOB_LINKS
        ),
    )
    async def discard(
        self,
        request: Request[Any, Any, Any],
        api: NamedDependency[ApiState],
        principal: NamedDependency[Principal],
        data: JSONBody[DiscardRequest],
    ) -> Response[OperationReport | JobAccepted]:
        body = msgspec.structs.replace(data, filter=_letter_filter_utc(data.filter))
        run = run_of(request, principal)
        return await run_or_queue(api, "discard", body, run, api.replay.select, api.replay.discard)


class RerunController(Controller):
    path = "/"

    @post(
        "/documents/{document_id:str}/rerun",
        status_code=200,
        summary="Re-run one document from a stage",
        description="Starts a new generation of the document from `from_stage`; every "
        "earlier stage must have succeeded (409 otherwise). With `to_current_plan`, the "
        "document moves onto the active pipeline definition's stages from `from_stage` on. "
        "A stage the active definition does not have is a 422.",
        **documented(
            400,
            *AUTH,
            404,
            409,
            413,
            422,
            503,
            described={
                409: "The document cannot be re-run from that stage",
                503: "The rerun could not be queued, or the database is unavailable",
            },
        ),
    )
    async def rerun_document(
        self,
        request: Request[Any, Any, Any],
        api: NamedDependency[ApiState],
        principal: NamedDependency[Principal],
        document_id: Annotated[str, PathParameter()],
        data: JSONBody[DocumentRerunBody],
    ) -> OperationReport:
        parsed = parse_id(document_id)
        rerun = RerunRequest(
            ids=[parsed],
            from_stage=data.from_stage,
            reason=data.reason,
            dry_run=data.dry_run,
            to_current_plan=data.to_current_plan,
        )
        report = await anyio.to_thread.run_sync(api.rerun.rerun, rerun, run_of(request, principal))
        (item,) = report.items
        if isinstance(item, NotFound):
            raise Problem(404, f"no document with id {document_id!r}")
        if item.action == "failed":  # one item: nothing was done, and it is true to say so
            raise Problem(503, f"the rerun was {item.detail}", document_id=str(parsed))
        if item.action == "skipped":
            raise Problem(409, item.detail, document_id=str(parsed), from_stage=data.from_stage)
        return report

    @post(
        "/rerun",
        status_code=200,
        summary="Re-run documents from a stage",
        description="Re-runs every document a `filter` matches (oldest first, up to "
        "`limit`), or the given `ids`, from `from_stage`. Documents whose earlier stages "
        "have not all succeeded are skipped. Small selections and dry runs answer 200 "
        "with the report; larger ones 202 with an operation job to poll.",
        **documented(
            *BULK_PROBLEMS, described=BULK_WHEN, successes=BULK_SUCCESSES, links=JOB_LINKS
        ),
    )
    async def rerun(
        self,
        request: Request[Any, Any, Any],
        api: NamedDependency[ApiState],
        principal: NamedDependency[Principal],
        data: JSONBody[RerunRequest],
    ) -> Response[OperationReport | JobAccepted]:
        body = msgspec.structs.replace(data, filter=_document_filter_utc(data.filter))
        run = run_of(request, principal)
        return await run_or_queue(api, "rerun", body, run, api.rerun.select, api.rerun.rerun)


class CancelController(Controller):
    path = "/"

    @post(
        "/documents/{document_id:str}/cancel",
        status_code=200,
        summary="Cancel one document",
        description="Stops the document's unfinished stages (an attempt still running is "
        "fenced off: it writes nothing) and fails the document with the reason. Its "
        "outputs are kept; a rerun starts it again. A finished document is a 409.",
        **documented(400, *AUTH, 404, 409, 413, 422, 503),
    )
    async def cancel_document(
        self,
        request: Request[Any, Any, Any],
        api: NamedDependency[ApiState],
        principal: NamedDependency[Principal],
        document_id: Annotated[str, PathParameter()],
        data: JSONBody[DocumentCancelBody],
    ) -> OperationReport:
        parsed = parse_id(document_id)
        cancel = CancelRequest(ids=[parsed], reason=data.reason, dry_run=data.dry_run)
        run = run_of(request, principal)
        report = await anyio.to_thread.run_sync(api.cancel.cancel, cancel, run)
        (item,) = report.items
        if isinstance(item, NotFound):
            raise Problem(404, f"no document with id {document_id!r}")
        if item.action == "failed":
            raise Problem(503, f"the cancellation was {item.detail}", document_id=str(parsed))
        if item.action == "skipped":
            raise Problem(409, f"the document is {item.detail}", document_id=str(parsed))
        return report


class StageControlController(Controller):
    path = "/stages"

    @post(
        "/{stage:str}/pause",
        status_code=200,
        summary="Pause a stage (every tenant's documents)",
        description="No worker claims the stage's rows until it is resumed: they wait, "
        "and the reconciler leaves them alone. Work already running finishes. Stages are "
        "shared, so only an admin key of the operator tenant (`PIPELINE_OPERATOR_TENANT`) "
        "may pause one (403 otherwise); an unknown stage is a 404.",
        **documented(400, *AUTH, 404, 413, 422, 503),
    )
    async def pause(
        self,
        request: Request[Any, Any, Any],
        api: NamedDependency[ApiState],
        principal: NamedDependency[Principal],
        stage: Annotated[str, PathParameter()],
        data: JSONBody[StagePauseBody],
    ) -> StageState:
        run = run_of(request, principal)
        _known_stage(api, stage)
        return await anyio.to_thread.run_sync(api.stage_controls.pause, stage, run, data.reason)

    @post(
        "/{stage:str}/resume",
        status_code=200,
        summary="Resume a paused stage",
        description="Workers claim its rows again; every row that waited is sent a message "
        "at once (by the active reconciler), so the backlog drains.",
        **documented(*AUTH, 404, 503),
    )
    async def resume(
        self,
        request: Request[Any, Any, Any],
        api: NamedDependency[ApiState],
        principal: NamedDependency[Principal],
        stage: Annotated[str, PathParameter()],
    ) -> StageState:
        run = run_of(request, principal)
        _known_stage(api, stage)
        return await anyio.to_thread.run_sync(api.stage_controls.resume, stage, run)


def _known_stage(api: ApiState, stage: str) -> None:
    """A stage the path names and the definition lacks is no such resource: a 404."""
    if stage not in api.definition:
        raise Problem(
            404, f"no stage {stage!r}: the pipeline has {', '.join(api.definition.names)}"
        )


class OperationController(Controller):
    path = "/operations"

    @get(
        "/{job_id:str}",
        summary="A background operation job: status and progress",
        **documented(*AUTH, 404, 503),
    )
    async def get_operation(
        self,
        api: NamedDependency[ApiState],
        principal: NamedDependency[Principal],
        job_id: Annotated[str, PathParameter()],
    ) -> JobView:
        parsed = parse_job_id(job_id)
        job = await _read(api, lambda conn: get_job(conn, parsed, principal.tenant))
        if job is None:
            raise Problem(404, f"no operation with id {job_id!r}")
        return job


admin_router = Router(
    path="/",
    route_handlers=[
        DeadLetterController,
        RerunController,
        CancelController,
        StageControlController,
        OperationController,
    ],
    tags=["admin"],
    request_class=StrictJSONRequest,  # every JSON body: nesting bounded, types strict
    **access("admin"),
)
"""Every admin endpoint, registered in ``create_app``."""


def _refuse_numeric_times(request: Request[Any, Any, Any], names: tuple[str, ...]) -> None:
    """A time is an ISO 8601 date-time, as the schema says: Litestar would also read a
    bare number as a Unix time (``until=0.5``), which no client means."""
    for name in names:
        raw = request.query_params.get(name)
        if raw is not None and _is_number(raw):
            raise Problem(
                422,
                f"invalid query parameter `{name}`: expected an ISO 8601 date-time "
                f"(e.g. 2026-11-01T00:00:00Z), not the number {raw!r}",
            )


def _is_number(raw: str) -> bool:
    try:
        float(raw)
    except ValueError:
        return False
    return True
