"""`sync --dry-run` changes nothing (architecture.md), not even on a first run: a cycle makes
crm-sync's tables and the mapped table before it starts, so where one is missing the dry run
plans on a scratch copy (SQLite), or is refused with the step that makes them (PostgreSQL)."""

from __future__ import annotations

import hashlib
import re
import sqlite3
from collections.abc import Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa
import structlog
from typer.testing import CliRunner

from sync.cli import app
from sync.emulator import EmulatorConfig, EmulatorServer

runner = CliRunner()
SCRATCH = "this plan was made on a scratch copy of the database, which is left as it was"


@pytest.fixture(scope="module")
def server() -> Iterator[EmulatorServer]:
    with EmulatorServer(EmulatorConfig(api_key="demo-key", contacts=3)) as srv:
        yield srv


@pytest.fixture
def crm(clean_env: Path, server: EmulatorServer, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("CRM_SYNC_BASE_URL", server.url)
    monkeypatch.setenv("CRM_SYNC_API_KEY", "demo-key")
    return clean_env


def cli(*args: str) -> tuple[int, str]:
    try:
        result = runner.invoke(app, list(args))
    finally:  # the command pointed structlog at the runner's stream, now closed
        structlog.reset_defaults()
    return result.exit_code, re.sub(r"\s+", " ", result.output)


def _digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_a_first_dry_run_creates_no_database(crm: Path) -> None:
    # it created check.db with crm-sync's tables and the contacts table
    code, out = cli("sync", "--dry-run")
    assert code == 0, out
    assert "3 insert (CRM -> table)" in out and SCRATCH in out, out
    assert "the SQLite file" in out and "check.db" in out, out
    assert not (crm / "check.db").exists()
    assert [p.name for p in crm.iterdir() if p.name.startswith("check.db")] == []


def test_a_dry_run_leaves_an_apps_database_as_it_was(crm: Path,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    path = crm / "shop.db"
    with sqlite3.connect(path) as app_db:  # the app's own table, no crm-sync yet
        app_db.execute("CREATE TABLE contacts (ref_id VARCHAR(255) PRIMARY KEY, ref_code TEXT, "
                       "crm_id TEXT, full_name TEXT, phone TEXT, email TEXT, gender TEXT, "
                       "birthday DATE, address TEXT, job_title TEXT, passport TEXT, note TEXT, "
                       "tags JSON, owner_email TEXT, custom_fields JSON)")
        app_db.execute("INSERT INTO contacts (ref_id, full_name, phone) VALUES "
                       "('KH-1', 'Lê Văn Tám', '0912345678')")
    app_db.close()
    before = _digest(path)
    monkeypatch.setenv("CRM_SYNC_DATABASE_URL", f"sqlite:///{path}")
    code, out = cli("sync", "--dry-run")
    assert code == 0, out
    assert SCRATCH in out and "crm-sync's bookkeeping tables" in out, out
    assert "1 create (table -> CRM)" in out and "3 insert (CRM -> table)" in out, out
    assert _digest(path) == before
    assert sorted(p.name for p in crm.iterdir() if p.name.startswith("shop.db")) == ["shop.db"]
    # a real cycle after it makes the tables, and the next dry run reads the database itself
    assert cli("sync")[0] == 0
    code, out = cli("sync", "--dry-run")
    assert code == 0 and "Nothing to do" in out and "scratch copy" not in out, out


@pytest.mark.postgres
def test_a_dry_run_on_postgresql_without_crm_syncs_tables_is_refused(
        crm: Path, monkeypatch: pytest.MonkeyPatch, fresh_pg_url: str) -> None:
    monkeypatch.setenv("CRM_SYNC_DATABASE_URL", fresh_pg_url)
    code, out = cli("sync", "--dry-run")
    assert code == 2, out
    assert "a dry run changes nothing" in out and "crm-sync db upgrade" in out, out
    db = sa.create_engine(fresh_pg_url)
    try:
        assert sa.inspect(db).get_table_names() == []  # nothing was made
    finally:
        db.dispose()
    # with crm-sync's tables made (`db upgrade`), the mapped table is still missing
    assert cli("db", "upgrade")[0] == 0
    code, out = cli("sync", "--dry-run")
    assert code == 2 and "the table 'contacts'" in out, out
