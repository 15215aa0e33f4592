"""`note_outbox.notes_table`: which local notes table a note is in, part of its identity.

Note ids are only unique within one notes table: when the mapping's `notes_table` pointed to
a new table, its notes 1, 2, ... were taken for the old table's notes already sent and never
sent; and a second tenant on the same notes table could not be told from the first. Rows an
earlier version wrote get '' here, and the tenant's notes table of now when crm-sync next
starts (NotesOutbox.ensure_table).

Revision ID: 0007
Revises: 0006
Create Date: 2026-11-28
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision: str = "0007"
down_revision: str | None = "0006"
branch_labels: str | None = None
depends_on: str | None = None


def upgrade() -> None:
    # SQLite rebuilds the table for the new primary key (a small table: one row per note)
    with op.batch_alter_table("note_outbox") as batch:
        batch.add_column(sa.Column("notes_table", sa.String(255), nullable=False,
                                   server_default=""))
        batch.drop_constraint("pk_note_outbox", type_="primary")
        batch.create_primary_key("pk_note_outbox", ["tenant", "notes_table", "note_id"])
    # NotesOutbox.refuse_shared, each cycle: another tenant on this notes table?
    op.create_index("ix_note_outbox_notes_table_tenant", "note_outbox", ["notes_table", "tenant"])


def downgrade() -> None:
    op.drop_index("ix_note_outbox_notes_table_tenant", table_name="note_outbox")
    with op.batch_alter_table("note_outbox") as batch:
        batch.drop_constraint("pk_note_outbox", type_="primary")
        batch.create_primary_key("pk_note_outbox", ["tenant", "note_id"])
        batch.drop_column("notes_table")
