"""Revision 0002 adds note_outbox to a database already at 0001, matching schema.py; 0007 names
each row's notes table."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sqlalchemy import event, inspect, text

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


def test_asking_for_another_tenant_on_the_notes_table_reads_an_index(tmp_path: Path) -> None:
    """NotesOutbox.refuse_shared runs every cycle, and the outbox keeps every note ever sent:
    the question is answered from an index, not by reading the table (SQLite's plan)."""
    url = f"sqlite:///{tmp_path}/plan.db"
    upgrade(url)
    engine = make_engine(url)
    seen: list[tuple[str, Any]] = []
    try:
        spec = load_mapping(default_mapping_file())
        outbox = NotesOutbox(engine, "acme", spec, LocalTable.for_spec(spec))
        event.listen(engine, "before_cursor_execute",
                     lambda conn, cursor, statement, params, *_: seen.append((statement, params)))
        outbox.refuse_shared()
        [(query, params)] = [(q, p) for q, p in seen if "note_outbox" in q]
        with engine.connect() as conn:
            plan = " ".join(str(r[-1]) for r in conn.exec_driver_sql(
                "EXPLAIN QUERY PLAN " + query, params))
        assert "USING COVERING INDEX ix_note_outbox_notes_table_tenant" in plan, plan
    finally:
        engine.dispose()
