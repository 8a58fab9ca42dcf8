"""the stage transition hot path: partial indexes on stage_runs

Every stage row is updated two or three times per document (queued, running,
succeeded), and no update can be HOT while it changes an indexed column (the status is
in every index but the key). What is left to save is the index entries each new row
version adds: the per-stage status index now holds only rows that are neither pending
nor succeeded (GET /stages counts the unfinished ones, a rerun finds the dead ones),
and the finish-time index only rows that finished.

Revision ID: 0014
Revises: 0013
Create Date: 2026-12-01 18:45:00.000000
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0014"
down_revision: str | None = "0013"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


OPEN = "status IN ('queued', 'running', 'retrying', 'failed', 'dead')"


def upgrade() -> None:
    op.drop_index("ix_stage_runs_stage_status", table_name="stage_runs")
    op.create_index(
        "ix_stage_runs_stage_open",
        "stage_runs",
        ["stage", "status"],
        postgresql_where=sa.text(OPEN),
    )
    op.drop_index("ix_stage_runs_stage_finished", table_name="stage_runs")
    op.create_index(
        "ix_stage_runs_stage_finished",
        "stage_runs",
        ["stage", "finished_at"],
        postgresql_where=sa.text("finished_at IS NOT NULL"),
    )


def downgrade() -> None:
    op.drop_index("ix_stage_runs_stage_finished", table_name="stage_runs")
    op.create_index("ix_stage_runs_stage_finished", "stage_runs", ["stage", "finished_at"])
    op.drop_index("ix_stage_runs_stage_open", table_name="stage_runs")
    op.create_index("ix_stage_runs_stage_status", "stage_runs", ["stage", "status"])
