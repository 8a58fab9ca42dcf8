"""Dead letters: a filtered list, a letter's page, and replay / discard of one letter
or of every letter a filter matches — always after a dry-run preview (how many, and a
sample), at the rate the operator picks. The actions go through the admin API's own
path (``http.admin.run_or_queue``): small ones run now, bigger ones become the
tenant's background job, whose page shows its progress."""

from __future__ import annotations

import uuid
from typing import Annotated, Any, Final

import anyio.to_thread
import msgspec
from litestar import Request, get, post
from litestar.datastructures import FormMultiDict, MultiDict
from litestar.di import NamedDependency
from litestar.params import PathParameter
from litestar.response import Redirect, Response, Template

from pipeline.access.console import Session
from pipeline.errors import PipelineError
from pipeline.http.admin import JobAccepted, run_or_queue
from pipeline.http.console.auth import SIGNED_IN, ConsoleNotFound, run_of
from pipeline.http.console.pages import BadInput, page, parse_time, parse_uuid, read, text
from pipeline.http.state import ApiState
from pipeline.operations import dead_letters
from pipeline.operations.common import DEFAULT_RATE, OperationReport
from pipeline.operations.dead_letters import LetterFilter
from pipeline.operations.requests import DiscardRequest, ReplayRequest
from pipeline.statuses import DEAD_LETTER_STATUSES

PAGE_SIZE: Final = 50
SAMPLE: Final = 10
FILTER_FIELDS: Final = ("stage", "error_type", "since", "until", "status")
ACTIONS: Final = ("replay", "discard")


def _filter(values: MultiDict[Any] | FormMultiDict) -> tuple[dict[str, str], LetterFilter]:
    """The filter fields as given (for the form) and as a ``LetterFilter``."""
    raw = {name: str(values.get(name) or "").strip() for name in FILTER_FIELDS}
    status = raw["status"] or None
    if status is not None and status not in DEAD_LETTER_STATUSES:
        raise BadInput(f"status: one of {', '.join(DEAD_LETTER_STATUSES)}")
    try:
        selection = msgspec.convert(
            {
                "stage": raw["stage"] or None,
                "error_type": raw["error_type"] or None,
                "status": status,
            },
            LetterFilter,
        )
    except msgspec.ValidationError as error:
        raise BadInput(str(error)) from None
    selection = msgspec.structs.replace(
        selection, since=parse_time(raw["since"], "since"), until=parse_time(raw["until"], "until")
    )
    return raw, selection


@get("/dead-letters", **SIGNED_IN)
async def letters_page(
    request: Request[Any, Any, Any],
    api: NamedDependency[ApiState],
    console_session: NamedDependency[Session],
) -> Template:
    params = request.query_params
    if not params:  # what an operator opens the page for: the letters waiting
        params = MultiDict({"status": "dead"})
    raw = {name: str(params.get(name) or "") for name in FILTER_FIELDS}
    error = None
    listing = None
    try:
        raw, selection = _filter(params)
        cursors = await api.cursors.codec()
        listing = await read(
            api,
            lambda conn: dead_letters.list_letters(
                conn,
                selection,
                limit=PAGE_SIZE,
                cursors=cursors,
                cursor=params.get("cursor") or None,
                tenant=console_session.principal.tenant,
            ),
        )
    except (BadInput, PipelineError) as problem:
        error = str(problem)
    return page(
        "dead_letters.html",
        console_session,
        status=400 if error else 200,
        filters=raw,
        stages=api.definition.names,
        statuses=DEAD_LETTER_STATUSES,
        listing=listing,
        error=error,
    )


@get("/dead-letters/{letter_id:str}", **SIGNED_IN)
async def letter_page(
    api: NamedDependency[ApiState],
    console_session: NamedDependency[Session],
    letter_id: Annotated[str, PathParameter()],
) -> Template:
    parsed = parse_uuid(letter_id, "dead letter")
    tenant = console_session.principal.tenant
    letter = await read(api, lambda conn: dead_letters.get_letter(conn, parsed, tenant=tenant))
    if letter is None:
        raise ConsoleNotFound(f"no dead letter with id {letter_id}")
    message = msgspec.json.format(msgspec.json.encode(letter.message), indent=2).decode()
    return page("dead_letter.html", console_session, letter=letter, message=message)


def _request(
    action: str, values: MultiDict[Any] | FormMultiDict, *, dry_run: bool
) -> tuple[ReplayRequest | DiscardRequest, dict[str, str]]:
    """The request a preview or confirm form describes: one letter (``id``) or a filter."""
    if action not in ACTIONS:
        raise BadInput("action: replay or discard")
    one = str(values.get("id") or "").strip()
    raw: dict[str, str] = {"id": one}
    fields: dict[str, Any] = {"dry_run": dry_run, "reason": text(values, "reason")}
    if one:
        try:
            fields["ids"] = [uuid.UUID(one)]
        except ValueError:
            raise BadInput(f"no dead letter with id {one!r}") from None
    else:
        filters, selection = _filter(values)
        raw.update(filters)
        fields["filter"] = selection
        limit = text(values, "limit", 12)
        if limit is not None:
            if not limit.isdigit() or int(limit) < 1:
                raise BadInput("limit: a whole number of at least 1")
            fields["limit"] = int(limit)
    if action == "replay":
        rate = text(values, "rate", 20)
        if rate is not None:
            try:
                fields["rate"] = float(rate)
            except ValueError:
                raise BadInput("rate: messages per second, e.g. 5 or 0.5") from None
    raw.update({name: str(values.get(name) or "") for name in ("limit", "rate", "reason")})
    try:
        if action == "replay":
            return msgspec.convert(fields, ReplayRequest, from_attributes=True), raw
        return msgspec.convert(fields, DiscardRequest, from_attributes=True), raw
    except (msgspec.ValidationError, ValueError) as error:
        raise BadInput(str(error)) from None


def _service(api: ApiState, action: str) -> Any:
    return api.replay.replay if action == "replay" else api.replay.discard


@get("/dead-letters/preview", **SIGNED_IN)
async def preview(
    request: Request[Any, Any, Any],
    api: NamedDependency[ApiState],
    console_session: NamedDependency[Session],
) -> Template:
    """The dry run: how many letters the action would touch, and a sample of them."""
    params = request.query_params
    action = str(params.get("action") or "")
    try:
        wanted, raw = _request(action, params, dry_run=True)
        report: OperationReport = await anyio.to_thread.run_sync(
            _service(api, action), wanted, run_of(request, console_session)
        )
    except (BadInput, PipelineError) as problem:
        return page("refused.html", console_session, status=400, message=str(problem))
    return page(
        "preview.html",
        console_session,
        action=action,
        report=report,
        sample=report.items[:SAMPLE],
        form=raw,
        default_rate=DEFAULT_RATE,
    )


@post("/dead-letters/{action:str}", **SIGNED_IN)
async def act(
    request: Request[Any, Any, Any],
    api: NamedDependency[ApiState],
    console_session: NamedDependency[Session],
    action: Annotated[str, PathParameter()],
) -> Response[Any]:
    """Replay or discard, as confirmed on the preview: now if small, else as a job."""
    form = await request.form()
    try:
        wanted, _ = _request(action, form, dry_run=False)
        if action == "discard" and wanted.reason is None:
            raise BadInput("reason: say why these letters are discarded (it is recorded)")
        run = run_of(request, console_session)
        if isinstance(wanted, ReplayRequest):
            answer = await run_or_queue(
                api, "replay", wanted, run, api.replay.select, api.replay.replay
            )
        else:
            answer = await run_or_queue(
                api, "discard", wanted, run, api.replay.select, api.replay.discard
            )
    except (BadInput, PipelineError, ValueError) as problem:
        return page("refused.html", console_session, status=400, message=str(problem))
    body = answer.content
    if isinstance(body, JobAccepted):
        return Redirect(f"/console/jobs/{body.job_id}", status_code=303)
    assert isinstance(body, OperationReport)
    return page("report.html", console_session, action=action, report=body)


ROUTES = [letters_page, preview, letter_page, act]
