"""sync_state's secondary indexes, set aside while a first import fills an empty table.

A first import writes one bookkeeping row per contact, and each row also went into the
secondary indexes (by status, by CRM id; the partial one on the rows in error takes none of
them and stays). The CRM ids come in no order, so every transaction dirtied pages all over
that index and wrote them again to the WAL: keeping the indexes up to date cost about 5% of
a 100k import on SQLite and on PostgreSQL. Building each once at the end, from rows already
in place, costs a fraction of that.

None of them is unique: a table without them answers every query the same, only by reading
more rows. So they are set aside only when `sync_state` holds no row at all (no tenant's
queries to slow down), and put back when the import ends, however it ends; if that fails, at
the start of the process's next cycle (`restore_if_aside`); and, should the process be killed
in between, when the next one prepares the database (`runtime.prepare_database`).

Processes sharing the database (tenants, replicas) may do either at the same moment: both
run under one lock (PostgreSQL: a transaction-level advisory lock, taken before any lock on
the table, so that two never wait for each other; SQLite: the write lock), and the indexes
are created with IF NOT EXISTS.
"""

from __future__ import annotations

from sqlalchemy import Connection, Engine, Index, inspect, select, text
from sqlalchemy.schema import CreateIndex, DropIndex

from sync.store.schema import sync_state
from sync.store.state import StateStore

__all__ = ["SECONDARY", "restore", "restore_if_aside", "set_aside"]


def _partial(ix: Index) -> bool:
    return any(ix.dialect_options[d].get("where") is not None for d in ("sqlite", "postgresql"))


_ALL_SECONDARY: tuple[Index, ...] = tuple(sorted(
    (ix for ix in sync_state.indexes if not ix.unique), key=lambda ix: str(ix.name)))
# Not a partial index (the rows in error): it holds none of an import's rows, so keeping it
# costs the import nothing, while building it again read the whole table (54 ms at 100k).
SECONDARY = tuple(ix for ix in _ALL_SECONDARY if not _partial(ix))
# pg_advisory_xact_lock key serialising set_aside and restore across processes
_LOCK_KEY = 0x63726D5F69647873  # "crm_idxs"


def _lock(conn: Connection) -> None:
    """The lock, as the transaction's first statement (SQLite: the caller's BEGIN IMMEDIATE,
    StateStore.begin, holds the write lock already)."""
    if conn.dialect.name == "postgresql":
        conn.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": _LOCK_KEY})


def set_aside(store: StateStore, conn: Connection) -> bool:
    """Drop the secondary indexes if `sync_state` is empty, in `conn`'s transaction (from
    `store.begin()`, before anything else); whether it did. Remembered by `store` until
    they are back."""
    _lock(conn)
    if conn.execute(select(sync_state.c.key).limit(1)).first() is not None:
        return False
    for ix in SECONDARY:
        conn.execute(DropIndex(ix, if_exists=True))
    store.indexes_aside = True
    return True


def restore(db: Engine) -> None:
    """Create whichever of the secondary indexes is missing (looked at first without a lock:
    every process start asks), the partial one too, which an earlier version set aside with
    the others."""
    present = {ix["name"] for ix in inspect(db).get_indexes(sync_state.name)}
    if all(ix.name in present for ix in _ALL_SECONDARY):
        return
    with db.begin() as conn:
        if conn.dialect.name == "sqlite":
            conn.exec_driver_sql("BEGIN IMMEDIATE")  # one process at a time
        _lock(conn)
        for ix in _ALL_SECONDARY:
            conn.execute(CreateIndex(ix, if_not_exists=True))


def restore_if_aside(store: StateStore) -> None:
    """Put the indexes back if `store` set them aside and has not put them back yet."""
    if store.indexes_aside:
        restore(store.engine)
        store.indexes_aside = False
