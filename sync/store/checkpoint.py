"""SQLite WAL checkpoints taken by a thread of their own while a cycle writes.

In WAL mode every commit appends to the `-wal` file, and the commit that takes it past
`wal_autocheckpoint` pages copies the committed pages into the database file and fsyncs it,
inside the cycle's critical path: on a 100k first import that was about 1 s in all. sqlite3
releases the GIL while SQLite works, so a checkpoint run from another thread (PASSIVE: it
never blocks a writer, nor waits for one) takes that copy to the second core while the cycle
goes on converting contacts. The commits' own autocheckpoint stays as the fallback, should
the thread fall behind or stop.

Nothing here is needed for correctness: a checkpoint that fails or is skipped leaves the pages
in the WAL, where readers find them, and the next checkpoint copies them.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import structlog
from sqlalchemy import Engine

__all__ = ["CHECKPOINT_INTERVAL_S", "background_checkpoints"]

log = structlog.get_logger("crm_sync.store")

# About 2-5 MB of WAL between checkpoints during an import: well under the commits' own
# threshold (store.SQLITE_WAL_AUTOCHECKPOINT_BYTES, 40 MB), so they seldom reach it.
CHECKPOINT_INTERVAL_S = 0.25
JOIN_TIMEOUT_S = 2.0


def _in_memory(engine: Engine) -> bool:
    url = engine.url
    return (url.database in (None, "", ":memory:") or "mode=memory" in str(url.database)
            or url.query.get("mode") == "memory")


def _checkpoint_loop(engine: Engine, stop: threading.Event, interval: float,
                     taken: list[int]) -> None:
    conn: Any = None
    try:
        # A connection of its own, outside the engine's pool: it holds no pool slot while
        # the cycle runs, and no pool hands it out to anyone else.
        cargs, cparams = engine.dialect.create_connect_args(engine.url)
        conn = engine.dialect.connect(*cargs, **cparams)
        if str(conn.execute("PRAGMA journal_mode").fetchone()[0]).lower() != "wal":
            return
        while not stop.wait(interval):
            # (busy, frames in the WAL, frames copied); busy when a reader holds frames
            conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()
            taken[0] += 1
    except Exception as exc:  # the commits' autocheckpoint carries on alone
        log.warning("sqlite.checkpoint_thread_stopped", error=f"{type(exc).__name__}: {exc}")
    finally:
        if conn is not None:
            conn.close()


@contextmanager
def background_checkpoints(engine: Engine, interval: float = CHECKPOINT_INTERVAL_S
                           ) -> Iterator[list[int]]:
    """While the body runs, checkpoint `engine`'s SQLite WAL every `interval` seconds from a
    thread. Yields a one-item list counting the checkpoints taken (for tests). Does nothing
    for other databases, nor for an in-memory one (no WAL; and each connection to it would
    be a database of its own)."""
    taken = [0]
    if engine.dialect.name != "sqlite" or _in_memory(engine):
        yield taken
        return
    stop = threading.Event()
    thread = threading.Thread(target=_checkpoint_loop, name="crm-sync-wal-checkpoint",
                              args=(engine, stop, interval, taken), daemon=True)
    thread.start()
    try:
        yield taken
    finally:
        stop.set()
        # Bounded: this runs on the event loop. A checkpoint in progress (at most the WAL's
        # ~40 MB copied and fsynced) ends on its own; the thread is a daemon.
        thread.join(JOIN_TIMEOUT_S)
