"""api keys, tenant-owned operation jobs, tenant-first document indexes

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-21 08:23:01.041088
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "api_keys",
        sa.Column("id", sa.UUID(), nullable=False),
        sa.Column("tenant", sa.String(length=200), nullable=False),
        sa.Column("name", sa.String(length=200), nullable=True),
        sa.Column("prefix", sa.String(length=32), nullable=False),
        sa.Column("secret_hash", sa.LargeBinary(), nullable=False),
        sa.Column("scopes", postgresql.ARRAY(sa.Text()), nullable=False),
        sa.Column("rate_limit_per_s", sa.Double(), nullable=True),
        sa.Column(
            "created_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.Column("revoked_at", sa.DateTime(timezone=True), nullable=True),
        sa.CheckConstraint(
            "cardinality(scopes) > 0 AND scopes <@ ARRAY['ingest', 'read', 'admin']::text[]",
            name=op.f("ck_api_keys_scopes"),
        ),
        sa.CheckConstraint("rate_limit_per_s >= 0", name=op.f("ck_api_keys_rate_limit_per_s")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_api_keys")),
        sa.UniqueConstraint("prefix", name=op.f("uq_api_keys_prefix")),
    )
    op.create_index("ix_api_keys_tenant", "api_keys", ["tenant"], unique=False)
    # Listings are per tenant now: the tenant leads (after the status, which the
    # reconciler's sweep of unfinished documents selects by).
    op.drop_index(op.f("ix_documents_created"), table_name="documents")
    op.drop_index(op.f("ix_documents_status_created"), table_name="documents")
    op.create_index(
        "ix_documents_tenant_created", "documents", ["tenant", "created_at", "id"], unique=False
    )
    op.create_index(
        "ix_documents_status_tenant_created",
        "documents",
        ["status", "tenant", "created_at", "id"],
        unique=False,
    )
    # Jobs from before tenants were all made by the one tenant there was.
    op.add_column(
        "operation_jobs",
        sa.Column("tenant", sa.String(length=200), server_default="default", nullable=False),
    )


def downgrade() -> None:
    op.drop_column("operation_jobs", "tenant")
    op.drop_index("ix_documents_status_tenant_created", table_name="documents")
    op.drop_index("ix_documents_tenant_created", table_name="documents")
    op.create_index(
        op.f("ix_documents_status_created"),
        "documents",
        ["status", "created_at", "id"],
        unique=False,
    )
    op.create_index(op.f("ix_documents_created"), "documents", ["created_at", "id"], unique=False)
    op.drop_index("ix_api_keys_tenant", table_name="api_keys")
    op.drop_table("api_keys")
