"""server secrets: a random secret the deployment's processes share (cursor signing)

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-02 09:00:00.000000

``server_secrets`` holds one row per named secret, created by whichever process needs
it first (``INSERT ... ON CONFLICT DO NOTHING``, then read back), so every API process
of a deployment signs and checks pagination cursors with the same key without any
configuration. ``PIPELINE_CURSOR_SECRET``, where set, is used instead.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0007"
down_revision: str | None = "0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "server_secrets",
        sa.Column("name", sa.Text(), nullable=False),
        sa.Column("secret", sa.LargeBinary(), nullable=False),
        sa.Column(
            "created_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.PrimaryKeyConstraint("name", name=op.f("pk_server_secrets")),
    )


def downgrade() -> None:
    op.drop_table("server_secrets")
