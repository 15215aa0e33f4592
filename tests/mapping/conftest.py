"""Fixtures for the mapping tests: the shipped mapping files, a database of each kind (a SQLite
file, or PostgreSQL in a schema of the test's own, dropped at the end), and a clean environment
for the CLI.

PostgreSQL needs CRM_SYNC_TEST_PG_URL (e.g. postgresql+psycopg://postgres@127.0.0.1/test) and is
skipped, saying so, only when it is unset.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from sync.settings import default_mapping_file

ROOT = Path(__file__).resolve().parents[2]
PG_ENV = "CRM_SYNC_TEST_PG_URL"  # kept in the environment of CLI tests
ERP = ROOT / "mappings" / "erp-customers.example.yaml"
EXPORT = ROOT / "mappings" / "export-pull-only.example.yaml"
SHIPPED = {"default": default_mapping_file(), "top-level default": ROOT / "mappings" /
           "default.yaml", "erp": ERP, "export": EXPORT}



@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """An empty database of each kind."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path}/mapping.db"
        return
    yield request.getfixturevalue("fresh_pg_url")


@pytest.fixture
def clean_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """No developer .env, no CRM_SYNC_* from the shell: the CLI sees only what a test sets."""
    monkeypatch.chdir(tmp_path)
    for name in list(os.environ):
        if name.startswith("CRM_SYNC_") and name != PG_ENV:
            monkeypatch.delenv(name)
    monkeypatch.setenv("CRM_SYNC_LOG_FORMAT", "json")
    monkeypatch.setenv("CRM_SYNC_API_KEY", "a-key")  # `check` refuses to pass without one
    monkeypatch.setenv("CRM_SYNC_DATABASE_URL", f"sqlite:///{tmp_path}/check.db")
    return tmp_path
