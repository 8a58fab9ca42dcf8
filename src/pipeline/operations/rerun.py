"""Re-running documents from a chosen stage (for example after changing the chunker).

A rerun bumps the document's ``generation`` so that every message of the earlier run
still in flight is dropped as stale, resets the chosen stage and those after it, carries
the stages before it over to the new generation as they are (succeeded, their outputs
kept: every row of a document is always at its generation), and sends the chosen
stage's message. The document's chunks stay searchable until the index stage replaces them.
"""

from __future__ import annotations

import functools
import logging
import time
import uuid
from collections.abc import Callable
from datetime import timedelta
from typing import Any, Literal

from sqlalchemy import Connection, Engine, Select, exists, select, update

from pipeline.db.models import DeadLetter, Document, StageRun
from pipeline.engine import transitions
from pipeline.engine.dispatch import Dispatcher
from pipeline.messages import StageMessage
from pipeline.operations.common import (
    Heartbeat,
    ItemOutcome,
    OperationReport,
    Operator,
    Pacer,
    Progress,
    Selection,
    TimeFilter,
    audit,
    carry_out,
    open_item,
    report,
)
from pipeline.settings import Settings
from pipeline.stages import STAGES, StageName

logger = logging.getLogger(__name__)


class DocumentFilter(TimeFilter, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """Which documents to re-run (``since``/``until``: upload time); every field narrows."""

    status: Literal["pending", "processing", "succeeded", "failed"] | None = None
    stage: StageName | None = None
    """Only documents whose row for this stage is dead (where they failed)."""

    def where(self) -> list[Any]:
        conditions: list[Any] = []
        if self.status is not None:
            conditions.append(Document.status == self.status)
        if self.stage is not None:
            conditions.append(
                exists().where(
                    StageRun.document_id == Document.id,
                    StageRun.stage == self.stage,
                    StageRun.status == "dead",
                )
            )
        if self.since is not None:
            conditions.append(Document.created_at >= self.since)
        if self.until is not None:
            conditions.append(Document.created_at < self.until)
        return conditions


class DocumentSelection(Selection, frozen=True, kw_only=True, forbid_unknown_fields=True):
    filter: DocumentFilter | None = None


class RerunService:
    def __init__(
        self,
        engine: Engine,
        dispatcher: Dispatcher,
        settings: Settings,
        *,
        sleep: Callable[[float], None] | None = None,
    ) -> None:
        self.engine = engine
        self.dispatcher = dispatcher
        self.grace = timedelta(milliseconds=settings.stages.queued_grace_ms)
        self.sleep = sleep

    def select(self, selection: DocumentSelection, tenant: str | None = None) -> list[uuid.UUID]:
        """The documents to act on; explicit ids are checked (and tenant-bound) one by one."""
        if selection.ids is not None:
            return list(dict.fromkeys(selection.ids))[: selection.limit]
        assert selection.filter is not None
        query = (
            select(Document.id)
            .where(*selection.filter.where(), *_of_tenant(tenant))
            .order_by(Document.created_at, Document.id)
        )
        if selection.limit is not None:
            query = query.limit(selection.limit)
        with self.engine.connect() as conn:
            return list(conn.execute(query).scalars())

    def rerun(
        self,
        selection: DocumentSelection,
        from_stage: StageName,
        operator: Operator,
        *,
        dry_run: bool = False,
        rate: float | None = None,
        reason: str | None = None,
        progress: Progress | None = None,
        on_selected: Callable[[int], None] | None = None,
        tenant: str | None = None,
        heartbeat: Heartbeat | None = None,
    ) -> OperationReport:
        """Re-run the selected documents (only ``tenant``'s, if given).

        Paced at ``rate`` per second (default: ``operations.DEFAULT_RATE``).
        """
        pacer = Pacer(rate, sleep=self.sleep, heartbeat=heartbeat)
        detail = {**audit(operator, reason, selection.describe()), "from_stage": from_stage}
        chosen = self.select(selection, tenant)
        if on_selected:
            on_selected(len(chosen))
        items = []
        for document_id in chosen:
            if not dry_run:
                pacer.wait()
            act = functools.partial(
                self._rerun_one, document_id, from_stage, detail, dry_run=dry_run, tenant=tenant
            )
            item = carry_out(document_id, act, sleep=self.sleep or time.sleep)
            items.append(item)
            if progress:
                progress(item)
        return report(dry_run, items)

    def _rerun_one(
        self,
        document_id: uuid.UUID,
        from_stage: StageName,
        detail: dict[str, Any],
        *,
        dry_run: bool,
        tenant: str | None,
    ) -> ItemOutcome:
        position = STAGES.index(from_stage)
        # Lock order (engine.transitions): the document, then its stage rows, then its letters.
        # A dry run reads, and locks nothing: it must never hold up live work.
        query = _generation(document_id, tenant)
        with open_item(self.engine, dry_run) as conn:
            generation = conn.execute(
                query if dry_run else query.with_for_update(key_share=True)
            ).scalar_one_or_none()
            if generation is None:
                return ItemOutcome(id=document_id, action="skipped", detail="no such document")
            # Read under the document's lock: no other writer can change its rows now.
            refusal = _earlier_stages_refusal(conn, document_id, position)
            if refusal is not None:
                return _item(document_id, from_stage, "skipped", refusal)
            change = f"generation {generation} → {generation + 1}"
            if dry_run:
                return _item(document_id, from_stage, "would rerun", change)
            message = StageMessage(document_id, from_stage, generation + 1)
            envelope = self.dispatcher.build(message)
            conn.execute(transitions.document_reopened(document_id, message.generation))
            conn.execute(transitions.carry_over(document_id, position, message.generation))
            conn.execute(transitions.reset_after(document_id, position, message.generation))
            conn.execute(transitions.queue(message, envelope.message_id, self.grace))
            superseded = (
                conn.execute(
                    # The new run replaces the failed one: its dead letters are settled.
                    update(DeadLetter)
                    .where(DeadLetter.document_id == document_id, DeadLetter.status == "dead")
                    .values(status="discarded")
                    .returning(DeadLetter.id)
                )
                .scalars()
                .all()
            )
            conn.execute(
                transitions.event(
                    message,
                    "rerun",
                    None,
                    envelope.message_id,
                    {
                        **detail,
                        "previous_generation": generation,
                        "discarded_dead_letters": [str(i) for i in superseded],
                    },
                )
            )
        self.dispatcher.send_after_commit(envelope)
        return _item(document_id, from_stage, "rerun", change, envelope.message_id)


def _generation(document_id: uuid.UUID, tenant: str | None) -> Select[int]:
    return select(Document.generation).where(Document.id == document_id, *_of_tenant(tenant))


def _of_tenant(tenant: str | None) -> list[Any]:
    """Another tenant's document is, to this tenant, no document at all."""
    return [] if tenant is None else [Document.tenant == tenant]


def _earlier_stages_refusal(conn: Connection, document_id: uuid.UUID, position: int) -> str | None:
    """A rerun needs every earlier stage's output: they must have succeeded."""
    unfinished = (
        conn.execute(
            select(StageRun.stage)
            .where(
                StageRun.document_id == document_id,
                StageRun.position < position,
                StageRun.status != "succeeded",
            )
            .order_by(StageRun.position)
        )
        .scalars()
        .first()
    )
    if unfinished is None:
        return None
    return f"{unfinished} has not succeeded; rerun from {unfinished} or an earlier stage"


def _item(
    document_id: uuid.UUID, stage: str, action: Any, detail: str, message_id: str | None = None
) -> ItemOutcome:
    return ItemOutcome(
        id=document_id,
        action=action,
        detail=detail,
        document_id=document_id,
        stage=stage,
        message_id=message_id,
    )
