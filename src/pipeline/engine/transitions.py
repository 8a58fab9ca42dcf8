"""Every write to ``stage_runs``, and the events and dead letters that go with them.

The executor, the upload service, the reconciler and the operator services (replay,
rerun) take their statements from here and run them in their own transactions (sync or
async), so the state machine of a stage row is defined in one module:

    pending ──► queued ──► running ──► succeeded
                  ▲           │  │
                  │           │  └──► retrying ──(due)──► running ...
                  └─ resent ──┘  └──► dead   (permanent error, or retries used up)

**Fencing.** Every claim increments the row's ``fence``, which nothing ever resets;
writes that end an attempt are fenced on (generation, status ``running``, fence), so an
attempt that lost its row (to a takeover, a replay or a rerun) cannot overwrite it.
``attempts`` is the retry budget and starts again at a replay; the fence never does.

**Lock order.** Every transaction that locks more than one of these takes them in this
order, and every statement below is written to follow it:

    1. the document row        ``FOR NO KEY UPDATE`` (never ``FOR UPDATE``: no key changes)
    2. its stage rows           (updated, or ``FOR NO KEY UPDATE``)
    3. its dead letters
    4. operation jobs           (only ever in transactions of their own)

The document lock comes first even where a transaction only *references* the document:
an insert into ``stage_events``, ``chunks`` or ``dead_letters`` takes ``KEY SHARE`` on it
through the foreign key, so a transaction that locked a stage row and then wrote an
event would otherwise reach for the document second. Holding the document lock, a
transaction may read the document's stage rows with a fresh statement and trust them:
no other writer can change them meanwhile. Single-statement writes that lock one row
and nothing else (progress, a ``dropped`` event) cannot be part of a cycle and skip it.
The reconciler takes its locks with ``SKIP LOCKED`` (it never waits for live work), and
dry runs take no locks at all.

The writes every document makes (``ACCEPT_SQL``, ``CLAIM_SQL``, ``SUCCEED_SQL`` and,
for short stages, ``CLAIM_AND_SUCCEED_SQL`` in place of the two) are plain SQL, one round
trip each, because they are the hot path (see ``docs/benchmarks.md``); the rarer ones are
SQLAlchemy statement builders.
"""

from __future__ import annotations

import uuid
from datetime import timedelta
from typing import Any

import msgspec
from sqlalchemy import (
    ColumnElement,
    Delete,
    Insert,
    Select,
    Update,
    case,
    delete,
    func,
    insert,
    select,
    update,
)
from sqlalchemy.dialects.postgresql import insert as pg_insert

from pipeline.db.models import (
    Chunk,
    DeadLetter,
    Document,
    DocumentBlob,
    DocumentText,
    StageControl,
    StageEvent,
    StageRun,
    StoredArtifact,
)
from pipeline.engine.failures import Failure
from pipeline.messages import Delivery, StageMessage
from pipeline.statuses import (
    OUTCOME_EVENT_NAMES,
    UNFINISHED_DOCUMENT_STATUSES,
    UNFINISHED_STAGE_STATUSES,
    FinishedDocumentStatus,
    StageEventName,
    StageStatus,
    UnfinishedStageStatus,
)


class Attempt(msgspec.Struct, frozen=True):
    """An attempt that holds its stage row."""

    message: StageMessage
    number: int
    """The attempt's number in the current retry budget (1, 2, ...)."""
    fence: int
    """The fencing token: unique for the row, whatever happened before."""
    message_id: str
    delivery: Delivery
    next_stage: str | None
    """What the document's plan runs after this stage (``None``: this is its last)."""


def row_of(message: StageMessage) -> tuple[ColumnElement[bool], ...]:
    return (StageRun.document_id == message.document_id, StageRun.stage == message.stage)


ACCEPT_SQL = """
WITH doc AS (
    INSERT INTO documents (id, tenant, filename, declared_content_type, size_bytes, sha256,
                           idempotency_key, external_id, pipeline_version)
    VALUES (%(id)s, %(tenant)s, %(filename)s, %(declared)s, %(size)s, %(sha256)s, %(key)s,
            %(external_id)s, %(version)s)
    ON CONFLICT ON CONSTRAINT uq_documents_tenant_idempotency_key DO NOTHING
    RETURNING id
), blob AS (
    INSERT INTO document_blobs (document_id, data) SELECT id, %(data)s FROM doc
), runs AS (
    INSERT INTO stage_runs (document_id, stage, position, status, generation, queued_at,
                            deadline_at, message_id)
    SELECT doc.id, s.stage, s.position - 1,
           CASE WHEN s.position = 1 THEN 'queued' ELSE 'pending' END, 1,
           CASE WHEN s.position = 1 THEN now() END,
           CASE WHEN s.position = 1 THEN now() + %(grace)s END,
           CASE WHEN s.position = 1 THEN %(message_id)s END
    FROM doc, unnest(%(stages)s::text[]) WITH ORDINALITY AS s(stage, position)
), events AS (
    INSERT INTO stage_events (document_id, stage, generation, event, message_id, detail)
    SELECT doc.id, NULL, 1, 'accepted', NULL, %(accepted)s::jsonb FROM doc
    UNION ALL
    SELECT doc.id, %(first_stage)s, 1, 'queued', %(message_id)s, '{}'::jsonb FROM doc
)
SELECT id FROM doc
"""
"""A new document in one round trip: the document, its bytes, its plan's stage rows (in
the definition's order, the first queued for ``message_id``) and its first events.
Returns no row when the tenant's idempotency key is taken; an ``external_id`` the tenant
already uses raises a unique violation (the caller replaces that document instead). The
upload path is the hottest write there is; this is the whole of it, as one statement."""


CLAIM_SQL = """
WITH doc AS (
    SELECT id FROM documents WHERE id = %(document_id)s FOR NO KEY UPDATE
), claimed AS (
    UPDATE stage_runs AS r
    SET status = 'running', attempts = r.attempts + 1, fence = r.fence + 1, started_at = now(),
        finished_at = NULL, duration_ms = NULL, deadline_at = now() + %(deadline)s,
        retry_at = NULL, message_id = %(message_id)s, worker_id = %(worker)s, updated_at = now()
    FROM doc
    WHERE r.document_id = doc.id AND r.stage = %(stage)s AND r.generation = %(generation)s
      AND (r.status = 'queued'
           OR (r.status = 'retrying' AND r.retry_at <= now())
           OR (r.status = 'running' AND r.deadline_at < now())
           OR (r.status = 'running' AND r.fence = %(abandoned)s AND r.worker_id = %(worker)s))
      AND NOT EXISTS (SELECT 1 FROM stage_controls AS c WHERE c.stage = %(stage)s AND c.paused)
    RETURNING r.attempts, r.fence,
              (SELECT n.stage FROM stage_runs AS n
               WHERE n.document_id = r.document_id AND n.position > r.position
               ORDER BY n.position LIMIT 1) AS next_stage
), document AS (
    UPDATE documents SET status = 'processing', updated_at = now()
    WHERE id = %(document_id)s AND status = 'pending' AND EXISTS (SELECT 1 FROM claimed)
), event AS (
    INSERT INTO stage_events (document_id, stage, generation, event, attempt, message_id, detail)
    SELECT %(document_id)s, %(stage)s, %(generation)s, 'claimed', attempts, %(message_id)s,
           %(detail)s::jsonb || jsonb_build_object('fence', fence)
    FROM claimed
)
SELECT attempts, fence, next_stage FROM claimed
"""
"""The claim as one statement (one round trip, no transaction of its own needed): with
the document locked first, the row moves to ``running`` only if the message's generation
matches and the row is waiting (``queued``, or ``retrying`` and due), or its running
attempt is past its deadline, or is ``abandoned`` (a fence this very worker took and no
longer runs: a completion that could not be recorded), and the stage is not paused
(its rows wait, see ``stage_controls``). The document becomes
``processing`` and a ``claimed`` event is written. Returns the attempt number, the
new fence and the stage that follows in the document's own plan (its rows' positions;
none after the last), or no row (a duplicate, stale or early message)."""

SUCCEED_SQL = """
WITH doc AS (
    SELECT id FROM documents WHERE id = %(document_id)s FOR NO KEY UPDATE
), released AS (
    UPDATE stage_runs AS r
    SET status = 'succeeded', finished_at = now(), duration_ms = %(duration_ms)s,
        deadline_at = NULL, error_type = NULL, error_message = NULL, error_transient = NULL,
        progress_current = r.progress_total, updated_at = now()
    FROM doc
    WHERE r.document_id = doc.id AND r.stage = %(stage)s AND r.generation = %(generation)s
      AND r.status = 'running' AND r.fence = %(fence)s
    RETURNING r.document_id
), queued AS (
    UPDATE stage_runs
    SET status = 'queued', generation = %(generation)s, attempts = 0, queued_at = now(),
        started_at = NULL, finished_at = NULL, duration_ms = NULL, retry_at = NULL,
        deadline_at = now() + %(grace)s, message_id = %(next_message_id)s, worker_id = NULL,
        progress_current = NULL, progress_total = NULL, error_type = NULL,
        error_message = NULL, error_transient = NULL, updated_at = now()
    WHERE document_id = %(document_id)s AND stage = %(next_stage)s
      AND EXISTS (SELECT 1 FROM released)
), finished AS (
    UPDATE documents
    SET status = 'succeeded', failure_reason = NULL, finished_at = now(), updated_at = now()
    WHERE id = %(document_id)s AND generation = %(generation)s
      AND %(next_stage)s::text IS NULL AND EXISTS (SELECT 1 FROM released)
), events AS (
    INSERT INTO stage_events (document_id, stage, generation, event, attempt, message_id, detail)
    SELECT %(document_id)s, %(stage)s, %(generation)s, 'succeeded', %(attempt)s,
           %(message_id)s, %(detail)s::jsonb
    FROM released
    UNION ALL
    SELECT %(document_id)s, %(next_stage)s, %(generation)s, 'queued', NULL,
           %(next_message_id)s, '{}'::jsonb
    FROM released WHERE %(next_stage)s::text IS NOT NULL
)
SELECT count(*) FROM released
"""
"""Success as one statement, the first of the transaction that then stores the stage's
output (so the document is locked before anything references it): the row
``succeeded`` (only while this attempt's fence holds it), the next stage ``queued`` for
its message (or the document ``succeeded`` after the last stage), and the events.
Returns 1, or 0 when the attempt lost its hold (the caller then rolls back)."""

CLAIM_AND_SUCCEED_SQL = """
WITH doc AS (
    SELECT id FROM documents WHERE id = %(document_id)s FOR NO KEY UPDATE
), done AS (
    UPDATE stage_runs AS r
    SET status = 'succeeded', attempts = 1, fence = r.fence + 1,
        started_at = now() - make_interval(secs => %(duration_ms)s / 1000.0),
        finished_at = now(), duration_ms = %(duration_ms)s, deadline_at = NULL, retry_at = NULL,
        message_id = %(message_id)s, worker_id = %(worker)s, error_type = NULL,
        error_message = NULL, error_transient = NULL, progress_current = NULL,
        progress_total = NULL, updated_at = now()
    FROM doc
    WHERE r.document_id = doc.id AND r.stage = %(stage)s AND r.generation = %(generation)s
      AND r.status = 'queued' AND r.attempts = 0
      AND NOT EXISTS (SELECT 1 FROM stage_controls AS c WHERE c.stage = %(stage)s AND c.paused)
    RETURNING r.fence,
              (SELECT n.stage FROM stage_runs AS n
               WHERE n.document_id = r.document_id AND n.position > r.position
               ORDER BY n.position LIMIT 1) AS next_stage
), queued AS (
    UPDATE stage_runs AS q
    SET status = 'queued', generation = %(generation)s, attempts = 0, queued_at = now(),
        started_at = NULL, finished_at = NULL, duration_ms = NULL, retry_at = NULL,
        deadline_at = now() + %(grace)s, message_id = %(next_message_id)s, worker_id = NULL,
        progress_current = NULL, progress_total = NULL, error_type = NULL,
        error_message = NULL, error_transient = NULL, updated_at = now()
    FROM done
    WHERE q.document_id = %(document_id)s AND q.stage = done.next_stage
), document AS (
    UPDATE documents AS d
    SET status = CASE WHEN done.next_stage IS NULL THEN 'succeeded' ELSE 'processing' END,
        failure_reason = CASE WHEN done.next_stage IS NULL THEN NULL ELSE d.failure_reason END,
        finished_at = CASE WHEN done.next_stage IS NULL THEN now() ELSE d.finished_at END,
        updated_at = now()
    FROM done
    WHERE d.id = %(document_id)s
      AND ((done.next_stage IS NULL AND d.generation = %(generation)s)
           OR (done.next_stage IS NOT NULL AND d.status = 'pending'))
), events AS (
    INSERT INTO stage_events (document_id, stage, generation, event, attempt, message_id, detail)
    SELECT %(document_id)s, %(stage)s, %(generation)s, 'claimed', 1, %(message_id)s,
           %(claimed)s::jsonb || jsonb_build_object('fence', fence, 'fused', true)
    FROM done
    UNION ALL
    SELECT %(document_id)s, %(stage)s, %(generation)s, 'succeeded', 1, %(message_id)s,
           %(detail)s::jsonb
    FROM done
    UNION ALL
    SELECT %(document_id)s, next_stage, %(generation)s, 'queued', NULL,
           %(next_message_id)s, '{}'::jsonb
    FROM done WHERE next_stage IS NOT NULL
)
SELECT fence, next_stage FROM done
"""
"""Claim and success as one statement, for a stage whose policy lets it run before it
claims (``StagePolicy.claim_first`` false: short, pure stages). The attempt has already
loaded its input and computed its output; this takes the row only if it is still
waiting for its first attempt at this generation (``queued`` with no attempt counted,
so a row a crashed attempt left behind, or one that is ``retrying``, goes the
claim-first way), its stage is not paused and the document still has it (a deleted
document has no rows, a cancel or rerun moved it to another generation). With the
document locked first, it bumps the fence as a claim does, marks the row
``succeeded``, queues the next stage for ``next_message_id`` (or finishes the document
after the last stage) and writes the same three events as a claim and a success
(``claimed`` with the fence and worker, and ``fused: true``: it was claimed after the
work; ``succeeded``; the next ``queued``), so the event streams and the timeline show
every transition. Returns the fence and the next
stage, or no row: the caller then goes the claim-first way (which says why a
delivery that cannot claim is dropped)."""

LOCK_DOCUMENT_SQL = "SELECT id FROM documents WHERE id = %(document_id)s FOR NO KEY UPDATE"


def lock_document(document_id: uuid.UUID) -> Select[uuid.UUID]:
    """Step 1 of the lock order: the document row, ``FOR NO KEY UPDATE``."""
    return select(Document.id).where(Document.id == document_id).with_for_update(key_share=True)


def current(message: StageMessage) -> Select[str, int, int, str | None, str | None, int, bool]:
    """What a delivery that could not claim needs to know to say why (a plain read)."""
    paused = (
        select(StageControl.paused).where(StageControl.stage == message.stage).scalar_subquery()
    )
    return select(
        StageRun.status,
        StageRun.generation,
        StageRun.fence,
        StageRun.worker_id,
        StageRun.message_id,
        (func.extract("epoch", StageRun.retry_at - func.now()) * 1000).label("due_in_ms"),
        func.coalesce(paused, False).label("paused"),
    ).where(*row_of(message))


def holds(attempt: Attempt) -> tuple[ColumnElement[bool], ...]:
    """The fence: the row is still this attempt's."""
    return (
        *row_of(attempt.message),
        StageRun.generation == attempt.message.generation,
        StageRun.status == "running",
        StageRun.fence == attempt.fence,
    )


def release(
    attempt: Attempt,
    status: StageStatus,
    duration_ms: int,
    *,
    deadline: Any = None,
    retry_at: Any = None,
    message_id: str | None = None,
    error: Failure | None = None,
) -> Update:
    """End an attempt; affects one row only while ``attempt`` still holds it.

    A ``retrying`` row gets the time it is due (``retry_at``) and the id of the message
    that will retry it (``message_id``).
    """
    errors = error.columns() if error else dict.fromkeys(Failure.COLUMNS)
    values: dict[str, Any] = {}
    if message_id is not None:
        values["message_id"] = message_id
    return (
        update(StageRun)
        .where(*holds(attempt))
        .values(
            status=status,
            finished_at=func.now(),
            duration_ms=duration_ms,
            deadline_at=deadline,
            retry_at=retry_at,
            updated_at=func.now(),
            **values,
            **errors,
        )
    )


def progress(attempt: Attempt, current: int, total: int) -> Update:
    """Record how far a running attempt has come (only while it holds the row)."""
    return (
        update(StageRun)
        .where(*holds(attempt))
        .values(progress_current=current, progress_total=total)
    )


def queue(message: StageMessage, message_id: str, grace: timedelta) -> Update:
    """Queue a stage afresh for ``message_id``: the next stage, a replay or a rerun."""
    return (
        update(StageRun)
        .where(*row_of(message))
        .values(
            status="queued",
            generation=message.generation,
            attempts=0,
            queued_at=func.now(),
            started_at=None,
            finished_at=None,
            duration_ms=None,
            deadline_at=func.now() + grace,
            retry_at=None,
            message_id=message_id,
            worker_id=None,
            progress_current=None,
            progress_total=None,
            updated_at=func.now(),
            **dict.fromkeys(Failure.COLUMNS),
        )
    )


def reset_after(document_id: uuid.UUID, position: int, generation: int) -> Update:
    """Put every stage after ``position`` back to ``pending`` for a new generation."""
    return (
        update(StageRun)
        .where(StageRun.document_id == document_id, StageRun.position > position)
        .values(
            status="pending",
            generation=generation,
            attempts=0,
            queued_at=None,
            started_at=None,
            finished_at=None,
            duration_ms=None,
            deadline_at=None,
            retry_at=None,
            message_id=None,
            worker_id=None,
            progress_current=None,
            progress_total=None,
            updated_at=func.now(),
            **dict.fromkeys(Failure.COLUMNS),
        )
    )


def drop_plan_from(document_id: uuid.UUID, position: int) -> Delete:
    """A rerun onto the current plan: the document's rows from ``position`` on go (the
    plan's are inserted in their place by :func:`plan_rows`)."""
    return delete(StageRun).where(
        StageRun.document_id == document_id, StageRun.position >= position
    )


def plan_rows(document_id: uuid.UUID, stages: list[str], position: int, generation: int) -> Insert:
    """Pending rows for ``stages``, numbered on from ``position``."""
    return insert(StageRun).values(
        [
            {
                "document_id": document_id,
                "stage": stage,
                "position": position + offset,
                "status": "pending",
                "generation": generation,
            }
            for offset, stage in enumerate(stages)
        ]
    )


def plan_version(document_id: uuid.UUID, version: str) -> Update:
    """The definition that planned the document's rows, after a rerun onto it."""
    return (
        update(Document)
        .where(Document.id == document_id)
        .values(pipeline_version=version, updated_at=func.now())
    )


def carry_over(document_id: uuid.UUID, position: int, generation: int) -> Update:
    """The stages before ``position`` join a new generation as they are: succeeded, with
    their outputs kept. Every row of a document is then at the document's generation,
    so any message of an older one is stale."""
    return (
        update(StageRun)
        .where(StageRun.document_id == document_id, StageRun.position < position)
        .values(generation=generation, updated_at=func.now())
    )


def not_paused() -> ColumnElement[bool]:
    """The row's stage is not paused: its rows wait on purpose, they are not stranded."""
    return StageRun.stage.not_in(select(StageControl.stage).where(StageControl.paused))


def lock_overdue_documents(limit: int) -> Select[uuid.UUID]:
    """Step 1 for the reconciler: the documents of the oldest overdue rows, locked
    ``SKIP LOCKED`` (a document busy with live work or an operator waits for a later sweep)."""
    overdue_rows = (
        select(StageRun.document_id)
        .where(
            StageRun.status.in_(UNFINISHED_STAGE_STATUSES),
            StageRun.deadline_at < func.now(),
            not_paused(),
        )
        .order_by(StageRun.deadline_at)
        .limit(limit)
    )
    return (
        select(Document.id)
        .where(Document.id.in_(overdue_rows.scalar_subquery()))
        .order_by(Document.id)
        .with_for_update(key_share=True, skip_locked=True)
    )


def overdue(document_ids: list[uuid.UUID]) -> Select[uuid.UUID, str, int, str, int]:
    """Step 2: the overdue rows of documents this transaction has locked (read afresh)."""
    return (
        select(
            StageRun.document_id,
            StageRun.stage,
            StageRun.generation,
            StageRun.status,
            StageRun.attempts,
        )
        .where(
            StageRun.document_id.in_(document_ids),
            StageRun.status.in_(UNFINISHED_STAGE_STATUSES),
            StageRun.deadline_at < func.now(),
            not_paused(),
        )
        .order_by(StageRun.deadline_at)
        .with_for_update(key_share=True, skip_locked=True)
    )


def resend(
    message: StageMessage, status: UnfinishedStageStatus, message_id: str, grace: timedelta
) -> Update:
    """Point an overdue row at a new message; an abandoned ``running`` row waits again."""
    return (
        update(StageRun)
        .where(*row_of(message), StageRun.generation == message.generation)
        .values(
            status="queued" if status == "running" else status,
            deadline_at=func.now() + grace,
            message_id=message_id,
            updated_at=func.now(),
        )
    )


def event(
    message: StageMessage,
    name: StageEventName,
    attempt: int | None,
    message_id: str | None,
    detail: dict[str, Any],
) -> Insert:
    """An event of ``message``'s stage (its attempt, if one holds the row)."""
    return document_event(
        message.document_id,
        message.generation,
        name,
        detail,
        stage=message.stage,
        message_id=message_id,
        attempt=attempt,
    )


def reopen_letter(
    delivery: Delivery, failure: Failure, attempts: int, message: StageMessage, trace: str | None
) -> Update:
    """A replayed letter whose stage died again becomes ``dead`` again, keeping its count.

    One letter per (document, stage, generation) lineage: its ``replay_count`` says
    how often it was replayed, and ``stage_events`` keeps every attempt.
    """
    return (
        update(DeadLetter)
        .where(
            DeadLetter.document_id == message.document_id,
            DeadLetter.stage == message.stage,
            DeadLetter.generation == message.generation,
            DeadLetter.status == "replayed",
        )
        .values(
            status="dead",
            message_id=delivery.message_id,
            message=delivery.message,
            error_type=failure.error_type,
            error_message=failure.reason,
            traceback=trace,
            attempts=attempts,
            failed_at=func.now(),
        )
        .returning(DeadLetter.id)
    )


def dead_letter(
    delivery: Delivery,
    *,
    failure: Failure,
    attempts: int,
    stage_message: StageMessage | None = None,
    document_known: bool = True,
    stage: str | None = None,
    trace: str | None = None,
) -> Insert:
    return insert(DeadLetter).values(
        id=uuid.uuid4(),
        document_id=stage_message.document_id if stage_message and document_known else None,
        stage=stage_message.stage if stage_message else stage,
        generation=stage_message.generation if stage_message else None,
        actor_name=delivery.actor_name,
        queue_name=delivery.queue_name,
        message_id=delivery.message_id,
        message=delivery.message,
        error_type=failure.error_type,
        error_message=failure.reason,
        traceback=trace,
        attempts=attempts,
    )


def document_reopened(document_id: uuid.UUID, generation: int) -> Update:
    """A document goes back to ``processing`` for a replay or a rerun."""
    return (
        update(Document)
        .where(Document.id == document_id)
        .values(
            status="processing",
            generation=generation,
            failure_reason=None,
            finished_at=None,
            updated_at=func.now(),
        )
    )


def document_finished(
    message: StageMessage, status: FinishedDocumentStatus, reason: str | None
) -> Update:
    return (
        update(Document)
        .where(Document.id == message.document_id, Document.generation == message.generation)
        .values(status=status, failure_reason=reason, finished_at=func.now(), updated_at=func.now())
    )


# -- operator and reconciler writes ---------------------------------------------------------


def document_event(
    document_id: uuid.UUID | None,
    generation: int,
    name: StageEventName,
    detail: dict[str, Any],
    *,
    stage: str | None = None,
    message_id: str | None = None,
    attempt: int | None = None,
) -> Insert:
    """An event of a document, or (``document_id`` None) of an operator's action on a dead
    letter that names no document: a document finished by the reconciler, a replay."""
    return insert(StageEvent).values(
        document_id=document_id,
        stage=stage,
        generation=generation,
        event=name,
        attempt=attempt,
        message_id=message_id,
        detail=detail,
    )


def letter_replayed(letter_id: uuid.UUID, message_id: str) -> Update:
    """A dead letter was re-sent as ``message_id`` (its count grows; its row is queued)."""
    return (
        update(DeadLetter)
        .where(DeadLetter.id == letter_id)
        .values(
            status="replayed",
            replay_count=DeadLetter.replay_count + 1,
            replayed_at=func.now(),
            replayed_message_id=message_id,
        )
    )


def letter_discarded(letter_id: uuid.UUID) -> Update:
    return update(DeadLetter).where(DeadLetter.id == letter_id).values(status="discarded")


def letters_superseded(document_id: uuid.UUID) -> Update:
    """A rerun replaces the failed run: the document's dead letters are settled."""
    return (
        update(DeadLetter)
        .where(DeadLetter.document_id == document_id, DeadLetter.status == "dead")
        .values(status="discarded")
        .returning(DeadLetter.id)
    )


def webhook_letter(
    delivery_id: uuid.UUID,
    delivery: Delivery,
    *,
    document_id: uuid.UUID | None,
    generation: int | None,
    failure: Failure,
    attempts: int,
) -> Insert:
    """A webhook delivery that is dead: its letter has the delivery's id (one letter per
    delivery; if a replayed one dies again, its letter is ``dead`` again, its count kept).

    The caller holds the document first (lock order), then the delivery row."""
    values = {
        "actor_name": delivery.actor_name,
        "queue_name": delivery.queue_name,
        "message_id": delivery.message_id,
        "message": delivery.message,
        "error_type": failure.error_type,
        "error_message": failure.reason,
        "traceback": None,
        "attempts": attempts,
    }
    statement = pg_insert(DeadLetter).values(
        id=delivery_id, document_id=document_id, stage=None, generation=generation, **values
    )
    return statement.on_conflict_do_update(
        index_elements=[DeadLetter.id],
        set_={**values, "status": "dead", "failed_at": func.now()},
    )


def imported_letter(**values: Any) -> Insert:
    """A dead letter copied from Dramatiq's own dead set in Redis."""
    return insert(DeadLetter).values(**values)


# -- lifecycle: delete, replace, retention --------------------------------------------------
#
# A delete or a replace runs in one transaction that holds the document lock first (step
# 1), then writes the stage rows (2) and the dead letters (3), like a rerun. The erasure
# of content (bytes, text, artifacts, chunks) needs no lock of its own: the document lock
# keeps every stage's completion out (``SUCCEED_SQL`` takes it first), and a completion
# that then finds its row gone or at another generation rolls back and writes nothing.


def drop_stage_rows(document_id: uuid.UUID) -> Delete:
    """A deleted document has no stage rows: any attempt in flight then loses its fence
    (its completion or failure finds no row, and rolls back), and any later message is
    dropped (the executor says the document was deleted). The history stays in
    ``stage_events``."""
    return delete(StageRun).where(StageRun.document_id == document_id)


def letters_of_deleted(document_id: uuid.UUID) -> Update:
    """A deleted document's dead letters are settled, whatever their status: nothing may
    replay a deleted document."""
    return (
        update(DeadLetter)
        .where(DeadLetter.document_id == document_id, DeadLetter.status != "discarded")
        .values(status="discarded")
        .returning(DeadLetter.id)
    )


ERASED_FILENAME = ""
"""What a tombstone keeps of the filename and the checksum: nothing. A filename is often
personal data ("smith-medical-2024.pdf"), and the sha256 of the bytes proves whether
someone holds a given file, so both go; kind, types and size stay (they identify
nothing and keep the counts an operator reads right)."""


def erase_content(document_id: uuid.UUID) -> tuple[Delete, ...]:
    """What a document's content is: the bytes, the text, every artifact and the chunks
    (whose triggers take the postings out of ``chunk_terms`` and ``search_totals``)."""
    return (
        delete(Chunk).where(Chunk.document_id == document_id),
        delete(StoredArtifact).where(StoredArtifact.document_id == document_id),
        delete(DocumentText).where(DocumentText.document_id == document_id),
        delete(DocumentBlob).where(DocumentBlob.document_id == document_id),
    )


def tombstone(document_id: uuid.UUID, by: str, reason: str | None) -> Update:
    """The document becomes its tombstone: ``deleted``, who, when and why; a new
    generation (so every message still in flight is stale); the client's keys cleared
    (the external id and the idempotency key may be used again); the filename, checksum
    and failure reason erased. The ``documents_outcome`` trigger writes the
    ``document_deleted`` event (with ``by`` and ``reason``)."""
    return (
        update(Document)
        .where(Document.id == document_id)
        .values(
            status="deleted",
            generation=Document.generation + 1,
            deleted_at=func.now(),
            deleted_by=by,
            delete_reason=reason,
            external_id=None,
            idempotency_key=None,
            filename=ERASED_FILENAME,
            sha256=ERASED_FILENAME,
            failure_reason=None,
            finished_at=func.now(),
            updated_at=func.now(),
        )
    )


def replace_upload(
    document_id: uuid.UUID,
    *,
    generation: int,
    filename: str,
    declared_type: str | None,
    size: int,
    sha256: str,
) -> Update:
    """New bytes for a document (a replace by its external id): the upload's metadata, a
    new generation, and the document back to ``pending``; what validate derives (kind,
    detected type, encoding) is cleared until validate runs again."""
    return (
        update(Document)
        .where(Document.id == document_id)
        .values(
            filename=filename,
            declared_content_type=declared_type,
            size_bytes=size,
            sha256=sha256,
            detected_content_type=None,
            kind=None,
            encoding=None,
            generation=generation,
            status="pending",
            failure_reason=None,
            finished_at=None,
            updated_at=func.now(),
        )
    )


def replace_blob(document_id: uuid.UUID, data: bytes) -> Insert:
    """The new bytes (inserted if retention had removed the old ones)."""
    statement = pg_insert(DocumentBlob).values(document_id=document_id, data=data)
    return statement.on_conflict_do_update(
        index_elements=[DocumentBlob.document_id], set_={"data": statement.excluded.data}
    )


def old_events(cutoff: Any, limit: int, *, lock: bool) -> Select[int]:
    """Retention: up to ``limit`` events older than ``cutoff`` of documents that are
    finished (succeeded, failed or deleted), and of operator actions that name no
    document. Never an event of an unfinished document, and never a document's outcome
    event (``document_succeeded``/``_failed``/``_deleted``): it is the one line of a
    document's history that says how it ended, and who deleted it. ``lock``: skip rows
    another transaction holds (a dry run only reads)."""
    unfinished = (
        select(Document.id)
        .where(
            Document.id == StageEvent.document_id,
            Document.status.in_(UNFINISHED_DOCUMENT_STATUSES),
        )
        .exists()
    )
    chosen = (
        select(StageEvent.id)
        .where(
            StageEvent.created_at < cutoff,
            StageEvent.event.not_in(OUTCOME_EVENT_NAMES),
            ~unfinished,
        )
        .order_by(StageEvent.created_at)
        .limit(limit)
    )
    return chosen.with_for_update(skip_locked=True) if lock else chosen


def remove_events(ids: list[int]) -> Delete:
    """The events ``old_events`` chose (by id: an ``IN (subquery)`` was planned as a
    sequential scan of the whole table)."""
    return delete(StageEvent).where(StageEvent.id.in_(ids))


def old_letters(cutoff: Any, limit: int, *, lock: bool) -> Select[uuid.UUID]:
    """Retention: up to ``limit`` settled dead letters (``replayed`` or ``discarded``)
    that failed before ``cutoff``; never a ``dead`` one (it waits for an operator), and
    never a replayed one whose document is still being worked on (its replay may die
    again and reopen it)."""
    working = (
        select(Document.id)
        .where(
            Document.id == DeadLetter.document_id,
            Document.status.in_(UNFINISHED_DOCUMENT_STATUSES),
        )
        .exists()
    )
    chosen = (
        select(DeadLetter.id)
        .where(
            DeadLetter.status.in_(("replayed", "discarded")),
            DeadLetter.failed_at < cutoff,
            ~working,
        )
        .order_by(DeadLetter.failed_at)
        .limit(limit)
    )
    return chosen.with_for_update(skip_locked=True) if lock else chosen


def remove_letters(ids: list[uuid.UUID]) -> Delete:
    return delete(DeadLetter).where(DeadLetter.id.in_(ids))


# -- stage controls and cancellation ----------------------------------------------------------
#
# A stage control is a row of its own (``stage_controls``), written in a transaction of its
# own: pausing locks nothing else. What a pause means is in the claim (``CLAIM_SQL`` takes
# no row of a paused stage) and the reconciler's selections (``not_paused``).


def pause_stage(stage: str, by: str, reason: str | None) -> Insert:
    """The stage is paused (again, if it was: who and why are updated)."""
    statement = pg_insert(StageControl).values(
        stage=stage, paused=True, paused_by=by, paused_at=func.now(), reason=reason
    )
    return statement.on_conflict_do_update(
        index_elements=[StageControl.stage],
        set_={"paused": True, "paused_by": by, "paused_at": func.now(), "reason": reason},
    )


def resume_stage(stage: str, by: str) -> Update:
    """The stage runs again; rows that waited are sent by the reconciler (``waited``)."""
    return (
        update(StageControl)
        .where(StageControl.stage == stage, StageControl.paused)
        .values(paused=False, resumed_by=by, resumed_at=func.now())
        .returning(StageControl.stage)
    )


def stage_event(stage: str, name: StageEventName, detail: dict[str, Any]) -> Insert:
    """An operator's action on a stage (no document: generation 0)."""
    return document_event(None, 0, name, detail, stage=stage)


def lock_documents_that_waited(limit: int) -> Select[uuid.UUID]:
    """Step 1 of the resume sweep: documents with a row of a resumed stage that waited in
    ``queued`` or ``retrying`` since before the resume (its message was dropped while
    the stage was paused), locked ``SKIP LOCKED`` like every reconciler lock."""
    return (
        select(Document.id)
        .where(Document.id.in_(_waited().with_only_columns(StageRun.document_id).limit(limit)))
        .order_by(Document.id)
        .with_for_update(key_share=True, skip_locked=True)
    )


def waited(document_ids: list[uuid.UUID]) -> Select[uuid.UUID, str, int, str, int]:
    """Step 2: those rows of the locked documents, read afresh."""
    return (
        _waited()
        .where(StageRun.document_id.in_(document_ids))
        .with_for_update(key_share=True, skip_locked=True, of=StageRun)
    )


def _waited() -> Select[uuid.UUID, str, int, str, int]:
    return select(
        StageRun.document_id,
        StageRun.stage,
        StageRun.generation,
        StageRun.status,
        StageRun.attempts,
    ).where(
        StageRun.stage == StageControl.stage,
        StageControl.paused.is_(False),
        StageControl.resumed_at.is_not(None),
        StageRun.status.in_(("queued", "retrying")),
        StageRun.updated_at < StageControl.resumed_at,
    )


def drained_resumes() -> Update:
    """Forget the resume of every stage none of whose rows waits any more, so that later
    sweeps stop looking (a stage's control row only: it locks nothing else). A resume made
    meanwhile is not forgotten: it has a later ``resumed_at`` than the rows it waits on."""
    waiting = (
        select(StageRun.document_id)
        .where(
            StageRun.stage == StageControl.stage,
            StageRun.status.in_(("queued", "retrying")),
            StageRun.updated_at < StageControl.resumed_at,
        )
        .exists()
    )
    return (
        update(StageControl)
        .where(StageControl.paused.is_(False), StageControl.resumed_at.is_not(None), ~waiting)
        .values(resumed_at=None)
    )


def cancel_rows(document_id: uuid.UUID, generation: int, by: str) -> Update:
    """Every unfinished row of a cancelled document fails (a new generation: any attempt
    or message in flight is stale), with the cancellation as its error."""
    return (
        update(StageRun)
        .where(StageRun.document_id == document_id)
        .values(
            generation=generation,
            status=case(
                (StageRun.status.in_(UNFINISHED_STAGE_STATUSES), "failed"), else_=StageRun.status
            ),
            finished_at=case(
                (StageRun.status.in_(UNFINISHED_STAGE_STATUSES), func.now()),
                else_=StageRun.finished_at,
            ),
            deadline_at=None,
            retry_at=None,
            error_type=case(
                (StageRun.status.in_(UNFINISHED_STAGE_STATUSES), "Cancelled"),
                else_=StageRun.error_type,
            ),
            error_message=case(
                (StageRun.status.in_(UNFINISHED_STAGE_STATUSES), f"cancelled by {by}"),
                else_=StageRun.error_message,
            ),
            error_transient=case(
                (StageRun.status.in_(UNFINISHED_STAGE_STATUSES), False),
                else_=StageRun.error_transient,
            ),
            updated_at=func.now(),
        )
        .returning(StageRun.stage, StageRun.status)
    )


def document_cancelled(document_id: uuid.UUID, generation: int, reason: str) -> Update:
    """The document fails for the cancellation (the trigger writes ``document_failed``)."""
    return (
        update(Document)
        .where(Document.id == document_id)
        .values(
            status="failed",
            generation=generation,
            failure_reason=reason,
            finished_at=func.now(),
            updated_at=func.now(),
        )
    )
