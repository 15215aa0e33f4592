"""Fixtures for the mapping tests: the shipped mapping files, a database of each kind (a SQLite
file, or PostgreSQL in a schema of the test's own, dropped at the end), and a clean environment
for the CLI.

PostgreSQL needs CRM_SYNC_TEST_PG_URL (e.g. postgresql+psycopg://postgres@127.0.0.1/test) and is
skipped, saying so, only when it is unset.
"""

from __future__ import annotations

import os
import secrets
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import text
from sqlalchemy.engine import make_url

from sync.settings import default_mapping_file
from sync.store import make_engine

ROOT = Path(__file__).resolve().parents[2]
PG_ENV = "CRM_SYNC_TEST_PG_URL"
ERP = ROOT / "mappings" / "erp-customers.example.yaml"
EXPORT = ROOT / "mappings" / "export-pull-only.example.yaml"
SHIPPED = {"default": default_mapping_file(), "top-level default": ROOT / "mappings" /
           "default.yaml", "erp": ERP, "export": EXPORT}


def _with_search_path(url: str, schema: str) -> str:
    parsed = make_url(url).update_query_dict({"options": f"-csearch_path={schema}"})
    return parsed.render_as_string(hide_password=False)


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """An empty database of each kind."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path}/mapping.db"
        return
    base = os.environ.get(PG_ENV)
    if not base:
        pytest.skip(f"{PG_ENV} is not set: no PostgreSQL to test against")
    schema = f"crm_sync_mapping_test_{secrets.token_hex(4)}"
    admin = make_engine(base)
    with admin.begin() as conn:
        conn.execute(text(f'CREATE SCHEMA "{schema}"'))
    try:
        yield _with_search_path(base, schema)
    finally:
        with admin.begin() as conn:
            conn.execute(text(f'DROP SCHEMA "{schema}" CASCADE'))
        admin.dispose()


@pytest.fixture
def clean_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """No developer .env, no CRM_SYNC_* from the shell: the CLI sees only what a test sets."""
    monkeypatch.chdir(tmp_path)
    for name in list(os.environ):
        if name.startswith("CRM_SYNC_") and name != PG_ENV:
            monkeypatch.delenv(name)
    monkeypatch.setenv("CRM_SYNC_LOG_FORMAT", "json")
    monkeypatch.setenv("CRM_SYNC_DATABASE_URL", f"sqlite:///{tmp_path}/check.db")
    return tmp_path
