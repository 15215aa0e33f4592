"""Fixtures for the store tests: SQLite files in tmp dirs, and PostgreSQL in a fresh schema.

PostgreSQL tests need CRM_SYNC_TEST_PG_URL (e.g. postgresql+psycopg://postgres@127.0.0.1/test)
and are skipped, saying so, only when it is unset. The database is shared with other test
runs: this session creates its own schema (search_path set through the URL's `options`) and
drops it at the end; every test uses its own tenant.
"""

from __future__ import annotations

import os
import secrets
from collections.abc import Iterator

import pytest
from sqlalchemy import Engine, text
from sqlalchemy.engine import make_url

from sync.store import make_engine
from sync.store.migrate import upgrade

PG_ENV = "CRM_SYNC_TEST_PG_URL"


def pg_base_url() -> str:
    url = os.environ.get(PG_ENV)
    if not url:
        pytest.skip(f"{PG_ENV} is not set: no PostgreSQL to test against")
    return url


def with_search_path(url: str, schema: str) -> str:
    parsed = make_url(url).update_query_dict({"options": f"-csearch_path={schema}"})
    return parsed.render_as_string(hide_password=False)


@pytest.fixture(scope="session")
def pg_schema() -> Iterator[tuple[str, str]]:
    """(url with search_path set, schema name): a schema of our own for the session."""
    base = pg_base_url()
    schema = f"crm_sync_store_test_{secrets.token_hex(4)}"
    admin = make_engine(base)
    with admin.begin() as conn:
        conn.execute(text(f'CREATE SCHEMA "{schema}"'))
    try:
        yield with_search_path(base, schema), schema
    finally:
        with admin.begin() as conn:
            conn.execute(text(f'DROP SCHEMA "{schema}" CASCADE'))
        admin.dispose()


@pytest.fixture(scope="session")
def pg_url(pg_schema: tuple[str, str]) -> str:
    """A PostgreSQL URL whose schema has the bookkeeping tables (migrated once)."""
    url = pg_schema[0]
    upgrade(url)
    return url


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def db_url(request: pytest.FixtureRequest, tmp_path: os.PathLike[str]) -> str:
    """A migrated database of each kind."""
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path}/sync.db"
        upgrade(url)
        return url
    return str(request.getfixturevalue("pg_url"))


@pytest.fixture
def engine(db_url: str) -> Iterator[Engine]:
    eng = make_engine(db_url)
    try:
        yield eng
    finally:
        eng.dispose()


@pytest.fixture
def tenant() -> str:
    return f"t-{secrets.token_hex(6)}"
