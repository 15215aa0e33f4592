"""`sync_runs.details`: a run's other counts (CRM contacts sharing a refId, local edits to
read-only contacts, ...), as a JSON object of the non-zero ones, so that `crm-sync status`
shows them after the cycle's own summary is gone. And a partial index on the runs still
`running`: every cycle closes those a killed process left, and runs are never pruned.

Revision ID: 0006
Revises: 0005
Create Date: 2026-11-28
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision: str = "0006"
down_revision: str | None = "0005"
branch_labels: str | None = None
depends_on: str | None = None


_RUNNING = sa.text("status = 'running'")


def upgrade() -> None:
    # a nullable column added: no table rebuild on either database
    op.add_column("sync_runs", sa.Column("details", sa.Text()))
    op.create_index("ix_sync_runs_running", "sync_runs", ["tenant"],
                    sqlite_where=_RUNNING, postgresql_where=_RUNNING)


def downgrade() -> None:
    op.drop_index("ix_sync_runs_running", table_name="sync_runs")
    with op.batch_alter_table("sync_runs") as batch:
        batch.drop_column("details")
