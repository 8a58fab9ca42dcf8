"""``pipeline rerun``: run documents again from a chosen stage.

Parses the selection, calls :class:`~pipeline.operations.rerun.RerunService` and
prints what it did.
"""

from __future__ import annotations

import uuid
from datetime import datetime

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
from pipeline.cli.stages import STAGE_NAME
from pipeline.cli.timeparse import TIME
from pipeline.operations.common import ItemOutcome, Operator, RunContext
from pipeline.operations.requests import RerunRequest
from pipeline.operations.rerun import DocumentFilter
from pipeline.stages import StageName
from pipeline.statuses import DOCUMENT_STATUSES, DocumentStatus
from pipeline.wiring import Wiring


@click.command()
@click.argument("document_ids", nargs=-1, metavar="[DOCUMENT_ID]...", type=DOCUMENT_ID)
@click.option(
    "--from-stage",
    required=True,
    type=STAGE_NAME,
    help="Run this stage and every later one again; earlier ones keep their output.",
)
@click.option("--status", type=click.Choice(DOCUMENT_STATUSES), help="Documents in this state.")
@click.option(
    "--stage",
    type=STAGE_NAME,
    help="Documents whose STAGE is dead (the stage where they failed).",
)
@click.option("--since", type=TIME, help="Documents uploaded at or after TIME.")
@click.option("--until", type=TIME, help="Documents uploaded before TIME.")
@TENANT_OPTION
@DRY_RUN_OPTION
@rate_option("re-runs")
@click.option(
    "--to-current-plan",
    is_flag=True,
    help="Move each document onto the active definition's stages from --from-stage on "
    "(`pipeline stages`); without it a document re-runs the plan it was accepted with.",
)
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
    to_current_plan: bool,
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
    chosen_ids, chosen_filter = document_selection(
        document_ids, status=status, stage=stage, since=since, until=until
    )
    request = RerunRequest(
        from_stage=from_stage,
        ids=chosen_ids,
        filter=chosen_filter,
        limit=limit,
        dry_run=dry_run,
        rate=rate,
        reason=reason,
        to_current_plan=to_current_plan,
    )
    settings = load_settings()
    with database(settings, "rerun") as engine, broker_for(settings) as broker:
        service = Wiring(settings, engine=engine, broker=broker).rerun
        # Counted only to confirm: the service gets the request itself, so that
        # the audit trail records the filter the operator gave.
        count = len(service.select(request, tenant))
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
        run = RunContext(operator=Operator.from_cli(), tenant=tenant)
        report = run_with_progress("re-running", service.rerun, request, run)
    finish(report, describe_document, done="re-ran", would="would rerun")


def document_selection(
    document_ids: tuple[uuid.UUID, ...],
    *,
    status: DocumentStatus | None,
    stage: StageName | None,
    since: datetime | None,
    until: datetime | None,
) -> tuple[list[uuid.UUID] | None, DocumentFilter | None]:
    """The ``ids`` or the ``filter`` of the request (exactly one of them is not None)."""
    flags = {"--status": status, "--stage": stage, "--since": since, "--until": until}
    given = [flag for flag, value in flags.items() if value is not None]
    if document_ids and given:
        raise click.UsageError(f"give document ids or {', '.join(given)}, not both")
    if document_ids:
        return list(document_ids), None
    if not given:
        raise click.UsageError(
            "give document ids, or select documents with at least one of "
            "--status, --stage, --since, --until"
        )
    if since is not None and until is not None and since >= until:
        raise click.UsageError("--since must be before --until")
    return None, DocumentFilter(status=status, stage=stage, since=since, until=until)


def describe_document(item: ItemOutcome) -> str:
    if item.action in ("skipped", "failed"):
        return describe_item(item, "")
    return describe_item(item, f" from {item.stage} ({item.detail})")
