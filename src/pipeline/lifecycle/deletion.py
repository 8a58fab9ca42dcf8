"""Deleting documents: erase the content, stop the work, keep a tombstone.

One implementation for ``DELETE /documents/{id}`` and ``pipeline documents delete``.
Each document is deleted in one transaction of its own, in the lock order of
``engine.transitions``: the document ``FOR NO KEY UPDATE``, then its stage rows (deleted),
then its dead letters (``discarded``: nothing replays a deleted document); then its
bytes, text, artifacts and chunks are erased and the row becomes the tombstone
(``transitions.tombstone``: status ``deleted``, by, when, why, a new generation).

Why this stops work in flight: a stage's completion takes the document lock first
(``SUCCEED_SQL``) and is fenced on its stage row, so one that was running when the
document was deleted waits for the delete to commit, finds no row, rolls back and writes
nothing (a ``superseded`` event says so); a message that arrives later finds no row to
claim and is dropped with the reason "the document was deleted". The document answers
``404`` at once, and its chunks leave search in the delete's own commit.

A dry run reads, locks nothing, and says what would be deleted.
"""

from __future__ import annotations

import logging
import uuid
from typing import Any

from sqlalchemy import Engine, select

from pipeline.db.models import Document
from pipeline.engine import transitions
from pipeline.operations.common import (
    ItemOutcome,
    NotFound,
    OperationReport,
    Operator,
    RunContext,
    open_item,
    run_items,
)
from pipeline.operations.requests import DocumentSelection
from pipeline.operations.rerun import select_documents
from pipeline.statuses import LIVE_DOCUMENT_STATUSES

logger = logging.getLogger(__name__)


class DeleteRequest(DocumentSelection, frozen=True):
    """Which documents to delete (``ids`` or a ``filter``), and why."""


def deleted_by(operator: Operator) -> str:
    """How a tombstone names who deleted the document: ``api:<tenant>/<key prefix>@host``
    or ``cli:<user>@host``."""
    return f"{operator.via}:{operator.name}"


class DeletionService:
    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    def select(self, request: DeleteRequest, tenant: str | None = None) -> list[uuid.UUID]:
        """The documents to act on (see ``select_documents``)."""
        return select_documents(self.engine, request, LIVE_DOCUMENT_STATUSES, tenant)

    def delete(self, request: DeleteRequest, run: RunContext) -> OperationReport:
        """Delete the selected documents (only ``run.tenant``'s, if given), each in its
        own transaction; a document that does not exist, is another tenant's or is
        already deleted is skipped as not found."""
        by = deleted_by(run.operator)

        def delete_one(document_id: uuid.UUID) -> ItemOutcome:
            return self._delete_one(document_id, request, by, run.tenant)

        chosen = self.select(request, run.tenant)
        return run_items(chosen, delete_one, run, dry_run=request.dry_run)

    def _delete_one(
        self, document_id: uuid.UUID, request: DeleteRequest, by: str, tenant: str | None
    ) -> ItemOutcome:
        query = select(Document.status, Document.generation, Document.filename).where(
            Document.id == document_id, *([] if tenant is None else [Document.tenant == tenant])
        )
        with open_item(self.engine, request.dry_run) as conn:
            # Step 1 of the lock order; a dry run only reads.
            found = conn.execute(
                query if request.dry_run else query.with_for_update(key_share=True)
            ).first()
            if found is None or found.status == "deleted":
                return NotFound(id=document_id, action="skipped", detail="no such document")
            was = f"{found.status}, generation {found.generation}"
            if request.dry_run:
                return _item(document_id, "would delete", was)
            conn.execute(transitions.drop_stage_rows(document_id))
            letters = conn.execute(transitions.letters_of_deleted(document_id)).scalars().all()
            for statement in transitions.erase_content(document_id):
                conn.execute(statement)
            conn.execute(transitions.tombstone(document_id, by, request.reason))
        detail = was + (f"; discarded {len(letters)} dead letter(s)" if letters else "")
        logger.info("deleted document %s (%s) for %s", document_id, detail, by)
        return _item(document_id, "deleted", detail)


def _item(document_id: uuid.UUID, action: Any, detail: str) -> ItemOutcome:
    return ItemOutcome(id=document_id, action=action, detail=detail, document_id=document_id)
