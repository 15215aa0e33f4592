"""sync.store.migrate: alembic configured in code; the migration matches schema.py."""

from __future__ import annotations

import os
import secrets
import sqlite3
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import event, inspect, text
from sqlalchemy.exc import OperationalError

from sync.errors import StoreError
from sync.mapping_file import load_mapping
from sync.runtime import prepare_database
from sync.store import make_engine
from sync.store.migrate import (
    VERSION_TABLE,
    check_schema,
    current_revision,
    head_revision,
    is_up_to_date,
    schema_diffs,
    script_location,
    upgrade,
)
from sync.store.schema import TABLE_NAMES
from sync.store.state import StateStore

from .conftest import pg_base_url, with_search_path

DEFAULT_MAPPING_FILE = Path(__file__).resolve().parents[2] / "sync" / "mappings" / "default.yaml"

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def db_kind_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """An EMPTY database of each kind (PostgreSQL: a schema of its own, dropped after)."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path}/fresh.db"
        return
    base = pg_base_url()
    schema = f"crm_sync_migrate_test_{secrets.token_hex(4)}"
    admin = make_engine(base)
    with admin.begin() as conn:
        conn.execute(text(f'CREATE SCHEMA "{schema}"'))
    try:
        yield with_search_path(base, schema)
    finally:
        with admin.begin() as conn:
            conn.execute(text(f'DROP SCHEMA "{schema}" CASCADE'))
        admin.dispose()


def test_scripts_are_found_in_the_package() -> None:
    location = Path(script_location())
    assert (location / "env.py").is_file()
    assert any(p.name.endswith(".py") for p in (location / "versions").iterdir())
    assert head_revision() == "0007"


def test_sqlite_upgrade_from_url_creates_the_directory(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path}/deep/er/sync.db"
    upgrade(url)
    engine = make_engine(url)
    try:
        assert current_revision(engine) == head_revision()
        assert is_up_to_date(engine)
        assert schema_diffs(engine) == []
        upgrade(engine)  # a second upgrade is a no-op
        assert set(inspect(engine).get_table_names()) == {*TABLE_NAMES, VERSION_TABLE}
    finally:
        engine.dispose()


def test_fresh_database_is_reported_and_application_tables_left_alone(tmp_path: Path) -> None:
    engine = make_engine(f"sqlite:///{tmp_path}/app.db")
    try:
        with engine.begin() as conn:  # the application's own tables, and its own alembic
            conn.execute(text("CREATE TABLE contacts (ref_id TEXT PRIMARY KEY)"))
            conn.execute(text("CREATE TABLE alembic_version (version_num VARCHAR(32))"))
            conn.execute(text("INSERT INTO alembic_version VALUES ('abc123')"))
        assert current_revision(engine) is None
        assert not is_up_to_date(engine)
        with pytest.raises(StoreError, match="crm-sync db upgrade"):
            check_schema(engine)
        upgrade(engine)
        check_schema(engine)
        assert schema_diffs(engine) == []  # the application's tables are not "extra"
        with engine.connect() as conn:
            assert conn.scalar(text("SELECT version_num FROM alembic_version")) == "abc123"
            assert conn.scalar(text("SELECT count(*) FROM contacts")) == 0
    finally:
        engine.dispose()


def test_concurrent_upgrades_of_a_fresh_database(db_kind_url: str) -> None:
    """Replicas starting together (real processes): all succeed, the tables are made once."""
    code = "import sys; from sync.store.migrate import upgrade; upgrade(sys.argv[1])"
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    procs = [subprocess.Popen([sys.executable, "-c", code, db_kind_url], cwd=ROOT, env=env,
                              stderr=subprocess.PIPE, text=True) for _ in range(2)]
    failures = [p.communicate(timeout=60)[1] for p in procs if p.wait(timeout=60) != 0]
    assert failures == []
    engine = make_engine(db_kind_url)
    try:
        assert is_up_to_date(engine) and schema_diffs(engine) == []
    finally:
        engine.dispose()


def test_many_connections_opening_a_fresh_sqlite_file_together(tmp_path: Path) -> None:
    """Switching a file to WAL takes an exclusive lock that SQLite does not wait for: without
    the retry, this test failed two runs in three with "database is locked"."""
    failures: list[str] = []
    for round_ in range(20):
        url = f"sqlite:///{tmp_path}/fresh-{round_}.db"
        start = threading.Barrier(12)

        def open_one(url: str = url, start: threading.Barrier = start) -> None:
            engine = make_engine(url)
            try:
                start.wait()
                with engine.connect() as conn:
                    assert conn.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
            except Exception as exc:  # collected, then asserted in the test's thread
                failures.append(f"{url}: {exc}")
            finally:
                engine.dispose()

        threads = [threading.Thread(target=open_one) for _ in range(12)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    assert failures == []


def test_sqlite_pragmas(tmp_path: Path) -> None:
    engine = make_engine(f"sqlite:///{tmp_path}/p.db")
    try:
        with engine.connect() as conn:
            assert conn.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
            assert conn.exec_driver_sql("PRAGMA synchronous").scalar() == 1  # NORMAL
            assert conn.exec_driver_sql("PRAGMA busy_timeout").scalar() == 5000
            # a file it creates: 16 KB pages, a checkpoint every 40 MB of WAL
            assert conn.exec_driver_sql("PRAGMA page_size").scalar() == 16384
            assert conn.exec_driver_sql("PRAGMA wal_autocheckpoint").scalar() == 2560
    finally:
        engine.dispose()


def test_an_existing_sqlite_file_keeps_its_page_size(tmp_path: Path) -> None:
    path = tmp_path / "app.db"
    with sqlite3.connect(path) as app:  # the app's own file, made with SQLite's defaults
        app.execute("CREATE TABLE orders (id INTEGER PRIMARY KEY)")
    engine = make_engine(f"sqlite:///{path}")
    try:
        with engine.connect() as conn:
            assert conn.exec_driver_sql("PRAGMA page_size").scalar() == 4096
            assert conn.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
            assert conn.exec_driver_sql("PRAGMA wal_autocheckpoint").scalar() == 10_240
    finally:
        engine.dispose()


def test_an_engine_that_must_not_create_opens_only_an_existing_file(tmp_path: Path) -> None:
    """make_engine(create=False), for `check`, `status` and `db current`: a missing file and
    its folder stay missing (SQLite's mode=rw), an existing one opens, whatever its name."""
    missing = make_engine(f"sqlite:///{tmp_path}/nodir/missing.db", create=False)
    with pytest.raises(OperationalError, match="unable to open database file"):
        missing.connect()
    missing.dispose()
    assert list(tmp_path.iterdir()) == []
    path = tmp_path / "a shop #1.db"
    with sqlite3.connect(path) as app:
        app.execute("CREATE TABLE orders (id INTEGER PRIMARY KEY)")
    before = path.read_bytes()
    engine = make_engine(f"sqlite:///{path}", create=False)
    try:
        assert inspect(engine).get_table_names() == ["orders"]
        assert engine.url.database == str(path)  # messages show the user's URL
    finally:
        engine.dispose()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a shop #1.db"]
    assert path.read_bytes() == before  # not even switched to WAL


def test_diffs_are_detected(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path}/d.db"
    upgrade(url)
    engine = make_engine(url)
    try:
        with engine.begin() as conn:
            conn.execute(text("DROP INDEX ix_sync_state_tenant_status"))
        assert [d[0] for d in schema_diffs(engine)] == ["add_index"]
    finally:
        engine.dispose()


def test_migration_matches_schema(db_kind_url: str) -> None:
    engine = make_engine(db_kind_url)
    try:
        assert current_revision(engine) is None
        upgrade(engine)
        upgrade(engine)
        assert current_revision(engine) == head_revision()
        assert schema_diffs(engine) == []
        assert set(inspect(engine).get_table_names()) == {*TABLE_NAMES, VERSION_TABLE}
    finally:
        engine.dispose()


def test_counting_rows_in_error_reads_only_those_rows(tmp_path: Path) -> None:
    # each cycle counts them: OR-ed in one query, the count read every row (85 ms at 100k)
    url = f"sqlite:///{tmp_path}/e.db"
    upgrade(url)
    engine = make_engine(url)
    seen: list[tuple[str, Any]] = []

    def record(conn: Any, cursor: Any, statement: str, params: Any, *_: Any) -> None:
        seen.append((statement, params))

    try:
        event.listen(engine, "before_cursor_execute", record)
        assert StateStore(engine, "acme").count_errors() == 0
        event.remove(engine, "before_cursor_execute", record)
        counts = [(q, p) for q, p in seen if "count(*)" in q]
        assert len(counts) == 2, seen
        with engine.connect() as conn:
            plans = [" ".join(str(r[-1]) for r in conn.exec_driver_sql(
                "EXPLAIN QUERY PLAN " + q, p)) for q, p in counts]
        assert all("USING COVERING INDEX" in p or "USING INDEX" in p for p in plans), plans
        assert any("ix_sync_state_tenant_errors" in p for p in plans), plans
    finally:
        engine.dispose()


def test_a_postgresql_server_older_than_11_is_refused_by_name(fresh_pg_url: str) -> None:
    """The fingerprint needs hashtextextended (PostgreSQL 11): an older server is refused
    before anything is written, with its version and the URL without the password."""
    engine = make_engine(fresh_pg_url)
    try:
        with engine.connect():
            pass  # the dialect reads the server's version on the first connection
        engine.dialect.server_version_info = (10, 23)
        with pytest.raises(StoreError, match=r"PostgreSQL 11 or later is needed.* is 10\.23"):
            prepare_database(engine, load_mapping(DEFAULT_MAPPING_FILE), migrate=True)
        assert current_revision(engine) is None  # nothing created
    finally:
        engine.dispose()


def test_a_sqlite_path_from_the_home_folder(tmp_path: Path,
                                            monkeypatch: pytest.MonkeyPatch) -> None:
    # the folder was made under the home folder, but SQLite looked for one named `~`
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.chdir(tmp_path)
    engine = make_engine("sqlite:///~/data/crm.db")
    try:
        with engine.connect() as conn:
            conn.exec_driver_sql("CREATE TABLE t (x INTEGER)")
            conn.commit()
    finally:
        engine.dispose()
    assert (tmp_path / "home" / "data" / "crm.db").is_file()
    assert not (tmp_path / "~").exists()
