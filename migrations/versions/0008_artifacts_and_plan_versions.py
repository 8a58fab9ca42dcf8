"""artifacts: stage outputs keyed by artifact name; documents record their plan's version

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-01 16:00:00.000000

Stages now read and write named artifacts (``chunks``, ``vectors``, or a custom
stage's own), so ``stage_outputs`` (keyed by the stage that wrote it) becomes
``artifacts`` keyed by the artifact's name, with the writer kept beside it. The two
rows a built-in stage wrote are renamed in place (``chunk`` → ``chunks``, ``embed`` →
``vectors``), so documents in flight across the upgrade read what they wrote.

``documents.pipeline_version`` is the version of the definition that planned the
document's stage rows (existing documents were planned by the built-in five).
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0008"
down_revision: str | None = "0007"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

RENAMES = (("chunk", "chunks"), ("embed", "vectors"))


def upgrade() -> None:
    op.rename_table("stage_outputs", "artifacts")
    op.alter_column("artifacts", "stage", new_column_name="name")
    op.execute("ALTER TABLE artifacts RENAME CONSTRAINT pk_stage_outputs TO pk_artifacts")
    op.execute(
        "ALTER TABLE artifacts RENAME CONSTRAINT fk_stage_outputs_document_id_documents "
        "TO fk_artifacts_document_id_documents"
    )
    op.add_column("artifacts", sa.Column("stage", sa.String(length=32), nullable=True))
    for stage, name in RENAMES:
        op.execute(
            sa.text(
                "UPDATE artifacts SET name = :name, stage = :stage WHERE name = :stage"
            ).bindparams(name=name, stage=stage)
        )
    op.add_column("documents", sa.Column("pipeline_version", sa.String(length=64), nullable=True))
    op.execute("UPDATE documents SET pipeline_version = 'builtin-1'")


def downgrade() -> None:
    op.drop_column("documents", "pipeline_version")
    for stage, name in RENAMES:
        op.execute(
            sa.text("UPDATE artifacts SET name = :stage WHERE name = :name").bindparams(
                name=name, stage=stage
            )
        )
    op.execute("DELETE FROM artifacts WHERE name NOT IN ('chunk', 'embed')")
    op.drop_column("artifacts", "stage")
    op.execute(
        "ALTER TABLE artifacts RENAME CONSTRAINT fk_artifacts_document_id_documents "
        "TO fk_stage_outputs_document_id_documents"
    )
    op.execute("ALTER TABLE artifacts RENAME CONSTRAINT pk_artifacts TO pk_stage_outputs")
    op.alter_column("artifacts", "name", new_column_name="stage")
    op.rename_table("artifacts", "stage_outputs")
