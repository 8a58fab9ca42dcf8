"""event feed, webhook outbox tables, document lifecycle columns

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-01 17:52:15.738181

- ``stage_events.xact``: the writing transaction's id, so that the event streams can
  read "everything that committed after my cursor" without skipping an event whose
  transaction commits late (see ``pipeline.events.feed``). Added without a default
  first (no table rewrite: old events keep a null), then given its default. A BRIN
  index serves the streams' range reads for almost nothing per insert.
- A statement trigger on ``stage_events`` notifies ``pipeline_events`` (an empty payload,
  so Postgres folds a transaction's notifications into one): the API processes'
  listeners wake up and read the new events from the table.
- A row trigger on ``documents.status`` writes ``document_succeeded``,
  ``document_failed`` and ``document_deleted`` events: every outcome has its event,
  whichever statement made it (the last stage's success, a dead stage, the reconciler,
  a delete), in the same transaction.
- ``documents``: ``deleted`` joins the statuses (a tombstone), with who, when and why;
  ``external_id`` (the client's own key, unique per tenant) for replace-by-key.
- ``webhook_endpoints``, ``webhook_deliveries`` (the outbox) and ``webhook_attempts``.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0009"
down_revision: str | None = "0008"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

OLD_STATUSES = "status IN ('pending', 'processing', 'succeeded', 'failed')"
NEW_STATUSES = "status IN ('pending', 'processing', 'succeeded', 'failed', 'deleted')"
XACT_DEFAULT = "(pg_current_xact_id()::text)::bigint"

TRIGGERS = """
CREATE FUNCTION pipeline_notify_events() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('pipeline_events', '');
    RETURN NULL;
END $$;

CREATE TRIGGER stage_events_notify AFTER INSERT ON stage_events
    FOR EACH STATEMENT EXECUTE FUNCTION pipeline_notify_events();

CREATE FUNCTION pipeline_document_outcome() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO stage_events (document_id, stage, generation, event, detail)
    VALUES (
        NEW.id, NULL, NEW.generation, 'document_' || NEW.status,
        CASE NEW.status
            WHEN 'failed' THEN jsonb_build_object('reason', NEW.failure_reason)
            WHEN 'deleted' THEN jsonb_build_object('by', NEW.deleted_by,
                                                   'reason', NEW.delete_reason)
            ELSE '{}'::jsonb
        END
    );
    RETURN NULL;
END $$;

CREATE TRIGGER documents_outcome AFTER UPDATE OF status ON documents
    FOR EACH ROW
    WHEN (NEW.status IN ('succeeded', 'failed', 'deleted')
          AND OLD.status IS DISTINCT FROM NEW.status)
    EXECUTE FUNCTION pipeline_document_outcome();
"""


def upgrade() -> None:
    op.create_table(
        "webhook_endpoints",
        sa.Column("id", sa.UUID(), nullable=False),
        sa.Column("tenant", sa.String(length=200), nullable=False),
        sa.Column("url", sa.Text(), nullable=False),
        sa.Column("events", postgresql.ARRAY(sa.Text()), nullable=False),
        sa.Column("description", sa.Text(), nullable=True),
        sa.Column("secret", sa.Text(), nullable=False),
        sa.Column("previous_secret", sa.Text(), nullable=True),
        sa.Column("previous_secret_expires_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("enabled", sa.Boolean(), server_default=sa.text("true"), nullable=False),
        sa.Column("disabled_reason", sa.Text(), nullable=True),
        sa.Column("created_by", sa.String(length=255), nullable=False),
        sa.Column(
            "created_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.Column(
            "updated_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.CheckConstraint(
            "cardinality(events) > 0 AND events <@ "
            "ARRAY['document.succeeded', 'document.failed', 'document.deleted', 'stage.dead']"
            "::text[]",
            name=op.f("ck_webhook_endpoints_events"),
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_webhook_endpoints")),
    )
    op.create_index(
        "ix_webhook_endpoints_tenant", "webhook_endpoints", ["tenant", "created_at"], unique=False
    )
    op.create_table(
        "webhook_deliveries",
        sa.Column("id", sa.UUID(), nullable=False),
        sa.Column("endpoint_id", sa.UUID(), nullable=False),
        sa.Column("tenant", sa.String(length=200), nullable=False),
        sa.Column("event_id", sa.BigInteger(), nullable=False),
        sa.Column("event_type", sa.String(length=32), nullable=False),
        sa.Column("document_id", sa.UUID(), nullable=True),
        sa.Column("payload", postgresql.JSONB(astext_type=sa.Text()), nullable=False),
        sa.Column("status", sa.String(length=16), server_default="pending", nullable=False),
        sa.Column("attempts", sa.Integer(), server_default="0", nullable=False),
        sa.Column("fence", sa.BigInteger(), server_default="0", nullable=False),
        sa.Column(
            "next_attempt_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.Column(
            "deadline_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=True,
        ),
        sa.Column("message_id", sa.String(length=64), nullable=True),
        sa.Column("last_status_code", sa.Integer(), nullable=True),
        sa.Column("last_error", sa.Text(), nullable=True),
        sa.Column(
            "created_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.Column(
            "updated_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.Column("delivered_at", sa.DateTime(timezone=True), nullable=True),
        sa.CheckConstraint(
            "status IN ('pending', 'delivering', 'retrying', 'delivered', 'dead', 'cancelled')",
            name=op.f("ck_webhook_deliveries_status"),
        ),
        sa.ForeignKeyConstraint(
            ["endpoint_id"],
            ["webhook_endpoints.id"],
            name=op.f("fk_webhook_deliveries_endpoint_id_webhook_endpoints"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_webhook_deliveries")),
        sa.UniqueConstraint("endpoint_id", "event_id", name="uq_webhook_deliveries_endpoint_event"),
    )
    op.create_index(
        "ix_webhook_deliveries_created", "webhook_deliveries", ["created_at"], unique=False
    )
    op.create_index(
        "ix_webhook_deliveries_due",
        "webhook_deliveries",
        ["deadline_at"],
        unique=False,
        postgresql_where=sa.text("status IN ('pending', 'delivering', 'retrying')"),
    )
    op.create_index(
        "ix_webhook_deliveries_endpoint_created",
        "webhook_deliveries",
        ["endpoint_id", "created_at"],
        unique=False,
    )
    op.create_table(
        "webhook_attempts",
        sa.Column("id", sa.BigInteger(), sa.Identity(always=False), nullable=False),
        sa.Column("delivery_id", sa.UUID(), nullable=False),
        sa.Column("attempt", sa.Integer(), nullable=False),
        sa.Column(
            "started_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.Column("status_code", sa.Integer(), nullable=True),
        sa.Column("latency_ms", sa.Integer(), nullable=False),
        sa.Column("error", sa.Text(), nullable=True),
        sa.ForeignKeyConstraint(
            ["delivery_id"],
            ["webhook_deliveries.id"],
            name=op.f("fk_webhook_attempts_delivery_id_webhook_deliveries"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_webhook_attempts")),
    )
    op.create_index(
        "ix_webhook_attempts_delivery", "webhook_attempts", ["delivery_id", "id"], unique=False
    )
    op.add_column("documents", sa.Column("external_id", sa.String(length=255), nullable=True))
    op.add_column("documents", sa.Column("deleted_at", sa.DateTime(timezone=True), nullable=True))
    op.add_column("documents", sa.Column("deleted_by", sa.String(length=255), nullable=True))
    op.add_column("documents", sa.Column("delete_reason", sa.Text(), nullable=True))
    op.create_unique_constraint(
        "uq_documents_tenant_external_id", "documents", ["tenant", "external_id"]
    )
    op.add_column("stage_events", sa.Column("xact", sa.BigInteger(), nullable=True))
    op.alter_column("stage_events", "xact", server_default=sa.text(XACT_DEFAULT))
    op.create_index(
        "ix_stage_events_xact",
        "stage_events",
        ["xact"],
        unique=False,
        postgresql_using="brin",
        postgresql_with={"pages_per_range": 32},
    )
    _statuses(NEW_STATUSES)
    op.execute(TRIGGERS)


def downgrade() -> None:
    op.execute("DROP TRIGGER documents_outcome ON documents")
    op.execute("DROP FUNCTION pipeline_document_outcome()")
    op.execute("DROP TRIGGER stage_events_notify ON stage_events")
    op.execute("DROP FUNCTION pipeline_notify_events()")
    op.execute("UPDATE documents SET status = 'failed' WHERE status = 'deleted'")
    _statuses(OLD_STATUSES)
    op.drop_index(
        "ix_stage_events_xact",
        table_name="stage_events",
        postgresql_using="brin",
        postgresql_with={"pages_per_range": 32},
    )
    op.drop_column("stage_events", "xact")
    op.drop_constraint("uq_documents_tenant_external_id", "documents", type_="unique")
    op.drop_column("documents", "delete_reason")
    op.drop_column("documents", "deleted_by")
    op.drop_column("documents", "deleted_at")
    op.drop_column("documents", "external_id")
    op.drop_index("ix_webhook_attempts_delivery", table_name="webhook_attempts")
    op.drop_table("webhook_attempts")
    op.drop_index("ix_webhook_deliveries_endpoint_created", table_name="webhook_deliveries")
    op.drop_index(
        "ix_webhook_deliveries_due",
        table_name="webhook_deliveries",
        postgresql_where=sa.text("status IN ('pending', 'delivering', 'retrying')"),
    )
    op.drop_index("ix_webhook_deliveries_created", table_name="webhook_deliveries")
    op.drop_table("webhook_deliveries")
    op.drop_index("ix_webhook_endpoints_tenant", table_name="webhook_endpoints")
    op.drop_table("webhook_endpoints")


def _statuses(check: str) -> None:
    op.execute("ALTER TABLE documents DROP CONSTRAINT ck_documents_status")
    op.execute(f"ALTER TABLE documents ADD CONSTRAINT ck_documents_status CHECK ({check})")
