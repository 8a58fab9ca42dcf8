"""``pipeline rerun``: run documents again from a chosen stage.

Parses the selection, calls :class:`~pipeline.operations.rerun.RerunService` and
prints what it did.
"""

from __future__ import annotations

import functools
import uuid
from datetime import datetime
from typing import Final, Literal

import click

from pipeline.cli.output import (
    DOCUMENT_ID,
    DRY_RUN_OPTION,
    LIMIT_OPTION,
    REASON_OPTION,
    TENANT_OPTION,
    YES_OPTION,
    broker_for,
    confirm_bulk,
    database,
    describe_item,
    finish,
    load_settings,
    rate_option,
    run_with_progress,
)
from pipeline.cli.timeparse import TIME
from pipeline.engine.dispatch import Dispatcher
from pipeline.operations.common import ItemOutcome, Operator
from pipeline.operations.rerun import DocumentFilter, DocumentSelection, RerunService
from pipeline.stages import STAGES, StageName

DocumentStatus = Literal["pending", "processing", "succeeded", "failed"]
DOCUMENT_STATUSES: Final = ("pending", "processing", "succeeded", "failed")


@click.command()
@click.argument("document_ids", nargs=-1, metavar="[DOCUMENT_ID]...", type=DOCUMENT_ID)
@click.option(
    "--from-stage",
    required=True,
    type=click.Choice(STAGES),
    help="Run this stage and every later one again; earlier ones keep their output.",
)
@click.option("--status", type=click.Choice(DOCUMENT_STATUSES), help="Documents in this state.")
@click.option(
    "--stage",
    type=click.Choice(STAGES),
    help="Documents whose STAGE is dead (the stage where they failed).",
)
@click.option("--since", type=TIME, help="Documents uploaded at or after TIME.")
@click.option("--until", type=TIME, help="Documents uploaded before TIME.")
@TENANT_OPTION
@DRY_RUN_OPTION
@rate_option("re-runs")
@LIMIT_OPTION
@REASON_OPTION
@YES_OPTION
def rerun(
    document_ids: tuple[uuid.UUID, ...],
    from_stage: StageName,
    status: DocumentStatus | None,
    stage: StageName | None,
    since: datetime | None,
    until: datetime | None,
    tenant: str | None,
    dry_run: bool,
    rate: float | None,
    limit: int | None,
    reason: str | None,
    yes: bool,
) -> None:
    """Re-run documents from a stage, by id or by filter.

    Re-runs the given DOCUMENT_IDs, or the documents the filters select. Each document
    moves to a new generation: messages of the earlier run still in flight are dropped,
    the chosen stage and those after it start again, and the document's chunks stay
    searchable until the index stage replaces them. Every stage before --from-stage must
    have succeeded. Exits 1 if any document was skipped.
    """
    selection = document_selection(
        document_ids,
        limit,
        status=status,
        stage=stage,
        since=since,
        until=until,
    )
    settings = load_settings()
    with database(settings, "rerun") as engine, broker_for(settings) as broker:
        service = RerunService(engine, Dispatcher(broker), settings)
        # Counted only to confirm: the service gets the selection itself, so that
        # the audit trail records the filter the operator gave.
        count = len(service.select(selection, tenant))
        if count == 0:
            click.echo("no documents match")
            return
        confirm_bulk(
            count,
            f"re-run {count} documents from {from_stage}?",
            threshold=settings.operations.confirm_threshold,
            yes=yes,
            dry_run=dry_run,
        )
        report = run_with_progress(
            "re-running",
            functools.partial(
                service.rerun,
                selection,
                from_stage,
                Operator.from_cli(),
                dry_run=dry_run,
                rate=rate,
                reason=reason,
                tenant=tenant,
            ),
        )
    finish(report, describe_document, done="re-ran", would="would rerun")


def document_selection(
    document_ids: tuple[uuid.UUID, ...],
    limit: int | None,
    *,
    status: DocumentStatus | None,
    stage: StageName | None,
    since: datetime | None,
    until: datetime | None,
) -> DocumentSelection:
    flags = {"--status": status, "--stage": stage, "--since": since, "--until": until}
    given = [flag for flag, value in flags.items() if value is not None]
    if document_ids and given:
        raise click.UsageError(f"give document ids or {', '.join(given)}, not both")
    if document_ids:
        return DocumentSelection(ids=list(document_ids), limit=limit)
    if not given:
        raise click.UsageError(
            "give document ids, or select documents with at least one of "
            "--status, --stage, --since, --until"
        )
    if since is not None and until is not None and since >= until:
        raise click.UsageError("--since must be before --until")
    document_filter = DocumentFilter(status=status, stage=stage, since=since, until=until)
    return DocumentSelection(filter=document_filter, limit=limit)


def describe_document(item: ItemOutcome) -> str:
    if item.action in ("skipped", "failed"):
        return describe_item(item, "")
    return describe_item(item, f" from {item.stage} ({item.detail})")
