"""The notes outbox's bookkeeping: note_outbox (one row per local note once looked at).

Revision ID: 0002
Revises: 0001
Create Date: 2024-12-03
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | None = None
depends_on: str | None = None


def upgrade() -> None:
    op.create_table(
        "note_outbox",
        sa.Column("tenant", sa.String(64), nullable=False),
        sa.Column("note_id", sa.BigInteger, nullable=False),
        sa.Column("status", sa.String(20), nullable=False),
        sa.Column("phone", sa.Text),
        sa.Column("attempts", sa.Integer, nullable=False, server_default="0"),
        sa.Column("last_error", sa.Text),
        sa.Column("sent_at", sa.DateTime(timezone=True)),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("tenant", "note_id", name="pk_note_outbox"),
    )
    op.create_index("ix_note_outbox_tenant_status", "note_outbox", ["tenant", "status"])


def downgrade() -> None:
    op.drop_index("ix_note_outbox_tenant_status", table_name="note_outbox")
    op.drop_table("note_outbox")
