"""The bookkeeping tables: sync_state, sync_runs, conflicts, tombstones, sync_lease.

Revision ID: 0001
Revises:
Create Date: 2024-11-26
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision: str = "0001"
down_revision: str | None = None
branch_labels: str | None = None
depends_on: str | None = None

RUN_COUNTS = (
    "pulled", "created_local", "updated_local", "deleted_local", "created_remote",
    "updated_remote", "deleted_remote", "conflicts", "errors", "api_calls",
)


def _tenant() -> sa.Column[str]:
    return sa.Column("tenant", sa.String(64), nullable=False)


def _ts(name: str, nullable: bool = True) -> sa.Column[object]:
    return sa.Column(name, sa.DateTime(timezone=True), nullable=nullable)


def _count(name: str) -> sa.Column[int]:
    return sa.Column(name, sa.Integer, nullable=False, server_default="0")


def upgrade() -> None:
    op.create_table(
        "sync_state",
        _tenant(),
        sa.Column("key", sa.String(255), nullable=False),
        sa.Column("ref_id", sa.String(255)),
        sa.Column("public_id", sa.String(255)),
        sa.Column("status", sa.String(20), nullable=False),
        sa.Column("base", sa.Text),
        sa.Column("base_hash", sa.String(64)),
        sa.Column("local_hash", sa.String(64)),
        sa.Column("remote", sa.Text),
        sa.Column("remote_updated_ms", sa.BigInteger),
        sa.Column("last_error", sa.Text),
        _count("attempts"),
        _ts("pending_since"),
        _ts("updated_at", nullable=False),
        sa.PrimaryKeyConstraint("tenant", "key", name="pk_sync_state"),
    )
    op.create_index("ix_sync_state_tenant_public_id", "sync_state", ["tenant", "public_id"])
    op.create_index("ix_sync_state_tenant_status", "sync_state", ["tenant", "status"])

    op.create_table(
        "sync_runs",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        _tenant(),
        sa.Column("kind", sa.String(20), nullable=False),
        _ts("started_at", nullable=False),
        _ts("finished_at"),
        sa.Column("status", sa.String(20), nullable=False),
        *(_count(name) for name in RUN_COUNTS),
        sa.Column("api_calls_by_endpoint", sa.Text),
        sa.Column("message", sa.Text),
    )
    op.create_index("ix_sync_runs_tenant_id", "sync_runs", ["tenant", "id"])

    op.create_table(
        "conflicts",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        _tenant(),
        sa.Column("key", sa.String(255), nullable=False),
        sa.Column("field", sa.String(255), nullable=False),
        sa.Column("base_value", sa.Text),
        sa.Column("local_value", sa.Text),
        sa.Column("remote_value", sa.Text),
        sa.Column("policy", sa.String(20), nullable=False),
        sa.Column("resolution", sa.String(20), nullable=False),
        sa.Column("run_id", sa.Integer),
        _ts("created_at", nullable=False),
        _ts("resolved_at"),
    )
    op.create_index("ix_conflicts_tenant_key", "conflicts", ["tenant", "key"])
    op.create_index("ix_conflicts_tenant_resolved_at", "conflicts", ["tenant", "resolved_at"])

    op.create_table(
        "tombstones",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        _tenant(),
        sa.Column("key", sa.String(255), nullable=False),
        sa.Column("public_id", sa.String(255)),
        sa.Column("side", sa.String(10), nullable=False),
        sa.Column("values", sa.Text, nullable=False),
        sa.Column("run_id", sa.Integer),
        _ts("deleted_at", nullable=False),
    )
    op.create_index("ix_tombstones_tenant_key", "tombstones", ["tenant", "key"])

    op.create_table(
        "sync_lease",
        sa.Column("tenant", sa.String(64), primary_key=True),
        sa.Column("holder", sa.String(255), nullable=False),
        _ts("expires_at", nullable=False),
        _ts("acquired_at", nullable=False),
    )


def downgrade() -> None:
    op.drop_table("sync_lease")
    op.drop_index("ix_tombstones_tenant_key", table_name="tombstones")
    op.drop_table("tombstones")
    op.drop_index("ix_conflicts_tenant_resolved_at", table_name="conflicts")
    op.drop_index("ix_conflicts_tenant_key", table_name="conflicts")
    op.drop_table("conflicts")
    op.drop_index("ix_sync_runs_tenant_id", table_name="sync_runs")
    op.drop_table("sync_runs")
    op.drop_index("ix_sync_state_tenant_status", table_name="sync_state")
    op.drop_index("ix_sync_state_tenant_public_id", table_name="sync_state")
    op.drop_table("sync_state")
