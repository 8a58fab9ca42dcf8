"""Replaying and discarding dead letters, and importing Dramatiq's own from Redis.

Replaying a stage's dead letter re-enqueues its original message (same actor, queue
and arguments) as a new message with its retry count reset, puts the stage row back
to ``queued`` and the document to ``processing``, and marks the letter ``replayed``
with the new message id. If the stage dies again, the same letter becomes ``dead``
again with its ``replay_count`` kept. Every action appends an audited event.
"""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Callable, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

import dramatiq
import msgspec
from sqlalchemy import Connection, Engine, select
from sqlalchemy.engine import Row

from pipeline.db.models import DeadLetter, Document, StageRun
from pipeline.engine import transitions
from pipeline.engine.dispatch import Dispatcher
from pipeline.messages import StageMessage
from pipeline.operations.common import (
    ItemOutcome,
    NotFound,
    OperationReport,
    Operator,
    Pacer,
    RunContext,
    audit,
    describe_selection,
    open_item,
    report,
    run_items,
)
from pipeline.operations.dead_letters import matching, of_tenant
from pipeline.operations.requests import DiscardRequest, ReplayRequest
from pipeline.settings import Settings
from pipeline.stages import Pipeline
from pipeline.statuses import ItemAction, StageEventName
from pipeline.webhooks import messages as webhook_messages
from pipeline.webhooks import outbox
from pipeline.webhooks.messages import WEBHOOKS_QUEUE

logger = logging.getLogger(__name__)


class ReplayService:
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
        self.definition = definition
        self.engine = engine
        self.dispatcher = dispatcher
        self.grace = timedelta(milliseconds=settings.stages.queued_grace_ms)
        self.namespace = settings.broker.namespace
        self.sleep = sleep
        self.clock = clock

    def select(
        self, request: ReplayRequest | DiscardRequest, tenant: str | None = None
    ) -> list[uuid.UUID]:
        """The letters to act on; explicit ids are checked (and tenant-bound) item by item."""
        if request.ids is not None:
            return list(dict.fromkeys(request.ids))[: request.limit]
        assert request.filter is not None
        query = matching(request.filter, request.limit, tenant=tenant)
        with self.engine.connect() as conn:
            return list(conn.execute(query).scalars())

    # -- replay --------------------------------------------------------------------------

    def replay(self, request: ReplayRequest, run: RunContext) -> OperationReport:
        """Replay the selected letters (only ``run.tenant``'s documents' letters, if given).

        Paced at ``request.rate`` per second (default: ``operations.DEFAULT_RATE``).
        """
        pacer = Pacer(request.rate, self.clock, self.sleep, heartbeat=run.heartbeat)
        detail = audit(run.operator, request.reason, describe_selection(request))

        def replay_one(letter_id: uuid.UUID) -> ItemOutcome:
            return self._replay_one(letter_id, request, detail, run.tenant)

        chosen = self.select(request, run.tenant)
        return run_items(
            chosen, replay_one, run, dry_run=request.dry_run, pacer=pacer, sleep=self.sleep
        )

    def _unknown_stage(self, letter: Row[Any]) -> str | None:
        """A letter of a stage the active definition no longer has: no worker would run it."""
        if letter.stage is None or letter.stage in self.definition:
            return None
        return (
            f"the active pipeline definition has no {letter.stage} stage (no worker runs it); "
            "rerun the document onto the current plan instead"
        )

    def _replay_one(
        self,
        letter_id: uuid.UUID,
        request: ReplayRequest,
        detail: dict[str, Any],
        tenant: str | None,
    ) -> ItemOutcome:
        dry_run = request.dry_run
        # A dry run reads, and locks nothing: it must never hold up live work.
        with open_item(self.engine, dry_run) as conn:
            letter = _hold_letter(conn, letter_id, tenant, lock=not dry_run)
            refusal = _refuse(letter, request.force, "replay")
            if refusal is None and letter is not None and letter.queue_name == WEBHOOKS_QUEUE:
                # What kind of letter: a webhook delivery's is re-armed, not re-sent as is.
                outcome, envelope = self._rearm_webhook(conn, letter, request, detail)
            else:
                outcome, envelope = self._replay_stage(
                    conn, letter_id, letter, refusal, request, detail
                )
        if envelope is not None:
            self.dispatcher.send_after_commit(envelope)
        return outcome

    def _rearm_webhook(
        self, conn: Connection, letter: Row[Any], request: ReplayRequest, detail: dict[str, Any]
    ) -> tuple[ItemOutcome, dramatiq.Message[Any] | None]:
        """A dead webhook delivery is due again with a fresh attempt budget (the document,
        held by ``_hold_letter``, then the delivery, then the letter: the lock order)."""
        delivery_id = webhook_messages.delivery_of(letter.message)
        if delivery_id is None:
            return _skipped(letter.id, letter, "the original message could not be decoded"), None
        if request.dry_run:
            return _outcome(letter, "would replay", "the delivery would be re-armed"), None
        envelope = webhook_messages.build(delivery_id)
        rearmed = conn.execute(
            outbox.rearm(delivery_id, envelope.message_id, self.grace, force=request.force)
        ).first()
        if rearmed is None:
            reason = "the delivery no longer exists (its endpoint was removed) or is not dead"
            return _skipped(letter.id, letter, reason), None
        conn.execute(transitions.letter_replayed(letter.id, envelope.message_id))
        _audit(
            conn,
            letter,
            "replayed",
            envelope.message_id,
            {**detail, "webhook_delivery": str(delivery_id)},
        )
        return _outcome(
            letter, "replayed", "webhook delivery re-armed", envelope.message_id
        ), envelope

    def _replay_stage(
        self,
        conn: Connection,
        letter_id: uuid.UUID,
        letter: Row[Any] | None,
        refusal: str | None,
        request: ReplayRequest,
        detail: dict[str, Any],
    ) -> tuple[ItemOutcome, dramatiq.Message[Any] | None]:
        dry_run = request.dry_run
        if refusal is None and letter is not None:
            refusal = self._unknown_stage(letter) or _stage_refusal(conn, letter)
        if refusal is not None or letter is None:
            return _skipped(letter_id, letter, refusal or "no such dead letter"), None
        envelope = _envelope(letter, self.dispatcher)
        if envelope is None:
            reason = "the original message could not be decoded"
            return _skipped(letter_id, letter, reason), None
        if dry_run:
            return _outcome(letter, "would replay", "the original message would be re-sent"), None
        if letter.document_id is not None:
            # Lock order: the document (held), its stage row, then the letter.
            message = StageMessage(letter.document_id, letter.stage, letter.generation)
            conn.execute(transitions.queue(message, envelope.message_id, self.grace))
            conn.execute(transitions.document_reopened(letter.document_id, letter.generation))
        conn.execute(transitions.letter_replayed(letter.id, envelope.message_id))
        _audit(conn, letter, "replayed", envelope.message_id, detail)
        return _outcome(letter, "replayed", "re-sent", envelope.message_id), envelope

    # -- discard -------------------------------------------------------------------------

    def discard(self, request: DiscardRequest, run: RunContext) -> OperationReport:
        """Discard the selected letters (only ``run.tenant``'s documents' letters, if given)."""
        detail = audit(run.operator, request.reason, describe_selection(request))

        def discard_one(letter_id: uuid.UUID) -> ItemOutcome:
            return self._discard_one(letter_id, request, detail, run.tenant)

        chosen = self.select(request, run.tenant)
        return run_items(chosen, discard_one, run, dry_run=request.dry_run, sleep=self.sleep)

    def _discard_one(
        self,
        letter_id: uuid.UUID,
        request: DiscardRequest,
        detail: dict[str, Any],
        tenant: str | None,
    ) -> ItemOutcome:
        dry_run = request.dry_run
        with open_item(self.engine, dry_run) as conn:  # a dry run: reads only, no locks
            letter = _hold_letter(conn, letter_id, tenant, lock=not dry_run)
            refusal = _refuse(letter, request.force, "discard")
            if refusal is not None or letter is None:
                return _skipped(letter_id, letter, refusal or "no such dead letter")
            if dry_run:
                return _outcome(letter, "would discard", "would be marked discarded")
            conn.execute(transitions.letter_discarded(letter.id))
            _audit(conn, letter, "discarded", None, detail)
        return _outcome(letter, "discarded", "marked discarded")

    # -- import --------------------------------------------------------------------------

    def import_from_redis(
        self,
        client: Any,
        operator: Operator,
        *,
        queues: Sequence[str],
        dry_run: bool = False,
    ) -> OperationReport:
        """Copy messages in Dramatiq's Redis dead-letter sets (``<queue>.XQ``) to Postgres.

        Letters already in Postgres (same queue and message id) are skipped, so the
        import can run any number of times.
        """
        detail = audit(operator, "import from Redis", {"queues": list(queues)})
        items = []
        for queue in queues:
            key = f"{self.namespace}:{queue}.XQ"
            for member, score in client.zscan_iter(key):
                raw = client.hget(f"{key}.msgs", member)
                if raw is None:
                    continue
                redis_id = member.decode() if isinstance(member, bytes) else str(member)
                entry = _parse_entry(raw, redis_id)
                items.append(self._import_one(queue, entry, score, detail, dry_run=dry_run))
        return report(dry_run, items)

    def _import_one(
        self,
        queue: str,
        entry: _Entry,
        score: float,
        detail: dict[str, Any],
        *,
        dry_run: bool,
    ) -> ItemOutcome:
        with self.engine.begin() as conn:
            existing = conn.execute(
                select(DeadLetter.id).where(
                    DeadLetter.queue_name == queue, DeadLetter.message_id == entry.message_id
                )
            ).scalar_one_or_none()
            target = _stage_target(conn, entry.message)
            letter_id = existing or uuid.uuid5(uuid.NAMESPACE_URL, f"{queue}/{entry.message_id}")
            outcome = ItemOutcome(
                id=letter_id,
                action="skipped",
                detail="already imported",
                document_id=target.document_id if target else None,
                stage=target.stage if target else None,
                message_id=entry.message_id,
            )
            if existing is not None:
                return outcome
            if dry_run:
                return msgspec.structs.replace(
                    outcome, action="would import", detail="would be imported"
                )
            if target is not None:  # lock order: the document before what references it
                conn.execute(transitions.lock_document(target.document_id))
            conn.execute(
                transitions.imported_letter(
                    id=letter_id,
                    document_id=target.document_id if target else None,
                    stage=target.stage if target else None,
                    generation=target.generation if target else None,
                    actor_name=entry.actor_name,
                    queue_name=queue,
                    message_id=entry.message_id,
                    message=entry.message,
                    error_type="DramatiqDeadLetter",
                    error_message=entry.error,
                    traceback=entry.traceback,
                    attempts=entry.attempts,
                    failed_at=datetime.fromtimestamp(score / 1000, tz=UTC),
                )
            )
            audited = {**detail, "dead_letter_id": str(letter_id)}
            if target is not None:
                conn.execute(transitions.event(target, "imported", None, entry.message_id, audited))
            else:  # undecodable, or naming no document: audited all the same
                conn.execute(
                    transitions.document_event(
                        None,
                        0,
                        "imported",
                        {**audited, "queue": queue},
                        message_id=entry.message_id,
                    )
                )
        return msgspec.structs.replace(outcome, action="imported", detail="imported")


class _Entry(msgspec.Struct, frozen=True):
    """One message of a Redis dead-letter set, read defensively."""

    message_id: str
    actor_name: str
    message: dict[str, Any]
    traceback: str | None
    error: str
    attempts: int


def _parse_entry(raw: bytes, redis_id: str) -> _Entry:
    """Whatever is in the set, keep it: undecodable bodies are kept raw, by Redis id."""
    try:
        message = msgspec.json.decode(raw)
    except msgspec.DecodeError:
        message = None
    if not isinstance(message, dict) or not isinstance(message.get("message_id"), str):
        raw_text = raw[:65536].decode(errors="replace")
        return _Entry(
            redis_id,
            "<undecodable>",
            {"raw": raw_text},
            None,
            "undecodable message imported from Dramatiq's Redis dead-letter set",
            1,
        )
    found = message.get("options")
    options: dict[str, Any] = found if isinstance(found, dict) else {}
    trace = options.get("traceback") if isinstance(options.get("traceback"), str) else None
    lines = trace.strip().splitlines() if trace else []
    retries = options.get("retries")
    attempts = 1 + retries if isinstance(retries, int) and retries >= 0 else 1
    return _Entry(
        message_id=message["message_id"],
        actor_name=str(message.get("actor_name") or "?"),
        message=message,
        traceback=trace,
        error=lines[-1] if lines else "imported from Dramatiq's Redis dead-letter set",
        attempts=attempts,
    )


def _read_letter(conn: Connection, letter_id: uuid.UUID, tenant: str | None) -> Row[Any] | None:
    """The letter, read without a lock; another tenant's letter is, to it, no letter."""
    return conn.execute(
        select(DeadLetter).where(DeadLetter.id == letter_id, *of_tenant(tenant))
    ).first()


def _hold_letter(
    conn: Connection, letter_id: uuid.UUID, tenant: str | None, *, lock: bool
) -> Row[Any] | None:
    """The letter, with what protects it locked, in the lock order of ``engine.transitions``
    (``lock=False``, for a dry run: just read).

    A letter of a document: the document is locked first (every writer of its stage
    rows and letters takes that lock), and the letter is then read afresh under it. A
    letter that names no document (poison) is locked itself.
    """
    if not lock:
        return _read_letter(conn, letter_id, tenant)
    found = conn.execute(
        select(DeadLetter.document_id).where(DeadLetter.id == letter_id, *of_tenant(tenant))
    ).first()
    if found is None:
        return None
    if found.document_id is not None:
        conn.execute(transitions.lock_document(found.document_id))
        return _read_letter(conn, letter_id, tenant)
    return conn.execute(
        select(DeadLetter)
        .where(DeadLetter.id == letter_id, *of_tenant(tenant))
        .with_for_update(key_share=True)
    ).first()


def _refuse(letter: Row[Any] | None, force: bool, verb: str) -> str | None:
    if letter is None:
        return "no such dead letter"
    if letter.status != "dead" and not force:
        return f"already {letter.status}; use force (--force) to {verb} it again"
    return None


def _stage_refusal(conn: Connection, letter: Row[Any]) -> str | None:
    """Why the stage row cannot be replayed, if it cannot."""
    if letter.document_id is None:
        target = _stage_target(conn, letter.message, known_only=False)
        if target is not None and not _document_exists(conn, target.document_id):
            return f"document {target.document_id} does not exist"
        return None
    row = conn.execute(
        select(StageRun.status, Document.generation)
        .join(Document, Document.id == StageRun.document_id)
        .where(StageRun.document_id == letter.document_id, StageRun.stage == letter.stage)
    ).first()
    if row is None:
        deleted = conn.execute(
            select(Document.id).where(
                Document.id == letter.document_id, Document.status == "deleted"
            )
        ).first()
        if deleted is not None:
            return "the document was deleted: its content is erased"
        return "the document no longer exists"
    if row.generation != letter.generation:
        return f"the document was re-run since (now generation {row.generation})"
    if row.status not in ("dead", "failed"):
        return f"the {letter.stage} stage is {row.status}, not dead"
    return None


def _envelope(letter: Row[Any], dispatcher: Dispatcher) -> dramatiq.Message[Any] | None:
    if letter.document_id is not None and letter.stage is not None:
        message = StageMessage(letter.document_id, letter.stage, letter.generation)
        return dispatcher.build(message)
    original = letter.message
    try:
        return dramatiq.Message(
            queue_name=original["queue_name"],
            actor_name=original["actor_name"],
            args=tuple(original["args"]),
            kwargs=dict(original.get("kwargs") or {}),
            options={},
        )
    except (KeyError, TypeError):
        return None


def _stage_target(
    conn: Connection, message: dict[str, Any], *, known_only: bool = True
) -> StageMessage | None:
    """The stage message inside a Dramatiq message (by default only if its document exists)."""
    try:
        target = StageMessage.from_args(message["args"][0])
    except (KeyError, IndexError, TypeError, msgspec.ValidationError):
        return None
    if known_only and not _document_exists(conn, target.document_id):
        return None
    return target


def _document_exists(conn: Connection, document_id: uuid.UUID) -> bool:
    return conn.execute(select(Document.id).where(Document.id == document_id)).first() is not None


def _audit(
    conn: Connection,
    letter: Row[Any],
    event: StageEventName,
    message_id: str | None,
    detail: dict[str, Any],
) -> None:
    conn.execute(
        transitions.document_event(
            letter.document_id,
            letter.generation or 0,
            event,
            {**detail, "dead_letter_id": str(letter.id)},
            stage=letter.stage,
            message_id=message_id,
        )
    )


def _outcome(
    letter: Row[Any], action: ItemAction, detail: str, message_id: str | None = None
) -> ItemOutcome:
    return ItemOutcome(
        id=letter.id,
        action=action,
        detail=detail,
        document_id=letter.document_id,
        stage=letter.stage,
        message_id=message_id,
    )


def _skipped(letter_id: uuid.UUID, letter: Row[Any] | None, reason: str) -> ItemOutcome:
    if letter is None:
        return NotFound(id=letter_id, action="skipped", detail=reason)
    return _outcome(letter, "skipped", reason)
