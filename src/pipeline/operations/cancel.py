"""Cancelling documents: stop their work and fail them, keeping everything they made.

One transaction per document, in the lock order of ``engine.transitions``: the document
first, then its stage rows. Every unfinished row fails with the cancellation as its
error, every row moves to a new generation (so an attempt still running, or any
message in flight, is stale: its completion is refused and it writes nothing), and the
document fails with the reason, which writes its ``document_failed`` event. Nothing is
erased: a rerun from any stage starts it again (``pipeline rerun``), unlike a delete.

A document already finished (or deleted) is skipped; a dry run reads and locks nothing.
"""

from __future__ import annotations

import uuid
from typing import Any

from sqlalchemy import Engine, select

from pipeline.db.models import Document
from pipeline.engine import transitions
from pipeline.operations.common import (
    ItemOutcome,
    NotFound,
    OperationReport,
    RunContext,
    audit,
    describe_selection,
    open_item,
    run_items,
)
from pipeline.operations.requests import DocumentSelection
from pipeline.operations.rerun import select_documents
from pipeline.statuses import UNFINISHED_DOCUMENT_STATUSES


class CancelRequest(DocumentSelection, frozen=True):
    """Which documents to cancel (``ids`` or a ``filter``), and why."""


class CancelService:
    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    def select(self, request: CancelRequest, tenant: str | None = None) -> list[uuid.UUID]:
        """The documents to act on (see ``select_documents``)."""
        return select_documents(self.engine, request, UNFINISHED_DOCUMENT_STATUSES, tenant)

    def cancel(self, request: CancelRequest, run: RunContext) -> OperationReport:
        by = f"{run.operator.via}:{run.operator.name}"
        detail = audit(run.operator, request.reason, describe_selection(request))

        def cancel_one(document_id: uuid.UUID) -> ItemOutcome:
            return self._cancel_one(document_id, request, by, detail, run.tenant)

        return run_items(self.select(request, run.tenant), cancel_one, run, dry_run=request.dry_run)

    def _cancel_one(
        self,
        document_id: uuid.UUID,
        request: CancelRequest,
        by: str,
        detail: dict[str, Any],
        tenant: str | None,
    ) -> ItemOutcome:
        query = select(Document.status, Document.generation).where(
            Document.id == document_id, *([] if tenant is None else [Document.tenant == tenant])
        )
        with open_item(self.engine, request.dry_run) as conn:
            found = conn.execute(
                query if request.dry_run else query.with_for_update(key_share=True)
            ).first()
            if found is None or found.status == "deleted":
                return NotFound(id=document_id, action="skipped", detail="no such document")
            if found.status not in UNFINISHED_DOCUMENT_STATUSES:
                return _item(document_id, "skipped", f"already {found.status}")
            if request.dry_run:
                return _item(document_id, "would cancel", f"{found.status}")
            generation = found.generation + 1
            rows = conn.execute(transitions.cancel_rows(document_id, generation, by)).all()
            stopped = [row.stage for row in rows if row.status == "failed"]
            why = f"cancelled by {by}" + (f": {request.reason}" if request.reason else "")
            conn.execute(  # before the outcome the document's update writes (its trigger)
                transitions.document_event(
                    document_id, generation, "cancelled", {**detail, "stopped": stopped}
                )
            )
            conn.execute(transitions.document_cancelled(document_id, generation, why))
        return _item(document_id, "cancelled", f"stopped {', '.join(stopped) or 'nothing'}")


def _item(document_id: uuid.UUID, action: Any, detail: str) -> ItemOutcome:
    return ItemOutcome(id=document_id, action=action, detail=detail, document_id=document_id)
