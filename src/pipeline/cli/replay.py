"""``pipeline replay``: list, show, replay, discard and import dead letters.

The commands parse options, call :mod:`pipeline.operations.dead_letters` and
:class:`~pipeline.operations.replay.ReplayService`, and format what they return.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from datetime import datetime
from typing import Any, Final, TypeVar

import click
from sqlalchemy import Engine

from pipeline.broker import PipelineRedisBroker
from pipeline.cli.output import (
    DOCUMENT_ID,
    DRY_RUN_OPTION,
    LETTER_ID,
    LIMIT_OPTION,
    REASON_OPTION,
    TENANT_OPTION,
    YES_OPTION,
    broker_for,
    confirm_bulk,
    database,
    describe_item,
    echo_json,
    finish,
    load_settings,
    one_line,
    pretty_json,
    rate_option,
    run_with_progress,
    short,
    table,
    terminal_width,
    truncate,
    utc,
)
from pipeline.cli.stages import STAGE_NAME
from pipeline.cli.timeparse import TIME
from pipeline.operations.common import ItemOutcome, Operator, RunContext
from pipeline.operations.dead_letters import (
    EventView,
    LetterDetail,
    LetterFilter,
    LetterSummary,
    get_letter,
    list_letters,
)
from pipeline.operations.queue import OPERATIONS_QUEUE
from pipeline.operations.replay import ReplayService
from pipeline.operations.requests import DiscardRequest, ReplayRequest
from pipeline.queries.cursors import CursorCodec
from pipeline.settings import Settings
from pipeline.stages import StageName
from pipeline.statuses import DEAD_LETTER_STATUSES, DeadLetterStatus
from pipeline.webhooks.messages import WEBHOOKS_QUEUE
from pipeline.wiring import Wiring

F = TypeVar("F", bound=Callable[..., Any])
PAGE_SIZE: Final = 500
FILTER_FLAGS: Final = {
    "stage": "--stage",
    "error_type": "--error-type",
    "since": "--since",
    "until": "--until",
    "document": "--document",
    "status": "--status",
}


def letter_filters(status_help: str) -> Callable[[F], F]:
    """The filter options shared by ``list``, ``run --all`` and ``discard --all``."""
    options = [
        click.option("--stage", type=STAGE_NAME, help="Letters of this stage."),
        click.option(
            "--error-type",
            metavar="TYPE",
            help="Letters with exactly this error type (e.g. CorruptContent).",
        ),
        click.option("--since", type=TIME, help="Letters that failed at or after TIME."),
        click.option("--until", type=TIME, help="Letters that failed before TIME."),
        click.option(
            "--document",
            type=DOCUMENT_ID,
            help="Letters of this document.",
        ),
        click.option("--status", type=click.Choice(DEAD_LETTER_STATUSES), help=status_help),
    ]

    def decorate(func: F) -> F:
        for option in reversed(options):
            func = option(func)
        return func

    return decorate


def make_filter(
    *,
    stage: StageName | None,
    error_type: str | None,
    since: datetime | None,
    until: datetime | None,
    document: uuid.UUID | None,
    status: DeadLetterStatus | None,
) -> LetterFilter:
    if since is not None and until is not None and since >= until:
        raise click.UsageError("--since must be before --until")
    return LetterFilter(
        stage=stage,
        error_type=error_type,
        since=since,
        until=until,
        document_id=document,
        status=status,
    )


@click.group()
def replay() -> None:
    """Dead letters: list and inspect them, replay or discard them.

    A dead letter is a stage message that failed for good. Replaying re-sends it
    (the document goes back to processing); discarding marks it handled. Every
    action is recorded in the document's stage history with who did it and why.
    """


# -- list ------------------------------------------------------------------------------


@replay.command("list")
@letter_filters("Letters in this state (default: any).")
@TENANT_OPTION
@click.option(
    "--limit",
    type=click.IntRange(min=1),
    default=50,
    show_default=True,
    metavar="N",
    help="Show at most N letters, newest first.",
)
@click.option(
    "--format", "output", type=click.Choice(["table", "json"]), default="table", show_default=True
)
def list_command(
    stage: StageName | None,
    error_type: str | None,
    since: datetime | None,
    until: datetime | None,
    document: uuid.UUID | None,
    status: DeadLetterStatus | None,
    tenant: str | None,
    limit: int,
    output: str,
) -> None:
    """List dead letters, newest first.

    Every tenant's, and letters that name no document (poison messages), which only
    the CLI shows; --tenant narrows to one tenant's documents.
    """
    letter_filter = make_filter(
        stage=stage,
        error_type=error_type,
        since=since,
        until=until,
        document=document,
        status=status,
    )
    settings = load_settings()
    letters: list[LetterSummary] = []
    cursor: str | None = None
    cursors = CursorCodec.ephemeral()  # its cursors never leave this process
    with database(settings, "replay list") as engine, engine.connect() as conn:
        while len(letters) < limit:
            size = min(limit - len(letters), PAGE_SIZE)
            page = list_letters(
                conn, letter_filter, limit=size, cursors=cursors, cursor=cursor, tenant=tenant
            )
            letters.extend(page.items)
            cursor = page.next_cursor
            if cursor is None:
                break
    if output == "json":
        echo_json(letters)
    elif not letters:
        click.echo("no dead letters match")
    else:
        for line in letters_table(letters):
            click.echo(line)
    if cursor is not None:
        click.echo(
            f"more dead letters match: showing the newest {limit}; raise --limit to see more",
            err=True,
        )


def letters_table(letters: list[LetterSummary]) -> list[str]:
    headers = [
        "ID",
        "STAGE",
        "DOCUMENT",
        "ERROR",
        "ATT",
        "FAILED AT (UTC)",
        "REPLAYS",
        "STATUS",
        "MESSAGE",
    ]
    rows = [
        [
            str(letter.id),
            letter.stage or "-",
            short(letter.document_id),
            letter.error_type,
            str(letter.attempts),
            utc(letter.failed_at),
            str(letter.replay_count),
            letter.status,
            letter.error_message,
        ]
        for letter in letters
    ]
    caps = [None, None, None, 28, None, None, None, None, None]
    return table(headers, rows, caps=caps, width=terminal_width(), last_min=30)


# -- show ------------------------------------------------------------------------------


@replay.command("show")
@click.argument("letter_id", metavar="ID", type=LETTER_ID)
@click.option(
    "--format", "output", type=click.Choice(["text", "json"]), default="text", show_default=True
)
def show_command(letter_id: uuid.UUID, output: str) -> None:
    """Show one dead letter in full.

    Its fields, the error, the original message, the traceback and the stage
    history of its document.
    """
    settings = load_settings()
    with database(settings, "replay show") as engine, engine.connect() as conn:
        detail = get_letter(conn, letter_id)
    if detail is None:
        raise click.ClickException(f"no dead letter {letter_id}")
    if output == "json":
        echo_json(detail)
        return
    for line in letter_text(detail):
        click.echo(line)


def letter_text(detail: LetterDetail) -> list[str]:
    letter = detail.letter
    replayed = "-"
    if letter.replayed_at is not None:
        replayed = f"{utc(letter.replayed_at)} as message {detail.replayed_message_id or '?'}"
    lines = [
        f"dead letter  {letter.id}",
        f"status       {letter.status}",
        f"replays      {letter.replay_count}",
        f"document     {letter.document_id or '-'}",
        f"stage        {letter.stage or '-'}{_generation(detail.message)}",
        f"actor        {letter.actor_name} on queue {letter.queue_name}",
        f"attempts     {letter.attempts}",
        f"failed at    {utc(letter.failed_at)}",
        f"replayed at  {replayed}",
        f"error        {letter.error_type}: {letter.error_message}",
        "",
        "message:",
        *_indent(pretty_json(detail.message)),
        "",
        "traceback:",
        *_indent(detail.traceback.rstrip() if detail.traceback else "(none)"),
    ]
    if letter.document_id is not None:
        lines += ["", f"history of document {letter.document_id} ({len(detail.history)} events):"]
        lines += [_event_line(event) for event in detail.history]
    return lines


def _generation(message: dict[str, Any]) -> str:
    """The generation a stage message was for, from its arguments."""
    try:
        return f" (generation {int(message['args'][0]['generation'])})"
    except (LookupError, TypeError, ValueError):
        return ""


def _indent(text: str) -> list[str]:
    return ["  " + line for line in text.splitlines()]


def _event_line(event: EventView) -> str:
    attempt = f"attempt {event.attempt}" if event.attempt is not None else ""
    detail = truncate(one_line(_short_detail(event.detail)), 80)
    stage = event.stage or "-"
    line = f"  {utc(event.at)}  {stage:<8}  g{event.generation:<3} {event.event:<10}  {attempt:<10}"
    return f"{line}  {detail}".rstrip()


def _short_detail(detail: dict[str, Any]) -> str:
    parts = []
    for key, value in detail.items():
        if value is None or isinstance(value, dict | list):
            continue
        parts.append(f"{key}={value}")
    return " ".join(parts)


# -- run / discard ---------------------------------------------------------------------


def letter_selection(
    ids: tuple[uuid.UUID, ...],
    select_all: bool,
    filters: dict[str, Any],
) -> tuple[list[uuid.UUID] | None, LetterFilter | None]:
    """The ``ids`` or the ``filter`` of the request (exactly one of them is not None)."""
    given = [FILTER_FLAGS[name] for name, value in filters.items() if value is not None]
    if ids and select_all:
        raise click.UsageError("give dead-letter ids or --all, not both")
    if not ids and not select_all:
        raise click.UsageError("give dead-letter ids, or --all (with filters) to select by filter")
    if ids:
        if given:
            raise click.UsageError(f"{', '.join(given)} only apply with --all")
        return list(ids), None
    return None, make_filter(**{**filters, "status": filters["status"] or "dead"})


def describe_letter(item: ItemOutcome) -> str:
    if item.stage is not None and item.document_id is not None:
        context = f" ({item.stage} of {item.document_id})"
    elif item.stage is not None:
        context = f" ({item.stage})"
    else:
        context = ""
    return describe_item(item, context)


def _service(settings: Settings, engine: Engine, broker: PipelineRedisBroker) -> ReplayService:
    return Wiring(settings, engine=engine, broker=broker).replay


@replay.command("run")
@click.argument("ids", nargs=-1, metavar="[ID]...", type=LETTER_ID)
@click.option("--all", "select_all", is_flag=True, help="Every letter the filters match.")
@letter_filters("With --all: letters in this state (default: dead).")
@TENANT_OPTION
@DRY_RUN_OPTION
@rate_option("replays")
@LIMIT_OPTION
@REASON_OPTION
@click.option("--force", is_flag=True, help="Also replay letters already replayed or discarded.")
@YES_OPTION
def run_command(
    ids: tuple[uuid.UUID, ...],
    select_all: bool,
    stage: StageName | None,
    error_type: str | None,
    since: datetime | None,
    until: datetime | None,
    document: uuid.UUID | None,
    status: DeadLetterStatus | None,
    tenant: str | None,
    dry_run: bool,
    rate: float | None,
    limit: int | None,
    reason: str | None,
    force: bool,
    yes: bool,
) -> None:
    """Replay dead letters, by id or by filter.

    Replays the given IDs, or with --all every letter the filters match. Each letter's
    original message is sent again: its stage goes back to queued and its document to
    processing. Exits 1 if any letter was skipped (already replayed, document re-run
    since, ...).
    """
    filters = {
        "stage": stage,
        "error_type": error_type,
        "since": since,
        "until": until,
        "document": document,
        "status": status,
    }
    chosen_ids, chosen_filter = letter_selection(ids, select_all, filters)
    request = ReplayRequest(
        ids=chosen_ids,
        filter=chosen_filter,
        limit=limit,
        dry_run=dry_run,
        rate=rate,
        reason=reason,
        force=force,
    )
    settings = load_settings()
    with database(settings, "replay run") as engine, broker_for(settings) as broker:
        service = _service(settings, engine, broker)
        if not _selected(service, request, "replay", settings, yes=yes, tenant=tenant):
            return
        run = RunContext(operator=Operator.from_cli(), tenant=tenant)
        report = run_with_progress("replaying", service.replay, request, run)
    finish(report, describe_letter, done="replayed", would="would replay")


@replay.command("discard")
@click.argument("ids", nargs=-1, metavar="[ID]...", type=LETTER_ID)
@click.option("--all", "select_all", is_flag=True, help="Every letter the filters match.")
@letter_filters("With --all: letters in this state (default: dead).")
@TENANT_OPTION
@DRY_RUN_OPTION
@LIMIT_OPTION
@REASON_OPTION
@click.option("--force", is_flag=True, help="Also discard letters already replayed.")
@YES_OPTION
def discard_command(
    ids: tuple[uuid.UUID, ...],
    select_all: bool,
    stage: StageName | None,
    error_type: str | None,
    since: datetime | None,
    until: datetime | None,
    document: uuid.UUID | None,
    status: DeadLetterStatus | None,
    tenant: str | None,
    dry_run: bool,
    limit: int | None,
    reason: str | None,
    force: bool,
    yes: bool,
) -> None:
    """Discard dead letters, by id or by filter.

    Discards the given IDs, or with --all every letter the filters match. A discarded
    letter is marked handled without being replayed; its document stays failed. Exits 1
    if any letter was skipped.
    """
    filters = {
        "stage": stage,
        "error_type": error_type,
        "since": since,
        "until": until,
        "document": document,
        "status": status,
    }
    chosen_ids, chosen_filter = letter_selection(ids, select_all, filters)
    request = DiscardRequest(
        ids=chosen_ids,
        filter=chosen_filter,
        limit=limit,
        dry_run=dry_run,
        reason=reason,
        force=force,
    )
    settings = load_settings()
    with database(settings, "replay discard") as engine, broker_for(settings) as broker:
        service = _service(settings, engine, broker)
        if not _selected(service, request, "discard", settings, yes=yes, tenant=tenant):
            return
        run = RunContext(operator=Operator.from_cli(), tenant=tenant)
        report = run_with_progress("discarding", service.discard, request, run)
    finish(report, describe_letter, done="discarded", would="would discard")


def _selected(
    service: ReplayService,
    request: ReplayRequest | DiscardRequest,
    verb: str,
    settings: Settings,
    *,
    yes: bool,
    tenant: str | None,
) -> bool:
    """Count the selection (False if empty) and confirm a large one.

    The service is then called with the request itself, not the ids counted here,
    so that the audit trail records the filter the operator gave.
    """
    count = len(service.select(request, tenant))
    if count == 0:
        click.echo("no dead letters match")
        return False
    confirm_bulk(
        count,
        f"{verb} {count} dead letters?",
        threshold=settings.operations.confirm_threshold,
        yes=yes,
        dry_run=request.dry_run,
    )
    return True


# -- import ----------------------------------------------------------------------------


@replay.command("import")
@click.option(
    "--queue",
    "queues",
    multiple=True,
    help="Import this queue's dead set (repeatable; default: every stage queue of the "
    f"definition; also {OPERATIONS_QUEUE!r} and {WEBHOOKS_QUEUE!r}).",
)
@DRY_RUN_OPTION
def import_command(queues: tuple[str, ...], dry_run: bool) -> None:
    """Copy Dramatiq's own dead letters from Redis into Postgres.

    Reads the dead-message sets Dramatiq keeps in Redis (<queue>.XQ, kept there for
    a week) and records each message as a dead letter. Messages already imported are
    left alone, so this can run any number of times.
    """
    settings = load_settings()
    stages = Wiring(settings).definition.names
    known = (*stages, OPERATIONS_QUEUE, WEBHOOKS_QUEUE)
    for queue in queues:
        if queue not in known:
            raise click.BadParameter(
                f"{queue!r} is not a queue of the pipeline (one of {', '.join(known)})",
                param_hint="'--queue'",
            )
    with database(settings, "replay import") as engine, broker_for(settings) as broker:
        service = _service(settings, engine, broker)
        report = service.import_from_redis(
            broker.client,
            Operator.from_cli(),
            queues=list(queues or stages),
            dry_run=dry_run,
        )
    for item in report.items:
        if item.action != "skipped":
            click.echo(_import_line(item))
    already = sum(item.detail == "already imported" for item in report.items)
    if dry_run:
        click.echo(
            f"would import {report.done}, already imported {already} (dry run: nothing changed)"
        )
    else:
        click.echo(f"imported {report.done}, already imported {already}")


def _import_line(item: ItemOutcome) -> str:
    target = f", {item.stage} of {item.document_id}" if item.document_id is not None else ""
    if item.action == "would import":
        return f"would import message {item.message_id or '?'}{target}"
    return f"imported {item.id} (message {item.message_id or '?'}{target})"
