"""Re-running documents from a chosen stage (for example after changing the chunker).

A rerun bumps the document's ``generation`` so that every message of the earlier run
still in flight is dropped as stale, resets the chosen stage and those after it, carries
the stages before it over to the new generation as they are (succeeded, their outputs
kept: every row of a document is always at its generation), and sends the chosen
stage's message. The document's chunks stay searchable until the index stage replaces them.
"""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any, Protocol

from sqlalchemy import Connection, Engine, Row, Select, exists, select

from pipeline.db.models import Document, DocumentBlob, StageRun
from pipeline.engine import transitions
from pipeline.engine.dispatch import Dispatcher
from pipeline.messages import StageMessage
from pipeline.operations.common import (
    ItemOutcome,
    NotFound,
    OperationReport,
    Pacer,
    RunContext,
    TimeFilter,
    audit,
    describe_selection,
    open_item,
    run_items,
)
from pipeline.settings import Settings
from pipeline.stages import Pipeline, StageName
from pipeline.stages.artifacts import UPLOAD
from pipeline.statuses import LIVE_DOCUMENT_STATUSES, DocumentStatus, ItemAction

if TYPE_CHECKING:  # requests.py builds its RerunRequest on this module's DocumentFilter
    from pipeline.operations.requests import RerunRequest

logger = logging.getLogger(__name__)


class DocumentFilter(TimeFilter, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """Which documents to re-run (``since``/``until``: upload time); every field narrows."""

    status: DocumentStatus | None = None
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


class SelectsDocuments(Protocol):
    """A request that names documents: ``ids``, or a ``filter`` (and a ``limit``)."""

    @property
    def ids(self) -> list[uuid.UUID] | None: ...
    @property
    def filter(self) -> DocumentFilter | None: ...
    @property
    def limit(self) -> int | None: ...


def select_documents(
    engine: Engine,
    request: SelectsDocuments,
    statuses: tuple[str, ...],
    tenant: str | None,
) -> list[uuid.UUID]:
    """The documents a request names: its ``ids`` as given (each is checked, and bound
    to the tenant, when it is acted on), or the documents in ``statuses`` its filter
    matches (only ``tenant``'s, if given), oldest first, up to its ``limit``. A plain read."""
    if request.ids is not None:
        return list(dict.fromkeys(request.ids))[: request.limit]
    assert request.filter is not None
    query = (
        select(Document.id)
        .where(*request.filter.where(), Document.status.in_(statuses), *_of_tenant(tenant))
        .order_by(Document.created_at, Document.id)
    )
    if request.limit is not None:
        query = query.limit(request.limit)
    with engine.connect() as conn:
        return list(conn.execute(query).scalars())


class RerunService:
    def __init__(
        self,
        engine: Engine,
        dispatcher: Dispatcher,
        settings: Settings,
        definition: Pipeline,
        *,
        sleep: Callable[[float], None] | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.engine = engine
        self.dispatcher = dispatcher
        self.grace = timedelta(milliseconds=settings.stages.queued_grace_ms)
        self.definition = definition
        self.sleep = sleep
        self.clock = clock

    def select(self, request: RerunRequest, tenant: str | None = None) -> list[uuid.UUID]:
        """The documents to act on; explicit ids are checked (and tenant-bound) one by one."""
        return select_documents(self.engine, request, LIVE_DOCUMENT_STATUSES, tenant)

    def rerun(self, request: RerunRequest, run: RunContext) -> OperationReport:
        """Re-run the selected documents (only ``run.tenant``'s, if given).

        Paced at ``request.rate`` per second (default: ``operations.DEFAULT_RATE``).
        Raises :class:`~pipeline.stages.UnknownStage` for a stage the active definition
        does not have (no worker would run it).
        """
        self.definition.spec(request.from_stage)
        pacer = Pacer(request.rate, self.clock, self.sleep, heartbeat=run.heartbeat)
        detail = {
            **audit(run.operator, request.reason, describe_selection(request)),
            "from_stage": request.from_stage,
            **({"to_plan": self.definition.version} if request.to_current_plan else {}),
        }

        def rerun_one(document_id: uuid.UUID) -> ItemOutcome:
            return self._rerun_one(document_id, request, detail, run.tenant)

        chosen = self.select(request, run.tenant)
        return run_items(
            chosen, rerun_one, run, dry_run=request.dry_run, pacer=pacer, sleep=self.sleep
        )

    def _replan_refusal(self, plan: list[str], from_stage: str) -> str | None:
        """Why the document cannot move onto the current plan from ``from_stage``: the
        stages before it must be the current plan's, in its order (their outputs are
        kept, so they must be the ones the later stages expect)."""
        current = list(self.definition.names)
        cut = current.index(from_stage)
        if plan[:cut] == current[:cut]:
            return None
        differ = next(
            (i for i, name in enumerate(current[:cut]) if i >= len(plan) or plan[i] != name),
            cut,
        )
        return (
            f"the current plan runs {', '.join(current[:cut])} before {from_stage}, and this "
            f"document's plan does not; rerun it onto the current plan from "
            f"{current[differ]} or an earlier stage"
        )

    def _bytes_refusal(
        self, conn: Connection, document_id: uuid.UUID, stages: list[str]
    ) -> str | None:
        """A stage that reads the upload cannot run once retention removed the bytes."""
        reader = next(
            (
                name
                for name in stages
                if name in self.definition and UPLOAD in self.definition.spec(name).reads
            ),
            None,
        )
        if reader is None:
            return None
        stored = conn.execute(
            select(DocumentBlob.document_id).where(DocumentBlob.document_id == document_id)
        ).first()
        if stored is not None:
            return None
        return (
            f"the uploaded bytes were removed by retention (PIPELINE_RETENTION_BLOBS_S) "
            f"and {reader} reads them; rerun from a later stage, or upload the document again"
        )

    def _rerun_one(
        self,
        document_id: uuid.UUID,
        request: RerunRequest,
        detail: dict[str, Any],
        tenant: str | None,
    ) -> ItemOutcome:
        from_stage, dry_run = request.from_stage, request.dry_run
        # Lock order (engine.transitions): the document, then its stage rows, then its letters.
        # A dry run reads, and locks nothing: it must never hold up live work.
        query = _generation(document_id, tenant)
        with open_item(self.engine, dry_run) as conn:
            found = conn.execute(
                query if dry_run else query.with_for_update(key_share=True)
            ).first()
            if found is None:
                return NotFound(id=document_id, action="skipped", detail="no such document")
            if found.status == "deleted":
                return _item(document_id, from_stage, "skipped", _deleted(found))
            generation = found.generation
            # Read under the document's lock: no other writer can change its rows now.
            plan = _plan(conn, document_id)
            replan = request.to_current_plan and plan != list(self.definition.names)
            if replan:
                refusal = self._replan_refusal(plan, from_stage)
                if refusal is not None:
                    return _item(document_id, from_stage, "skipped", refusal)
                position = self.definition.names.index(from_stage)
            elif from_stage in plan:
                position = plan.index(from_stage)
            else:
                missing = (
                    f"the document's plan ({', '.join(plan)}) has no {from_stage} stage; "
                    "rerun it onto the current plan to add it"
                )
                return _item(document_id, from_stage, "skipped", missing)
            refusal = _earlier_stages_refusal(conn, document_id, position) or self._bytes_refusal(
                conn,
                document_id,
                plan[position:] if not replan else list(self.definition.names[position:]),
            )
            if refusal is not None:
                return _item(document_id, from_stage, "skipped", refusal)
            change = f"generation {generation} → {generation + 1}"
            if replan:
                change += f", onto plan {self.definition.version}"
            if dry_run:
                return _item(document_id, from_stage, "would rerun", change)
            message = StageMessage(document_id, from_stage, generation + 1)
            envelope = self.dispatcher.build(message)
            conn.execute(transitions.document_reopened(document_id, message.generation))
            if replan:
                later = list(self.definition.names[position:])
                conn.execute(transitions.drop_plan_from(document_id, position))
                conn.execute(
                    transitions.plan_rows(document_id, later, position, message.generation)
                )
                conn.execute(transitions.plan_version(document_id, self.definition.version))
            conn.execute(transitions.carry_over(document_id, position, message.generation))
            conn.execute(transitions.reset_after(document_id, position, message.generation))
            conn.execute(transitions.queue(message, envelope.message_id, self.grace))
            # The new run replaces the failed one: its dead letters are settled.
            superseded = conn.execute(transitions.letters_superseded(document_id)).scalars().all()
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


def _generation(
    document_id: uuid.UUID, tenant: str | None
) -> Select[int, DocumentStatus, datetime | None, str | None]:
    return select(
        Document.generation, Document.status, Document.deleted_at, Document.deleted_by
    ).where(Document.id == document_id, *_of_tenant(tenant))


def _deleted(found: Row[*tuple[Any, ...]]) -> str:
    """Why a deleted document is not re-run."""
    when = found.deleted_at.isoformat(timespec="seconds") if found.deleted_at else "?"
    return f"the document was deleted ({when}, by {found.deleted_by}): its content is erased"


def _of_tenant(tenant: str | None) -> list[Any]:
    """Another tenant's document is, to this tenant, no document at all."""
    return [] if tenant is None else [Document.tenant == tenant]


def _plan(conn: Connection, document_id: uuid.UUID) -> list[str]:
    """The document's own plan: its stage rows by position."""
    return list(
        conn.execute(
            select(StageRun.stage)
            .where(StageRun.document_id == document_id)
            .order_by(StageRun.position)
        ).scalars()
    )


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
    document_id: uuid.UUID,
    stage: str,
    action: ItemAction,
    detail: str,
    message_id: str | None = None,
) -> ItemOutcome:
    return ItemOutcome(
        id=document_id,
        action=action,
        detail=detail,
        document_id=document_id,
        stage=stage,
        message_id=message_id,
    )
