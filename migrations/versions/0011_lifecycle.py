"""indexes for the retention sweeps, and the table that counts what they removed

Each sweep reads its kind oldest first and removes a bounded batch: the indexes let it
find the oldest rows of that kind by an index scan, however large the table. The
counts are kept in Postgres (``retention_totals``) because the sweeps run in the
reconciler's process and ``/metrics`` is served by the API's.

Revision ID: 0011
Revises: 0010
Create Date: 2026-12-01 18:00:00.000000
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0011"
down_revision: str | None = "0010"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "retention_totals",
        sa.Column("kind", sa.String(length=32), nullable=False),
        sa.Column("removed", sa.BigInteger(), server_default="0", nullable=False),
        sa.Column(
            "updated_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.PrimaryKeyConstraint("kind", name=op.f("pk_retention_totals")),
    )
    op.create_index(
        "ix_stage_events_created",
        "stage_events",
        ["created_at"],
        postgresql_where=sa.text(
            "event NOT IN ('document_succeeded', 'document_failed', 'document_deleted')"
        ),
    )
    op.create_index(
        "ix_documents_succeeded_finished",
        "documents",
        ["finished_at"],
        postgresql_where=sa.text("status = 'succeeded'"),
    )
    op.create_index(
        "ix_operation_jobs_finished",
        "operation_jobs",
        ["finished_at"],
        postgresql_where=sa.text("status IN ('succeeded', 'failed')"),
    )


def downgrade() -> None:
    op.drop_index("ix_operation_jobs_finished", table_name="operation_jobs")
    op.drop_index("ix_documents_succeeded_finished", table_name="documents")
    op.drop_index("ix_stage_events_created", table_name="stage_events")
    op.drop_table("retention_totals")
