"""sync_state's secondary indexes set aside by a first import and put back by its end or by
the next start (store/deferred_indexes.py), on a database two tenants (two processes) share:
neither deadlocks nor fails the other (found by a code review; the tests are its)."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from sync.store import deferred_indexes, make_engine
from sync.store.deferred_indexes import SECONDARY
from sync.store.migrate import upgrade
from sync.store.schema import sync_state
from sync.store.state import StateStore


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def shared_db(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[sa.Engine]:
    """A migrated, empty database of each kind (PostgreSQL: a schema of the test's own)."""
    url = (f"sqlite:///{tmp_path}/shared.db" if request.param == "sqlite"
           else str(request.getfixturevalue("fresh_pg_url")))
    upgrade(url)
    db = make_engine(url)
    try:
        yield db
    finally:
        db.dispose()


def _indexes(db: sa.Engine) -> set[str]:
    return {str(ix["name"]) for ix in sa.inspect(db).get_indexes("sync_state")}


# The statements a process runs before it changes the indexes: the lock now (SQLite's write
# lock, PostgreSQL's advisory lock), the DDL itself before there was a lock.
_FIRST = ("BEGIN IMMEDIATE", "SELECT PG_ADVISORY_XACT_LOCK", "DROP INDEX", "CREATE INDEX")


def _meet_before(db: sa.Engine, parties: int) -> None:
    """Every thread that runs SQL through `db` waits, before the first of its statements
    that starts with one of _FIRST, until `parties` threads are there: two processes
    arriving at the same moment, made certain."""
    barrier = threading.Barrier(parties, timeout=10)
    local = threading.local()

    @sa.event.listens_for(db, "before_cursor_execute")
    def meet(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        if statement.lstrip().upper().startswith(_FIRST) and not getattr(local, "met", False):
            local.met = True
            barrier.wait()


def _in_threads(*calls: Any) -> list[str]:
    """Run each call in a thread of its own (each gets its own connection); their errors."""
    errors: list[str] = []

    def run(call: Any) -> None:
        try:
            call()
        except Exception as exc:  # collected for the assertion
            errors.append(f"{type(exc).__name__}: {(str(exc).splitlines() or [''])[0]}")

    threads = [threading.Thread(target=run, args=(c,)) for c in calls]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    return errors


def test_two_tenants_starting_a_first_import_at_once_both_start(shared_db: sa.Engine) -> None:
    """Two tenants share a database whose sync_state is empty, and their first imports
    start at the same moment: each runs PooledImport.__init__'s set_aside (a SELECT, then
    DROP INDEX, in one transaction). Neither import may fail for it (on PostgreSQL both
    hold ACCESS SHARE from the SELECT and each waits for the other's ACCESS EXCLUSIVE:
    deadlock: one cycle failed)."""
    _meet_before(shared_db, 2)

    def start_import(tenant: str) -> None:
        store = StateStore(shared_db, tenant)
        with store.begin() as conn:  # as PooledImport.__init__
            deferred_indexes.set_aside(store, conn)

    assert not _in_threads(lambda: start_import("tenant-a"), lambda: start_import("tenant-b"))


def test_two_processes_restoring_the_indexes_at_once_both_succeed(shared_db: sa.Engine) -> None:
    """A first import was killed with the indexes set aside. Two processes on that database
    then run `restore` at once: two tenants' daemons started together (prepare_database),
    or one tenant's import ending (PooledImport.finish) as another tenant's process starts.
    Both must succeed, and the indexes be there (both saw an index missing and both created
    it: the second failed, so that process did not start, or that import's cycle failed
    after writing everything)."""
    with shared_db.begin() as conn:
        for ix in SECONDARY:
            ix.drop(conn)
    _meet_before(shared_db, 2)
    assert not _in_threads(lambda: deferred_indexes.restore(shared_db),
                           lambda: deferred_indexes.restore(shared_db))
    assert _indexes(shared_db) >= {str(ix.name) for ix in SECONDARY}


def test_the_partial_error_index_is_kept_and_put_back_if_missing(shared_db: sa.Engine) -> None:
    """The rows-in-error index holds none of an import's rows: set_aside keeps it (building
    it again read the whole table); restore still creates it when missing, as an earlier
    version left it after a kill -9 with the others set aside."""
    every = {str(ix.name) for ix in sync_state.indexes}
    partial = "ix_sync_state_tenant_errors"
    assert partial in every and partial not in {str(ix.name) for ix in SECONDARY}
    store = StateStore(shared_db, "tenant-a")
    with store.begin() as conn:
        assert deferred_indexes.set_aside(store, conn)
    assert partial in _indexes(shared_db)
    assert _indexes(shared_db).isdisjoint({str(ix.name) for ix in SECONDARY})
    with shared_db.begin() as conn:
        conn.execute(sa.text(f"DROP INDEX {partial}"))
    deferred_indexes.restore(shared_db)
    assert _indexes(shared_db) >= every - {"pk_sync_state"}
