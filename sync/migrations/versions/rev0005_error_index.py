"""A partial index on `sync_state (tenant, status)` for the rows whose error kept their status:
every cycle counts the rows in error, and without it that count read every row (85 ms a
cycle at 100k contacts on SQLite).

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-28
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision: str = "0005"
down_revision: str | None = "0004"
branch_labels: str | None = None
depends_on: str | None = None

_WHERE = sa.text("last_error IS NOT NULL")


def upgrade() -> None:
    op.create_index("ix_sync_state_tenant_errors", "sync_state", ["tenant", "status"],
                    sqlite_where=_WHERE, postgresql_where=_WHERE)


def downgrade() -> None:
    op.drop_index("ix_sync_state_tenant_errors", table_name="sync_state")
