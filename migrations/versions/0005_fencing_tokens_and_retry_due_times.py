"""fencing tokens and retry due times on stage rows, failed items on jobs

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-01 10:30:00.000000

``stage_runs.fence`` is the fencing token of the attempt that holds a row: it grows at
every claim and is never reset (replay resets ``attempts``, the retry budget, not it).
``stage_runs.retry_at`` is when a ``retrying`` row is due; rows already retrying are
due at once, so none is stranded by the upgrade. ``operation_jobs.failed`` counts the
items a job could not carry out.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0005"
down_revision: str | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column(
        "stage_runs",
        sa.Column("fence", sa.BigInteger(), server_default=sa.text("0"), nullable=False),
    )
    op.add_column("stage_runs", sa.Column("retry_at", sa.DateTime(timezone=True), nullable=True))
    # A row claimed before this revision has ``attempts`` claims behind it.
    op.execute("UPDATE stage_runs SET fence = attempts WHERE attempts > 0")
    op.execute("UPDATE stage_runs SET retry_at = now() WHERE status = 'retrying'")
    op.add_column(
        "operation_jobs",
        sa.Column("failed", sa.Integer(), server_default=sa.text("0"), nullable=False),
    )


def downgrade() -> None:
    op.drop_column("operation_jobs", "failed")
    op.drop_column("stage_runs", "retry_at")
    op.drop_column("stage_runs", "fence")
