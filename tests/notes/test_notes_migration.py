"""Revision 0002 adds note_outbox to a database already at 0001, matching schema.py."""

from __future__ import annotations

from sqlalchemy import inspect

from sync.store import make_engine
from sync.store.migrate import current_revision, head_revision, schema_diffs, upgrade
from sync.store.schema import note_outbox


def test_upgrade_from_0001_adds_the_outbox(db_url: str) -> None:
    engine = make_engine(db_url)
    try:
        upgrade(engine, "0001")
        assert not inspect(engine).has_table("note_outbox")
        upgrade(engine)
        assert current_revision(engine) == head_revision() == "0006"
        assert inspect(engine).has_table(note_outbox.name)
        assert schema_diffs(engine) == []
    finally:
        engine.dispose()
