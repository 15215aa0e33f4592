"""`crm-sync status`: what the bookkeeping says, without touching the CRM."""

from __future__ import annotations

from typing import Any

from sqlalchemy.engine import make_url

from sync.errors import StoreError
from sync.mapping_file import load_mapping
from sync.notes import NotesOutbox
from sync.settings import Settings
from sync.store import make_engine, missing_sqlite_file
from sync.store.local import LocalTable
from sync.store.migrate import current_revision
from sync.store.state import StateStore


def safe_url(url: str) -> str:
    """The database URL without its password."""
    return make_url(url).render_as_string(hide_password=True)


def collect_status(settings: Settings, *, runs: int = 10) -> dict[str, Any]:
    missing = missing_sqlite_file(settings.database_url)
    if missing is not None:  # reading it must not leave an empty file behind
        raise StoreError(f"no database yet: the SQLite file {missing} does not exist: run "
                         "`crm-sync db upgrade` or a first `crm-sync sync`")
    db = make_engine(settings.database_url, create=False)
    try:
        if current_revision(db) is None:
            raise StoreError(f"no crm-sync schema in {safe_url(settings.database_url)} yet: "
                             "run `crm-sync db upgrade` or a first `crm-sync sync`")
        store = StateStore(db, settings.tenant_id)
        spec = load_mapping(settings.mapping_file)
        notes = NotesOutbox(db, settings.tenant_id, spec, LocalTable.for_spec(spec))
        edit_count, edits = store.read_only_edits(20)
        return {
            "tenant": settings.tenant_id,
            "database": safe_url(settings.database_url),
            "states": store.counts(),
            "open_conflicts": store.count_open_conflicts(),
            "runs": store.last_runs(runs),
            "errors": store.errors(20),
            "rows_in_error": store.count_errors(),
            "conflicts": store.open_conflicts(20),
            "read_only_edits": edits,
            "read_only_edits_count": edit_count,
            "notes": notes.counts() if notes.enabled else {},
            "note_problems": notes.problems() if notes.enabled else [],
        }
    finally:
        db.dispose()
