"""``pipeline documents delete|cancel``: erase documents (keeping tombstones), or stop them.

Parses the selection (the filter vocabulary of ``pipeline rerun``), calls
:class:`~pipeline.lifecycle.deletion.DeletionService` (the one ``DELETE /documents/{id}``
calls) or :class:`~pipeline.operations.cancel.CancelService` (``POST
/documents/{id}/cancel``'s) and prints what it did.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from datetime import datetime
from typing import Any, TypeVar

import click

from pipeline.cli.output import (
    DOCUMENT_ID,
    DRY_RUN_OPTION,
    LIMIT_OPTION,
    REASON_OPTION,
    TENANT_OPTION,
    YES_OPTION,
    confirm_bulk,
    database,
    describe_item,
    finish,
    load_settings,
    run_with_progress,
)
from pipeline.cli.rerun import document_selection
from pipeline.cli.stages import STAGE_NAME
from pipeline.cli.timeparse import TIME
from pipeline.lifecycle.deletion import DeleteRequest
from pipeline.operations.cancel import CancelRequest
from pipeline.operations.common import ItemOutcome, Operator, RunContext
from pipeline.stages import StageName
from pipeline.statuses import LIVE_DOCUMENT_STATUSES, LiveDocumentStatus
from pipeline.wiring import Wiring

F = TypeVar("F", bound=Callable[..., Any])


@click.group()
def documents() -> None:
    """Act on documents themselves (delete, cancel)."""


def selection_options(command: F) -> F:
    """The selection every document command takes: ids, or filters; and how to act."""
    for option in reversed(
        (
            click.argument("document_ids", nargs=-1, metavar="[DOCUMENT_ID]...", type=DOCUMENT_ID),
            click.option(
                "--status",
                type=click.Choice(LIVE_DOCUMENT_STATUSES),
                help="Documents in this state.",
            ),
            click.option(
                "--stage",
                type=STAGE_NAME,
                help="Documents whose STAGE is dead (the stage where they failed).",
            ),
            click.option("--since", type=TIME, help="Documents uploaded at or after TIME."),
            click.option("--until", type=TIME, help="Documents uploaded before TIME."),
            TENANT_OPTION,
            DRY_RUN_OPTION,
            LIMIT_OPTION,
            REASON_OPTION,
            YES_OPTION,
        )
    ):
        command = option(command)
    return command


@documents.command()
@selection_options
def delete(
    document_ids: tuple[uuid.UUID, ...],
    status: LiveDocumentStatus | None,
    stage: StageName | None,
    since: datetime | None,
    until: datetime | None,
    tenant: str | None,
    dry_run: bool,
    limit: int | None,
    reason: str | None,
    yes: bool,
) -> None:
    """Delete documents: erase their bytes, text, chunks and stage outputs.

    Deletes the given DOCUMENT_IDs, or the documents the filters select. Work in flight
    stops (its messages are dropped), the documents leave search at once, and each keeps
    a tombstone (who, when, --reason) with its events, for the audit trail. Each document
    is deleted in a transaction of its own. Exits 1 if any document was skipped (not
    found, or already deleted).
    """
    chosen_ids, chosen_filter = document_selection(
        document_ids, status=status, stage=stage, since=since, until=until
    )
    request = DeleteRequest(
        ids=chosen_ids, filter=chosen_filter, limit=limit, dry_run=dry_run, reason=reason
    )
    _act(
        "delete",
        request,
        tenant,
        yes,
        lambda wiring: wiring.deletion,
        question="delete {count} documents (their content is erased for good)?",
        doing="deleting",
        done="deleted",
    )


def describe_deleted(item: ItemOutcome) -> str:
    if item.action in ("skipped", "failed"):
        return describe_item(item, "")
    return describe_item(item, f" ({item.detail})")


@documents.command()
@selection_options
def cancel(
    document_ids: tuple[uuid.UUID, ...],
    status: LiveDocumentStatus | None,
    stage: StageName | None,
    since: datetime | None,
    until: datetime | None,
    tenant: str | None,
    dry_run: bool,
    limit: int | None,
    reason: str | None,
    yes: bool,
) -> None:
    """Cancel documents: stop their unfinished stages and fail them.

    Cancels the given DOCUMENT_IDs, or the unfinished documents the filters select. An
    attempt still running is fenced off (it writes nothing), the document fails with
    "cancelled by ...: --reason", and everything it made so far is kept: `pipeline rerun`
    starts it again. Exits 1 if any document was skipped (not found, or finished).
    """
    chosen_ids, chosen_filter = document_selection(
        document_ids, status=status, stage=stage, since=since, until=until
    )
    request = CancelRequest(
        ids=chosen_ids, filter=chosen_filter, limit=limit, dry_run=dry_run, reason=reason
    )
    _act(
        "cancel",
        request,
        tenant,
        yes,
        lambda wiring: wiring.cancel,
        question="cancel {count} documents?",
        doing="cancelling",
        done="cancelled",
    )


def _act(
    verb: str,
    request: Any,
    tenant: str | None,
    yes: bool,
    service_of: Callable[[Wiring], Any],
    *,
    question: str,
    doing: str,
    done: str,
) -> None:
    """Select, confirm a large selection, carry it out with progress, report."""
    settings = load_settings()
    with database(settings, f"documents-{verb}") as engine:
        service = service_of(Wiring(settings, engine=engine))
        count = len(service.select(request, tenant))
        if count == 0:
            click.echo("no documents match")
            return
        confirm_bulk(
            count,
            question.format(count=count),
            threshold=settings.operations.confirm_threshold,
            yes=yes,
            dry_run=request.dry_run,
        )
        run = RunContext(operator=Operator.from_cli(), tenant=tenant)
        report = run_with_progress(doing, getattr(service, verb), request, run)
    finish(report, describe_deleted, done=done, would=f"would {verb}")
