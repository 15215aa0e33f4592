"""Revision 0002 adds note_outbox to a database already at 0001, matching schema.py; 0007 names
each row's notes table."""

from __future__ import annotations

from datetime import UTC, datetime

from sqlalchemy import inspect, text

from sync.mapping_file import load_mapping
from sync.notes import NotesOutbox
from sync.settings import default_mapping_file
from sync.store import make_engine
from sync.store.local import LocalTable, ensure_table
from sync.store.migrate import current_revision, head_revision, schema_diffs, upgrade
from sync.store.schema import note_outbox


def test_upgrade_from_0001_adds_the_outbox(db_url: str) -> None:
    engine = make_engine(db_url)
    try:
        upgrade(engine, "0001")
        assert not inspect(engine).has_table("note_outbox")
        upgrade(engine)
        assert current_revision(engine) == head_revision() == "0007"
        assert inspect(engine).has_table(note_outbox.name)
        assert schema_diffs(engine) == []
    finally:
        engine.dispose()


def test_outbox_rows_from_before_0007_stay_with_the_tenants_notes_table(db_url: str) -> None:
    """Rows written before they named their notes table are the tenant's notes table's once
    crm-sync starts (ensure_table): a note sent then is not sent again, nor one unknown."""
    engine = make_engine(db_url)
    try:
        upgrade(engine, "0006")
        spec = load_mapping(default_mapping_file())
        local = LocalTable.for_spec(spec)
        ensure_table(engine, spec)
        outbox = NotesOutbox(engine, "acme", spec, local)
        assert outbox.table is not None
        outbox.table.metadata.create_all(engine)
        now = datetime.now(UTC)
        with engine.begin() as conn:
            conn.execute(outbox.table.insert(), [
                {"ref_id": "KH-1", "content": f"ghi chú {i}"} for i in (1, 2, 3)])
            conn.execute(text(
                "INSERT INTO note_outbox (tenant, note_id, status, attempts, created_at, "
                "updated_at) VALUES ('acme', 1, 'sent', 1, :t, :t), "
                "('acme', 2, 'unknown', 1, :t, :t), ('other', 1, 'sent', 1, :t, :t)"),
                {"t": now})
        upgrade(engine)
        assert schema_diffs(engine) == []
        counts = outbox.counts()  # as `status` reads them before any cycle
        assert (counts["sent"], counts["unknown"], counts["pending"]) == (1, 1, 1)
        outbox.ensure_table()
        counts = outbox.counts()
        assert (counts["sent"], counts["unknown"], counts["pending"]) == (1, 1, 1)
        with engine.connect() as conn:
            named = dict(conn.execute(text(
                "SELECT tenant, notes_table FROM note_outbox WHERE note_id = 1")).all())
        assert named == {"acme": outbox.table.name, "other": ""}  # another tenant's: its own
    finally:
        engine.dispose()
