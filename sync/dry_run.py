"""Where a dry run reads: the database as it is, or a scratch copy of it.

`sync --dry-run` changes nothing (architecture.md). A cycle needs crm-sync's bookkeeping tables
at the current revision, the mapped table and the notes table, and makes whichever is missing
before it starts: on a database that lacks one (a first run, an upgrade pending), a dry run
would have made them. There it plans on a scratch copy instead: SQLite's backup of the file
(or an empty one when there is no file yet) in a temporary folder, removed afterwards. A
PostgreSQL database cannot be copied so cheaply: the dry run is refused, naming the step that
makes the tables without syncing anything.
"""

from __future__ import annotations

import sqlite3
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import sqlalchemy as sa

from sync.errors import ConfigError
from sync.mapping import MappingSpec
from sync.mapping_file import load_mapping
from sync.settings import Settings
from sync.store import make_engine, sqlite_file
from sync.store.migrate import is_up_to_date

__all__ = ["dry_run_settings", "missing_setup"]


def missing_setup(url: str, spec: MappingSpec) -> str | None:
    """What a cycle would create in this database first, or None when nothing."""
    path = sqlite_file(url)
    if path is None:
        db = make_engine(url, create=False)
    else:  # without crm-sync's pragmas: not even a switch to WAL
        db = sa.create_engine("sqlite://", creator=lambda: _read_only(path))
    try:
        if not is_up_to_date(db):
            return "crm-sync's bookkeeping tables (or their latest revision)"
        insp = sa.inspect(db)
        for name, what in ((spec.table, "the table"), (spec.notes_table, "the notes table")):
            if name is not None and not insp.has_table(name):
                return f"{what} {name!r}"
        return None
    finally:
        db.dispose()


@contextmanager
def dry_run_settings(settings: Settings) -> Iterator[tuple[Settings, str | None]]:
    """The settings a dry run runs with, and a note to print when it plans on a copy."""
    path = sqlite_file(settings.database_url)
    spec = load_mapping(settings.mapping_file)
    if path is not None and not path.exists():
        missing: str | None = f"the SQLite file {path}"
    else:
        missing = missing_setup(settings.database_url, spec)
    if missing is None:
        yield settings, None
        return
    if path is None:
        raise ConfigError(
            f"a dry run changes nothing, and a cycle would first create {missing} in "
            "CRM_SYNC_DATABASE_URL: run `crm-sync db upgrade` (crm-sync's own tables) and, for "
            "a table of the mapping's, a first `crm-sync sync`, or dry-run against a SQLite "
            "copy")
    with tempfile.TemporaryDirectory(prefix="crm-sync-dry-run-") as scratch:
        copy = Path(scratch) / "plan.db"
        if path.exists():
            src, dst = _read_only(path), sqlite3.connect(copy)
            try:
                src.backup(dst)
            finally:
                src.close()
                dst.close()
        yield (settings.model_copy(update={"database_url": f"sqlite:///{copy}"}),
               f"a cycle would first create {missing}: this plan was made on a scratch copy of "
               "the database, which is left as it was")


def _read_only(path: Path) -> sqlite3.Connection:
    """The user's SQLite file, opened so that nothing can be written to it."""
    return sqlite3.connect(f"{path.as_uri()}?mode=ro", uri=True)
