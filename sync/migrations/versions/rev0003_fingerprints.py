"""Fingerprints that let a cycle skip an unchanged contact without parsing or converting it:
`sync_state.remote_hash` (the digest of the contact's listed JSON) and a `local_hash` wide
enough for SQLite's exact row image.

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-26
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | None = None
depends_on: str | None = None


def upgrade() -> None:
    with op.batch_alter_table("sync_state") as batch:
        batch.add_column(sa.Column("remote_hash", sa.String(64)))
        # the old Python-made fingerprints mean nothing to the new ones: dropped, they are
        # recomputed by the next cycle
        batch.alter_column("local_hash", type_=sa.Text(), existing_type=sa.String(64))
    op.execute("UPDATE sync_state SET local_hash = NULL")


def downgrade() -> None:
    op.execute("UPDATE sync_state SET local_hash = NULL")
    with op.batch_alter_table("sync_state") as batch:
        batch.alter_column("local_hash", type_=sa.String(64), existing_type=sa.Text())
        batch.drop_column("remote_hash")
