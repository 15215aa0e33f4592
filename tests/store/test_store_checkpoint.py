"""SQLite WAL checkpoints from a thread while a cycle writes (sync/store/checkpoint.py)."""

from __future__ import annotations

import os
import threading
import time
from pathlib import Path

import pytest
from sqlalchemy import create_engine, text
from sqlalchemy.pool import NullPool
from structlog.testing import capture_logs

from sync.store import make_engine
from sync.store.checkpoint import _in_memory, background_checkpoints

THREAD = "crm-sync-wal-checkpoint"


def _running() -> bool:
    return any(t.name == THREAD for t in threading.enumerate())


def _write(engine_url: str, commits: int, pause: float,
           taken: list[int] | None = None) -> int:
    """Writes about 1 MB; the size of the main database file before the writer closes (the
    last connection to close checkpoints), once a checkpoint later than the writes ran."""
    engine = make_engine(engine_url)
    with engine.connect() as conn:
        # the writer never checkpoints by itself: only the thread can move pages into the file
        conn.exec_driver_sql("PRAGMA wal_autocheckpoint = 0")
        conn.execute(text("CREATE TABLE t (id INTEGER PRIMARY KEY, body TEXT)"))
        conn.commit()
        for i in range(commits):
            conn.execute(text("INSERT INTO t (body) VALUES (:b)"),
                         [{"b": f"{i}-{j}-" + "x" * 2000} for j in range(50)])
            conn.commit()
            time.sleep(pause)
        if taken is not None:  # wait for the thread's next checkpoint, however loaded we are
            after = taken[0] + 1
            deadline = time.monotonic() + 10
            while taken[0] <= after and time.monotonic() < deadline:
                time.sleep(0.01)
        size = os.path.getsize(engine_url.removeprefix("sqlite:///"))
    engine.dispose()
    return size


def test_the_thread_copies_committed_pages_into_the_database_file(tmp_path: Path) -> None:
    path = tmp_path / "c.db"
    url = f"sqlite:///{path}"
    engine = make_engine(url)
    with engine.connect() as conn:
        conn.exec_driver_sql("SELECT 1")  # creates the file, in WAL mode
    size_before = os.path.getsize(path)
    with background_checkpoints(engine, interval=0.02) as taken:
        assert _running()
        size_after = _write(url, commits=10, pause=0.01, taken=taken)
    assert taken[0] > 0
    assert not _running()
    # about 1 MB was written, and only a checkpoint puts it into the main file
    assert size_after > size_before + 500_000
    with engine.connect() as conn:
        assert conn.execute(text("SELECT count(*) FROM t")).scalar() == 500
    engine.dispose()


def test_without_the_thread_the_pages_stay_in_the_wal(tmp_path: Path) -> None:
    # the control for the test above: the same writes leave the main file as it was
    path = tmp_path / "c.db"
    url = f"sqlite:///{path}"
    engine = make_engine(url)
    with engine.connect() as conn:
        conn.exec_driver_sql("SELECT 1")
    size_before = os.path.getsize(path)
    assert _write(url, commits=10, pause=0.01) < size_before + 500_000
    engine.dispose()


def test_the_thread_stops_when_the_body_fails(tmp_path: Path) -> None:
    engine = make_engine(f"sqlite:///{tmp_path / 'c.db'}")
    with pytest.raises(RuntimeError), background_checkpoints(engine, interval=0.01):
        raise RuntimeError("boom")
    assert not _running()
    engine.dispose()


@pytest.mark.parametrize("url", ["sqlite://", "sqlite:///:memory:"])
def test_an_in_memory_database_is_left_alone(url: str) -> None:
    # Each connection to it is the database: one opened per cycle would, in a pool that
    # keeps one per thread, end up closing the one that holds the data.
    engine = make_engine(url)
    with engine.begin() as conn:
        conn.execute(text("CREATE TABLE t (id INTEGER PRIMARY KEY)"))
        conn.execute(text("INSERT INTO t VALUES (1)"))
    for _ in range(8):
        with background_checkpoints(engine, interval=0.001) as taken:
            assert not _running()
            time.sleep(0.005)
        assert taken == [0]
    with engine.connect() as conn:
        assert conn.execute(text("SELECT count(*) FROM t")).scalar() == 1
    engine.dispose()


@pytest.mark.parametrize(("url", "memory"), [
    ("sqlite://", True), ("sqlite:///:memory:", True),
    ("sqlite:///file:mem1?mode=memory&cache=shared&uri=true", True),
    ("sqlite:///file:/tmp/x.db?mode=ro&uri=true", False), ("sqlite:////tmp/x.db", False)])
def test_which_urls_are_in_memory(url: str, memory: bool) -> None:
    assert _in_memory(create_engine(url, poolclass=NullPool)) is memory


def test_the_thread_holds_no_pool_connection(tmp_path: Path) -> None:
    engine = make_engine(f"sqlite:///{tmp_path / 'c.db'}", pool_size=1, max_overflow=0,
                         pool_timeout=1)
    with engine.connect() as conn:
        conn.exec_driver_sql("SELECT 1")  # creates the file, in WAL mode
    with background_checkpoints(engine, interval=0.01) as taken:
        for _ in range(20):
            with engine.connect() as conn:
                conn.exec_driver_sql("SELECT 1")
            time.sleep(0.005)
    assert taken[0] > 0
    engine.dispose()


def test_a_thread_that_cannot_connect_leaves_the_body_alone(tmp_path: Path) -> None:
    (tmp_path / "dir.db").mkdir()  # a directory: SQLite cannot open it
    engine = make_engine(f"sqlite:///{tmp_path / 'dir.db'}")
    with capture_logs() as logs, background_checkpoints(engine, interval=0.01) as taken:
        pass
    assert taken == [0] and not _running()
    assert [e["event"] for e in logs] == ["sqlite.checkpoint_thread_stopped"]
    assert "OperationalError" in logs[0]["error"]
    engine.dispose()


def test_other_databases_get_no_thread() -> None:
    engine = make_engine("postgresql+psycopg://nobody@127.0.0.1:1/none")  # never connected
    with background_checkpoints(engine, interval=0.01) as taken:
        assert not _running()
    assert taken == [0]
