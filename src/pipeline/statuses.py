"""Every closed vocabulary of the pipeline, each written once, as a ``Literal``.

The status of a document, a stage row, a dead letter and an operation job, the kinds
of job, the scopes of an API key, the events of ``stage_events`` and what an operator
action did to an item. Each ``Literal`` is the one spelling of its vocabulary: the
models, the services, the HTTP structs (whose OpenAPI schema lists the values as an
``enum``), the query filters and the CLI's choices all name it, and the tuple of its
values beside it is derived from it with ``typing.get_args``, never written again.

The database's CHECK constraints on ``documents.status``, ``stage_runs.status``,
``dead_letters.status``, ``operation_jobs.kind``, ``operation_jobs.status`` and
``api_keys.scopes`` are built from these tuples (``pipeline.db.models``), and so are
the partial indexes on unfinished rows: a value added here needs a migration that
rewrites the constraint too (``alembic check`` does not compare a constraint's values).

A leaf module: it imports nothing from the package, so anything may import it.
"""

from __future__ import annotations

from typing import Final, Literal, get_args

UnfinishedDocumentStatus = Literal["pending", "processing"]
FinishedDocumentStatus = Literal["succeeded", "failed"]
LiveDocumentStatus = Literal[UnfinishedDocumentStatus, FinishedDocumentStatus]
"""A document that exists for its client: accepted, being worked on, or done."""
DocumentStatus = Literal[LiveDocumentStatus, "deleted"]
"""A document: accepted (``pending``), being worked on, then done one way or the other;
``deleted`` is a tombstone (its content erased, its history kept), which the API answers
``404`` for."""
LIVE_DOCUMENT_STATUSES: Final[tuple[LiveDocumentStatus, ...]] = get_args(LiveDocumentStatus)
DOCUMENT_STATUSES: Final[tuple[DocumentStatus, ...]] = get_args(DocumentStatus)
UNFINISHED_DOCUMENT_STATUSES: Final[tuple[UnfinishedDocumentStatus, ...]] = get_args(
    UnfinishedDocumentStatus
)
FINISHED_DOCUMENT_STATUSES: Final[tuple[FinishedDocumentStatus, ...]] = get_args(
    FinishedDocumentStatus
)
"""What a client polling a document waits for."""

UnfinishedStageStatus = Literal["queued", "running", "retrying"]
StageStatus = Literal["pending", UnfinishedStageStatus, "succeeded", "failed", "dead"]
"""A stage row (the state machine of ``pipeline.engine.transitions``)."""
STAGE_STATUSES: Final[tuple[StageStatus, ...]] = get_args(StageStatus)
UNFINISHED_STAGE_STATUSES: Final[tuple[UnfinishedStageStatus, ...]] = get_args(
    UnfinishedStageStatus
)
"""Rows sent to their stage and not finished: each has a deadline the reconciler
watches (a ``pending`` row has not been sent yet)."""

DeadLetterStatus = Literal["dead", "replayed", "discarded"]
DEAD_LETTER_STATUSES: Final[tuple[DeadLetterStatus, ...]] = get_args(DeadLetterStatus)

JobKind = Literal["replay", "discard", "rerun"]
"""The bulk operator actions a background job carries out."""
JOB_KINDS: Final[tuple[JobKind, ...]] = get_args(JobKind)
UnfinishedJobStatus = Literal["queued", "running"]
JobStatus = Literal[UnfinishedJobStatus, "succeeded", "failed"]
JOB_STATUSES: Final[tuple[JobStatus, ...]] = get_args(JobStatus)
UNFINISHED_JOB_STATUSES: Final[tuple[UnfinishedJobStatus, ...]] = get_args(UnfinishedJobStatus)

Scope = Literal["ingest", "read", "admin"]
"""What an API key may do: upload; read documents, chunks and search; operate."""
SCOPES: Final[tuple[Scope, ...]] = get_args(Scope)

StageEventName = Literal[
    "accepted",
    "queued",
    "claimed",
    "succeeded",
    "retrying",
    "dead",
    "dropped",
    "superseded",
    "resent",
    "rerun",
    "replayed",
    "discarded",
    "imported",
    "replaced",
    "cancelled",
    "paused",
    "resumed",
    "document_succeeded",
    "document_failed",
    "document_deleted",
]
"""``stage_events.event``: the upload, each attempt's claim and outcome, a message
dropped (duplicate, stale, not due) or an outcome superseded, the reconciler's re-sends
and finished documents, and the operators' reruns, replays, discards and imports; a
client's replacement of a document's bytes, or its cancellation; an operator pausing or
resuming a stage (events without a document). The three ``document_*`` events are written
by a trigger on ``documents.status`` (migration 0009), so no code path can skip them."""
STAGE_EVENT_NAMES: Final[tuple[StageEventName, ...]] = get_args(StageEventName)

StreamedEventName = Literal[
    "accepted",
    "queued",
    "claimed",
    "succeeded",
    "retrying",
    "dead",
    "rerun",
    "replayed",
    "replaced",
    "cancelled",
    "document_succeeded",
    "document_failed",
    "document_deleted",
]
"""The events a client's stream (``GET /documents/{id}/events``) carries: its document's
transitions, without the engine's own bookkeeping (dropped duplicates, re-sends)."""
STREAMED_EVENT_NAMES: Final[tuple[StreamedEventName, ...]] = get_args(StreamedEventName)
OutcomeEventName = Literal["document_succeeded", "document_failed", "document_deleted"]
"""The events that end a document's stream, and what ``GET /events`` carries."""
OUTCOME_EVENT_NAMES: Final[tuple[OutcomeEventName, ...]] = get_args(OutcomeEventName)

WebhookEventType = Literal[
    "document.succeeded", "document.failed", "document.deleted", "stage.dead"
]
"""What a webhook endpoint may subscribe to: a document's outcome, or a stage that died."""
WEBHOOK_EVENT_TYPES: Final[tuple[WebhookEventType, ...]] = get_args(WebhookEventType)
UnfinishedDeliveryStatus = Literal["pending", "delivering", "retrying"]
DeliveryStatus = Literal[UnfinishedDeliveryStatus, "delivered", "dead", "cancelled"]
"""A webhook delivery (an outbox row): due, being sent, waiting for its retry, then
delivered, dead (retries used up: a dead letter), or cancelled (its endpoint disabled)."""
DELIVERY_STATUSES: Final[tuple[DeliveryStatus, ...]] = get_args(DeliveryStatus)
UNFINISHED_DELIVERY_STATUSES: Final[tuple[UnfinishedDeliveryStatus, ...]] = get_args(
    UnfinishedDeliveryStatus
)

ItemAction = Literal[
    "replayed",
    "would replay",
    "discarded",
    "would discard",
    "rerun",
    "would rerun",
    "imported",
    "would import",
    "cancelled",
    "would cancel",
    "deleted",
    "would delete",
    "skipped",
    "failed",
]
"""What an operator action did (or, in a dry run, would do) to one item."""
ITEM_ACTIONS: Final[tuple[ItemAction, ...]] = get_args(ItemAction)
