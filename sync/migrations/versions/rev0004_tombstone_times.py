"""An index on `tombstones (tenant, side, deleted_at)`: a cycle asks which contacts it
deleted in the CRM in the last hour (a listing that lags a delete), and tombstones are kept
for good, so without it that question reads every one.

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-27
"""

from __future__ import annotations

from alembic import op

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | None = None
depends_on: str | None = None


def upgrade() -> None:
    op.create_index("ix_tombstones_tenant_side_deleted_at", "tombstones",
                    ["tenant", "side", "deleted_at"])


def downgrade() -> None:
    op.drop_index("ix_tombstones_tenant_side_deleted_at", table_name="tombstones")
