"""Fixtures shared by the test suites."""

from __future__ import annotations

import os
import secrets
from collections.abc import Iterator
from contextlib import contextmanager

import pytest
from sqlalchemy import text
from sqlalchemy.engine import make_url

from sync.store import make_engine

PG_ENV = "CRM_SYNC_TEST_PG_URL"


@contextmanager
def pg_schema() -> Iterator[str]:
    """The URL of an empty schema of its own on the PostgreSQL server named by
    CRM_SYNC_TEST_PG_URL (dropped afterwards); the test is skipped, saying why, when unset."""
    base = os.environ.get(PG_ENV)
    if not base:
        pytest.skip(f"{PG_ENV} is not set: no PostgreSQL to test against")
    schema = f"crm_sync_test_{secrets.token_hex(4)}"
    admin = make_engine(base)
    with admin.begin() as conn:
        conn.execute(text(f'CREATE SCHEMA "{schema}"'))
    try:
        url = make_url(base).update_query_dict({"options": f"-csearch_path={schema}"})
        yield url.render_as_string(hide_password=False)
    finally:
        with admin.begin() as conn:
            conn.execute(text(f'DROP SCHEMA "{schema}" CASCADE'))
        admin.dispose()


@pytest.fixture
def fresh_pg_url() -> Iterator[str]:
    """`pg_schema` for one test."""
    with pg_schema() as url:
        yield url


@pytest.fixture(scope="module")
def module_pg_url() -> Iterator[str]:
    """`pg_schema` for a module's tests (a scenario that several tests read)."""
    with pg_schema() as url:
        yield url
