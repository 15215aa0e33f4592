"""sync_state's secondary indexes, set aside while a first import fills an empty table.

A first import writes one bookkeeping row per contact, and each row also went into the three
secondary indexes (by status, by CRM id, the rows in error). The CRM ids come in no order, so
every transaction dirtied pages all over that index and wrote them again to the WAL: keeping
the indexes up to date cost about 5% of a 100k import on SQLite. Building each once at the
end, from rows already in place, costs a fraction of that.

None of them is unique: a table without them answers every query the same, only by reading
more rows. So they are set aside only when `sync_state` holds no row at all (no tenant's
queries to slow down), and put back when the import ends, however it ends; and, should the
process be killed in between, by `restore` when the next process prepares the database
(`runtime.prepare_database`).
"""

from __future__ import annotations

from sqlalchemy import Connection, Engine, Index, select

from sync.store.schema import sync_state

__all__ = ["SECONDARY", "restore", "set_aside"]

SECONDARY: tuple[Index, ...] = tuple(sorted(
    (ix for ix in sync_state.indexes if not ix.unique), key=lambda ix: str(ix.name)))


def set_aside(conn: Connection) -> bool:
    """Drop the secondary indexes if `sync_state` is empty; whether it did (in `conn`'s
    transaction)."""
    if conn.execute(select(sync_state.c.key).limit(1)).first() is not None:
        return False
    for ix in SECONDARY:
        ix.drop(conn, checkfirst=True)
    return True


def restore(db: Engine | Connection) -> None:
    """Create whichever of the secondary indexes is missing."""
    if isinstance(db, Engine):
        with db.begin() as conn:
            restore(conn)
        return
    for ix in SECONDARY:
        ix.create(db, checkfirst=True)
