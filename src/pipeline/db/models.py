"""The Postgres schema, as typed SQLAlchemy 2 models.

Postgres is the source of truth: every fact about a document, each of its stage
runs and every dead letter lives here. Status columns are ``text`` with CHECK
constraints rather than native enums so that adding a status is a plain migration;
the constraints are built from the vocabularies of :mod:`pipeline.statuses`.
"""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any, Final

from sqlalchemy import (
    BigInteger,
    CheckConstraint,
    Computed,
    DateTime,
    Double,
    ForeignKey,
    Identity,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    PrimaryKeyConstraint,
    String,
    Text,
    UniqueConstraint,
    func,
)
from sqlalchemy import (
    text as sql_text,
)
from sqlalchemy.dialects.postgresql import ARRAY, JSONB, REAL, TSVECTOR, UUID
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from pipeline.statuses import (
    DEAD_LETTER_STATUSES,
    DELIVERY_STATUSES,
    DOCUMENT_STATUSES,
    JOB_KINDS,
    JOB_STATUSES,
    SCOPES,
    STAGE_STATUSES,
    UNFINISHED_DELIVERY_STATUSES,
    UNFINISHED_JOB_STATUSES,
    UNFINISHED_STAGE_STATUSES,
    WEBHOOK_EVENT_TYPES,
    DeadLetterStatus,
    DeliveryStatus,
    DocumentStatus,
    JobKind,
    JobStatus,
    Scope,
    StageEventName,
    StageStatus,
    WebhookEventType,
)

NAMING_CONVENTION: Final = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}

TEXT_SEARCH_CONFIG: Final = "english"
"""The Postgres text-search configuration used to build and query ``chunks.tsv``."""
SEARCH_TOTAL_SHARDS: Final = 16
"""Rows of ``search_totals`` per tenant (the triggers in migration 0006 use the same)."""


OPEN_STAGE_STATUSES: Final[tuple[str, ...]] = (*UNFINISHED_STAGE_STATUSES, "failed", "dead")
"""Stage rows that are neither waiting for their turn nor done: what operators look for."""


def _one_of(column: str, values: tuple[str, ...]) -> str:
    quoted = ", ".join(f"'{value}'" for value in values)
    return f"{column} IN ({quoted})"


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING_CONVENTION)
    type_annotation_map = {
        datetime: DateTime(timezone=True),
        dict[str, Any]: JSONB,
    }


class Document(Base):
    __tablename__ = "documents"
    __table_args__ = (
        CheckConstraint(_one_of("status", DOCUMENT_STATUSES), name="status"),
        UniqueConstraint("tenant", "idempotency_key", name="uq_documents_tenant_idempotency_key"),
        UniqueConstraint("tenant", "external_id", name="uq_documents_tenant_external_id"),
        # GET /documents: a tenant's documents newest first, optionally filtered by
        # status, keyset-paginated; the tenant comes before the time, so a small
        # tenant's page never walks a big tenant's rows. Status leads the second index
        # because the reconciler finds unfinished documents of every tenant by it.
        Index("ix_documents_tenant_created", "tenant", "created_at", "id"),
        Index("ix_documents_status_tenant_created", "status", "tenant", "created_at", "id"),
        # Retention: the bytes of documents that succeeded long ago.
        Index(
            "ix_documents_succeeded_finished",
            "finished_at",
            postgresql_where=sql_text("status = 'succeeded'"),
        ),
    )

    id: Mapped[uuid.UUID] = mapped_column(UUID(as_uuid=True), primary_key=True)
    tenant: Mapped[str] = mapped_column(String(200), server_default="default")
    filename: Mapped[str] = mapped_column(String(1024))
    declared_content_type: Mapped[str | None] = mapped_column(String(255))
    detected_content_type: Mapped[str | None] = mapped_column(String(255))
    kind: Mapped[str | None] = mapped_column(String(32))
    encoding: Mapped[str | None] = mapped_column(String(32))
    """The text encoding validate detected, for text-based kinds."""
    size_bytes: Mapped[int] = mapped_column(BigInteger)
    sha256: Mapped[str] = mapped_column(String(64))
    status: Mapped[DocumentStatus] = mapped_column(String(16), server_default="pending")
    failure_reason: Mapped[str | None] = mapped_column(Text)
    generation: Mapped[int] = mapped_column(Integer, server_default="1")
    pipeline_version: Mapped[str | None] = mapped_column(String(64))
    """The version of the definition that planned the document's stage rows (a rerun
    onto the current definition updates it)."""
    idempotency_key: Mapped[str | None] = mapped_column(String(255))
    external_id: Mapped[str | None] = mapped_column(String(255))
    """The client's own key for the source document (unique per tenant): an upload that
    names it again replaces the document's bytes, as a new generation."""
    created_at: Mapped[datetime] = mapped_column(server_default=func.now())
    updated_at: Mapped[datetime] = mapped_column(server_default=func.now())
    finished_at: Mapped[datetime | None]
    deleted_at: Mapped[datetime | None]
    """The tombstone: when the document was erased (status ``deleted``), by whom and why;
    its events stay, its bytes, text, chunks and artifacts are gone."""
    deleted_by: Mapped[str | None] = mapped_column(String(255))
    delete_reason: Mapped[str | None] = mapped_column(Text)


class DocumentBlob(Base):
    """The uploaded bytes, apart from the metadata so that listings stay light."""

    __tablename__ = "document_blobs"

    document_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("documents.id", ondelete="CASCADE"), primary_key=True
    )
    data: Mapped[bytes] = mapped_column(LargeBinary)


class StageRun(Base):
    """One row per (document, stage): the state machine the executor drives."""

    __tablename__ = "stage_runs"
    __table_args__ = (
        CheckConstraint(_one_of("status", STAGE_STATUSES), name="status"),
        # The reconciler's sweep: unfinished rows whose deadline has passed.
        Index(
            "ix_stage_runs_due",
            "deadline_at",
            postgresql_where=sql_text(_one_of("status", UNFINISHED_STAGE_STATUSES)),
        ),
        # GET /stages counts the unfinished rows per stage, a rerun finds a stage's dead
        # ones: the index holds only rows that are neither pending nor succeeded, so
        # the transitions every document makes (pending → queued → succeeded) add no
        # entry to it for most of them (migration 0014).
        Index(
            "ix_stage_runs_stage_open",
            "stage",
            "status",
            postgresql_where=sql_text(_one_of("status", OPEN_STAGE_STATUSES)),
        ),
        # GET /stages: what finished in the last minutes, per stage (only rows that did).
        Index(
            "ix_stage_runs_stage_finished",
            "stage",
            "finished_at",
            postgresql_where=sql_text("finished_at IS NOT NULL"),
        ),
    )

    document_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("documents.id", ondelete="CASCADE"), primary_key=True
    )
    stage: Mapped[str] = mapped_column(String(32), primary_key=True)
    position: Mapped[int] = mapped_column(Integer)
    status: Mapped[StageStatus] = mapped_column(String(16), server_default="pending")
    generation: Mapped[int] = mapped_column(Integer, server_default="1")
    attempts: Mapped[int] = mapped_column(Integer, server_default="0")
    """Attempts of the current retry budget (a replay or rerun starts a new one)."""
    fence: Mapped[int] = mapped_column(BigInteger, server_default="0")
    """The fencing token of the attempt that holds the row: it grows at every claim and is
    never reset, so an old attempt can never pass for a newer one."""
    retry_at: Mapped[datetime | None]
    """When a ``retrying`` row is due: no delivery may claim it before."""
    queued_at: Mapped[datetime | None]
    started_at: Mapped[datetime | None]
    finished_at: Mapped[datetime | None]
    duration_ms: Mapped[int | None] = mapped_column(Integer)
    deadline_at: Mapped[datetime | None]
    """When an unfinished row is overdue: queue grace, time limit plus slack, or retry due time."""
    error_type: Mapped[str | None] = mapped_column(String(255))
    error_message: Mapped[str | None] = mapped_column(Text)
    error_transient: Mapped[bool | None]
    progress_current: Mapped[int | None] = mapped_column(Integer)
    progress_total: Mapped[int | None] = mapped_column(Integer)
    message_id: Mapped[str | None] = mapped_column(String(64))
    worker_id: Mapped[str | None] = mapped_column(String(255))
    updated_at: Mapped[datetime] = mapped_column(server_default=func.now())


class StageEvent(Base):
    """Append-only history of every attempt and transition: the operator's audit log."""

    __tablename__ = "stage_events"
    __table_args__ = (
        Index("ix_stage_events_document", "document_id", "id"),
        # The event streams read what committed since their cursor, by transaction id:
        # a BRIN index, since ``xact`` grows with the table (almost free to maintain).
        Index(
            "ix_stage_events_xact",
            "xact",
            postgresql_using="brin",
            postgresql_with={"pages_per_range": 32},
        ),
        # Retention: the oldest events that may go (a document's outcome event never does).
        Index(
            "ix_stage_events_created",
            "created_at",
            postgresql_where=sql_text(
                "event NOT IN ('document_succeeded', 'document_failed', 'document_deleted')"
            ),
        ),
    )

    id: Mapped[int] = mapped_column(BigInteger, Identity(), primary_key=True)
    document_id: Mapped[uuid.UUID | None] = mapped_column(
        ForeignKey("documents.id", ondelete="CASCADE")
    )
    """Null only for operator actions on dead letters that name no document."""
    stage: Mapped[str | None] = mapped_column(String(32))
    generation: Mapped[int] = mapped_column(Integer)
    event: Mapped[StageEventName] = mapped_column(String(32))
    attempt: Mapped[int | None] = mapped_column(Integer)
    message_id: Mapped[str | None] = mapped_column(String(64))
    detail: Mapped[dict[str, Any]] = mapped_column(server_default=sql_text("'{}'::jsonb"))
    created_at: Mapped[datetime] = mapped_column(server_default=func.now())
    xact: Mapped[int | None] = mapped_column(
        BigInteger, server_default=sql_text("(pg_current_xact_id()::text)::bigint")
    )
    """The id of the transaction that wrote the event (null for events written before
    migration 0009). The event streams order by ``(xact, id)`` and read only below the
    oldest running transaction, so an event that commits late is never skipped
    (see :mod:`pipeline.events.feed`)."""


class DocumentText(Base):
    """The extract stage's output: normalised text and page spans."""

    __tablename__ = "document_texts"

    document_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("documents.id", ondelete="CASCADE"), primary_key=True
    )
    generation: Mapped[int] = mapped_column(Integer)
    text: Mapped[str] = mapped_column(Text)
    pages: Mapped[list[Any]] = mapped_column(JSONB, server_default=sql_text("'[]'::jsonb"))
    char_count: Mapped[int] = mapped_column(Integer)
    created_at: Mapped[datetime] = mapped_column(server_default=func.now())


class StoredArtifact(Base):
    """An artifact a stage wrote (``chunks``, ``vectors``, a custom stage's), replaced on
    every run, as MessagePack of the artifact's type.

    Keeping these apart from ``chunks`` lets the index stage swap a document's
    searchable chunks in one transaction, so search never sees a half-built set.
    """

    __tablename__ = "artifacts"

    document_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("documents.id", ondelete="CASCADE"), primary_key=True
    )
    name: Mapped[str] = mapped_column(String(32), primary_key=True)
    stage: Mapped[str | None] = mapped_column(String(32))
    """The stage that wrote it."""
    generation: Mapped[int] = mapped_column(Integer)
    payload: Mapped[bytes] = mapped_column(LargeBinary)
    created_at: Mapped[datetime] = mapped_column(server_default=func.now())


class Chunk(Base):
    """A searchable piece of a document: text, full-text vector and embedding.

    Chunks are replaced, never edited (the index stage deletes a document's chunks and
    inserts the new ones): triggers keep ``chunk_terms`` and ``search_totals`` in step
    with every insert and delete, and refuse an update of what they derive from.
    """

    __tablename__ = "chunks"
    __table_args__ = (
        UniqueConstraint("document_id", "ordinal", name="uq_chunks_document_ordinal"),
        Index("ix_chunks_tsv", "tsv", postgresql_using="gin"),
        # Exact semantic search: a tenant's vectors of one model, and what changed since.
        Index("ix_chunks_tenant_model_id", "tenant", "embedding_model", "id"),
    )

    id: Mapped[int] = mapped_column(BigInteger, Identity(), primary_key=True)
    document_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("documents.id", ondelete="CASCADE"))
    tenant: Mapped[str] = mapped_column(String(200))
    """The document's tenant (which never changes), so that search filters one table."""
    ordinal: Mapped[int] = mapped_column(Integer)
    text: Mapped[str] = mapped_column(Text)
    start_offset: Mapped[int] = mapped_column(Integer)
    end_offset: Mapped[int] = mapped_column(Integer)
    token_count: Mapped[int] = mapped_column(Integer)
    page: Mapped[int | None] = mapped_column(Integer)
    tsv: Mapped[str] = mapped_column(
        TSVECTOR, Computed(f"to_tsvector('{TEXT_SEARCH_CONFIG}', text)", persisted=True)
    )
    embedding: Mapped[list[float]] = mapped_column(ARRAY(REAL))
    embedding_model: Mapped[str] = mapped_column(String(64))


class ChunkTerm(Base):
    """One posting of the lexical index: a term of a chunk, with its frequency there.

    Derived from ``chunks.tsv`` by a trigger (never written by the application), keyed
    for BM25: a query reads the postings of its terms in one tenant, and the index
    carries the term frequency and the chunk's length so that no heap row is read.
    """

    __tablename__ = "chunk_terms"
    __table_args__ = (
        PrimaryKeyConstraint(
            "tenant", "term", "chunk_id", name="pk_chunk_terms", postgresql_include=["tf", "length"]
        ),
    )

    tenant: Mapped[str] = mapped_column(String(200))
    term: Mapped[str] = mapped_column(Text)
    chunk_id: Mapped[int] = mapped_column(BigInteger)
    tf: Mapped[int] = mapped_column(Integer)
    """How often the term occurs in the chunk (its positions in the tsvector)."""
    length: Mapped[int] = mapped_column(Integer)
    """The chunk's length in terms (all positions of all its lexemes)."""


class SearchTotal(Base):
    """A tenant's chunk count and total length, for BM25's average length and IDF.

    Kept by the same triggers, spread over ``SEARCH_TOTAL_SHARDS`` rows per tenant by a
    hash of the document id, so that concurrent index transactions rarely wait for one
    another; a tenant's totals are the sums over its shards.
    """

    __tablename__ = "search_totals"

    tenant: Mapped[str] = mapped_column(String(200), primary_key=True)
    shard: Mapped[int] = mapped_column(Integer, primary_key=True)
    chunks: Mapped[int] = mapped_column(BigInteger)
    length: Mapped[int] = mapped_column(BigInteger)


class DeadLetter(Base):
    """A durable copy of every message that failed for good, kept for replay."""

    __tablename__ = "dead_letters"
    __table_args__ = (
        CheckConstraint(_one_of("status", DEAD_LETTER_STATUSES), name="status"),
        # Listing: newest first by (failed_at, id), filtered by status, stage or error type.
        Index("ix_dead_letters_failed", "failed_at", "id"),
        Index("ix_dead_letters_status_failed", "status", "failed_at", "id"),
        Index("ix_dead_letters_stage_failed", "stage", "failed_at", "id"),
        Index("ix_dead_letters_error_type_failed", "error_type", "failed_at", "id"),
        Index("ix_dead_letters_document", "document_id"),
        Index("ix_dead_letters_message", "queue_name", "message_id"),
    )

    id: Mapped[uuid.UUID] = mapped_column(UUID(as_uuid=True), primary_key=True)
    document_id: Mapped[uuid.UUID | None] = mapped_column(
        ForeignKey("documents.id", ondelete="SET NULL")
    )
    stage: Mapped[str | None] = mapped_column(String(32))
    generation: Mapped[int | None] = mapped_column(Integer)
    actor_name: Mapped[str] = mapped_column(String(255))
    queue_name: Mapped[str] = mapped_column(String(255))
    message_id: Mapped[str] = mapped_column(String(64))
    message: Mapped[dict[str, Any]]
    error_type: Mapped[str] = mapped_column(String(255))
    error_message: Mapped[str] = mapped_column(Text)
    traceback: Mapped[str | None] = mapped_column(Text)
    attempts: Mapped[int] = mapped_column(Integer)
    failed_at: Mapped[datetime] = mapped_column(server_default=func.now())
    status: Mapped[DeadLetterStatus] = mapped_column(String(16), server_default="dead")
    replay_count: Mapped[int] = mapped_column(Integer, server_default="0")
    replayed_at: Mapped[datetime | None]
    replayed_message_id: Mapped[str | None] = mapped_column(String(64))


class OperationJob(Base):
    """A bulk replay, discard or rerun accepted over HTTP and carried out by a worker."""

    __tablename__ = "operation_jobs"
    __table_args__ = (
        CheckConstraint(_one_of("kind", JOB_KINDS), name="kind"),
        CheckConstraint(_one_of("status", JOB_STATUSES), name="status"),
        Index(
            "ix_operation_jobs_unfinished",
            "status",
            postgresql_where=sql_text(_one_of("status", UNFINISHED_JOB_STATUSES)),
        ),
        # Retention: finished jobs, oldest first.
        Index(
            "ix_operation_jobs_finished",
            "finished_at",
            postgresql_where=sql_text("status IN ('succeeded', 'failed')"),
        ),
    )

    id: Mapped[uuid.UUID] = mapped_column(UUID(as_uuid=True), primary_key=True)
    tenant: Mapped[str] = mapped_column(String(200), server_default="default")
    """The tenant whose key made the job: it acts on that tenant's items, and only it sees it."""
    kind: Mapped[JobKind] = mapped_column(String(16))
    status: Mapped[JobStatus] = mapped_column(String(16), server_default="queued")
    request: Mapped[dict[str, Any]]
    requested_by: Mapped[str] = mapped_column(String(255))
    total: Mapped[int | None] = mapped_column(Integer)
    done: Mapped[int] = mapped_column(Integer, server_default="0")
    skipped: Mapped[int] = mapped_column(Integer, server_default="0")
    failed: Mapped[int] = mapped_column(Integer, server_default="0")
    """Items the job could not carry out (each left untouched, and reported)."""
    error: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(server_default=func.now())
    dispatched_at: Mapped[datetime] = mapped_column(server_default=func.now())
    """When its message was last sent; the reconciler re-sends a queued job's lost message."""
    started_at: Mapped[datetime | None]
    heartbeat_at: Mapped[datetime | None]
    """Updated as the job makes progress; a running job without one for long is dead."""
    finished_at: Mapped[datetime | None]


class ApiKey(Base):
    """An API key: who (tenant) may do what (scopes), stored as a hash.

    A key is ``pk_<prefix>_<secret>``. ``prefix`` is public: it finds the row and names
    the key in logs and the CLI. Only the SHA-256 of the whole key is stored. The
    secret is 256 random bits, so a fast hash is right: there is nothing to guess that
    a slow, salted hash (as for passwords) would protect better, and verifying stays a
    microsecond on the upload path.
    """

    __tablename__ = "api_keys"
    __table_args__ = (
        CheckConstraint(
            f"cardinality(scopes) > 0 AND scopes <@ ARRAY[{', '.join(repr(s) for s in SCOPES)}]"
            "::text[]",
            name="scopes",
        ),
        CheckConstraint("rate_limit_per_s >= 0", name="rate_limit_per_s"),
        Index("ix_api_keys_tenant", "tenant"),
    )

    id: Mapped[uuid.UUID] = mapped_column(UUID(as_uuid=True), primary_key=True)
    tenant: Mapped[str] = mapped_column(String(200))
    name: Mapped[str | None] = mapped_column(String(200))
    prefix: Mapped[str] = mapped_column(String(32), unique=True)
    secret_hash: Mapped[bytes] = mapped_column(LargeBinary)
    """SHA-256 of the whole key."""
    scopes: Mapped[list[Scope]] = mapped_column(ARRAY(Text))
    rate_limit_per_s: Mapped[float | None] = mapped_column(Double)
    """Uploads per second for this key; null: the settings' default; 0: unlimited."""
    created_at: Mapped[datetime] = mapped_column(server_default=func.now())
    revoked_at: Mapped[datetime | None]


class ServerSecret(Base):
    """A random secret the whole deployment shares, made by whichever process needs it first.

    Every API process reads the same row, so what one signs (pagination cursors) the
    others accept, across restarts too; a configured secret (``PIPELINE_CURSOR_SECRET``)
    is used instead where there is one.
    """

    __tablename__ = "server_secrets"

    name: Mapped[str] = mapped_column(Text, primary_key=True)
    secret: Mapped[bytes] = mapped_column(LargeBinary)
    created_at: Mapped[datetime] = mapped_column(server_default=func.now())


class WebhookEndpoint(Base):
    """Where a tenant wants to hear about its documents, and the secret deliveries are
    signed with (Standard Webhooks: ``whsec_`` and base64 of 32 random bytes)."""

    __tablename__ = "webhook_endpoints"
    __table_args__ = (
        CheckConstraint(
            "cardinality(events) > 0 AND events <@ ARRAY["
            f"{', '.join(repr(e) for e in WEBHOOK_EVENT_TYPES)}]::text[]",
            name="events",
        ),
        Index("ix_webhook_endpoints_tenant", "tenant", "created_at"),
    )

    id: Mapped[uuid.UUID] = mapped_column(UUID(as_uuid=True), primary_key=True)
    tenant: Mapped[str] = mapped_column(String(200))
    url: Mapped[str] = mapped_column(Text)
    events: Mapped[list[WebhookEventType]] = mapped_column(ARRAY(Text))
    description: Mapped[str | None] = mapped_column(Text)
    secret: Mapped[str] = mapped_column(Text)
    previous_secret: Mapped[str | None] = mapped_column(Text)
    """After a rotation, deliveries are signed with both secrets until this one expires."""
    previous_secret_expires_at: Mapped[datetime | None]
    enabled: Mapped[bool] = mapped_column(server_default=sql_text("true"))
    disabled_reason: Mapped[str | None] = mapped_column(Text)
    """Why it was disabled (``410 Gone`` from the receiver, or an operator)."""
    created_by: Mapped[str] = mapped_column(String(255))
    created_at: Mapped[datetime] = mapped_column(server_default=func.now())
    updated_at: Mapped[datetime] = mapped_column(server_default=func.now())


class WebhookDelivery(Base):
    """The outbox: one row per (endpoint, event), written in the transaction of the
    transition it reports, and driven to ``delivered`` or ``dead`` by its own actor."""

    __tablename__ = "webhook_deliveries"
    __table_args__ = (
        CheckConstraint(_one_of("status", DELIVERY_STATUSES), name="status"),
        UniqueConstraint("endpoint_id", "event_id", name="uq_webhook_deliveries_endpoint_event"),
        Index(
            "ix_webhook_deliveries_due",
            "deadline_at",
            postgresql_where=sql_text(_one_of("status", UNFINISHED_DELIVERY_STATUSES)),
        ),
        Index("ix_webhook_deliveries_endpoint_created", "endpoint_id", "created_at"),
        Index("ix_webhook_deliveries_created", "created_at"),
    )

    id: Mapped[uuid.UUID] = mapped_column(UUID(as_uuid=True), primary_key=True)
    """Also the delivery's ``webhook-id`` (as ``msg_<hex>``): the same on every attempt."""
    endpoint_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("webhook_endpoints.id", ondelete="CASCADE")
    )
    tenant: Mapped[str] = mapped_column(String(200))
    event_id: Mapped[int] = mapped_column(BigInteger)
    """The ``stage_events`` row it reports (no foreign key: retention may remove it first)."""
    event_type: Mapped[WebhookEventType] = mapped_column(String(32))
    document_id: Mapped[uuid.UUID | None] = mapped_column(UUID(as_uuid=True))
    payload: Mapped[dict[str, Any]]
    """The body sent, built when the row is written: ``{type, timestamp, data}``."""
    status: Mapped[DeliveryStatus] = mapped_column(String(16), server_default="pending")
    attempts: Mapped[int] = mapped_column(Integer, server_default="0")
    fence: Mapped[int] = mapped_column(BigInteger, server_default="0")
    """Grows at every claim, as a stage row's does."""
    next_attempt_at: Mapped[datetime] = mapped_column(server_default=func.now())
    deadline_at: Mapped[datetime | None] = mapped_column(server_default=func.now())
    """When an unfinished delivery is overdue and its message is re-sent."""
    message_id: Mapped[str | None] = mapped_column(String(64))
    last_status_code: Mapped[int | None] = mapped_column(Integer)
    last_error: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(server_default=func.now())
    updated_at: Mapped[datetime] = mapped_column(server_default=func.now())
    delivered_at: Mapped[datetime | None]


class WebhookAttempt(Base):
    """Every attempt to deliver, kept for the tenant and the operator to read."""

    __tablename__ = "webhook_attempts"
    __table_args__ = (Index("ix_webhook_attempts_delivery", "delivery_id", "id"),)

    id: Mapped[int] = mapped_column(BigInteger, Identity(), primary_key=True)
    delivery_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("webhook_deliveries.id", ondelete="CASCADE")
    )
    attempt: Mapped[int] = mapped_column(Integer)
    started_at: Mapped[datetime] = mapped_column(server_default=func.now())
    status_code: Mapped[int | None] = mapped_column(Integer)
    latency_ms: Mapped[int] = mapped_column(Integer)
    error: Mapped[str | None] = mapped_column(Text)


class RetentionTotal(Base):
    """How many rows of each kind the retention sweeps removed, ever: the counter
    ``/metrics`` serves (``pipeline_retention_removed_total``), kept in Postgres because
    the sweeps run in the reconciler's process and ``/metrics`` in the API's."""

    __tablename__ = "retention_totals"

    kind: Mapped[str] = mapped_column(String(32), primary_key=True)
    removed: Mapped[int] = mapped_column(BigInteger, server_default="0")
    updated_at: Mapped[datetime] = mapped_column(server_default=func.now())


class StageControl(Base):
    """An operator's switch on a stage, for the whole deployment: while ``paused``, no
    worker claims the stage's rows (they wait, ``queued``), and the reconciler does not
    treat them as stranded. Resuming sets ``resumed_at``; the reconciler then sends each
    row that waited a message of its own (see ``engine.reconciler``)."""

    __tablename__ = "stage_controls"

    stage: Mapped[str] = mapped_column(String(32), primary_key=True)
    paused: Mapped[bool] = mapped_column(server_default=sql_text("false"))
    paused_by: Mapped[str | None] = mapped_column(String(255))
    paused_at: Mapped[datetime | None]
    reason: Mapped[str | None] = mapped_column(Text)
    resumed_by: Mapped[str | None] = mapped_column(String(255))
    resumed_at: Mapped[datetime | None]


class ConsoleSession(Base):
    """A signed-in operator console session (``pipeline.access.console``).

    The browser holds a random token in an ``HttpOnly`` cookie; only its SHA-256 is
    stored (like an API key's), so a copy of this table signs nobody in. A session acts
    as the admin key it was opened with, for that key's tenant, and dies with it: each
    request joins the key, so a revoked (or deleted) key ends its sessions at once.
    ``csrf`` is the token every mutating form of the session must carry.
    """

    __tablename__ = "console_sessions"
    __table_args__ = (Index("ix_console_sessions_expires_at", "expires_at"),)

    id_hash: Mapped[bytes] = mapped_column(LargeBinary, primary_key=True)
    key_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("api_keys.id", ondelete="CASCADE"))
    tenant: Mapped[str] = mapped_column(String(200))
    key_label: Mapped[str] = mapped_column(String(420))
    """How the audit trail names the operator: ``tenant/prefix``, with the key's name."""
    csrf: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(server_default=func.now())
    expires_at: Mapped[datetime]


class ConsoleSignInToken(Base):
    """A one-time, short-lived sign-in link for an admin key (``pipeline console link``).

    The link carries a random token, stored here as its SHA-256, so the key itself never
    sits in a URL, a terminal's scrollback or a proxy's log. Using it once marks it used.
    """

    __tablename__ = "console_sign_in_tokens"
    __table_args__ = (Index("ix_console_sign_in_tokens_expires_at", "expires_at"),)

    token_hash: Mapped[bytes] = mapped_column(LargeBinary, primary_key=True)
    key_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("api_keys.id", ondelete="CASCADE"))
    created_at: Mapped[datetime] = mapped_column(server_default=func.now())
    expires_at: Mapped[datetime]
    used_at: Mapped[datetime | None]
