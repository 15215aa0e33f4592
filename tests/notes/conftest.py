"""Fixtures for the notes outbox tests: a database of each kind with the default mapping's
contacts and notes tables, an outbox on it, and the emulator over real HTTP.

PostgreSQL needs CRM_SYNC_TEST_PG_URL (e.g. postgresql+psycopg://postgres@127.0.0.1/test) and is
skipped, saying so, only when it is unset. Each test gets a schema of its own (search_path set
through the URL's `options`, as in tests/store/conftest.py) because the local tables `contacts`
and `contact_notes` have no tenant column.
"""

from __future__ import annotations

import secrets
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from sqlalchemy import Engine

from sync.api.client import OmiClient
from sync.emulator import EmulatorConfig, EmulatorServer
from sync.mapping import MappingSpec
from sync.mapping_file import load_mapping
from sync.notes import NotesOutbox
from sync.settings import default_mapping_file
from sync.store import make_engine
from sync.store.local import LocalTable, ensure_table
from sync.store.migrate import upgrade

API_KEY = "demo-key"



@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """An empty database of each kind."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path}/notes.db"
        return
    yield request.getfixturevalue("fresh_pg_url")


@dataclass
class Setup:
    url: str
    db: Engine
    tenant: str
    spec: MappingSpec
    local: LocalTable
    outbox: NotesOutbox

    def add_contacts(self, rows: list[dict[str, Any]]) -> None:
        with self.db.begin() as conn:
            conn.execute(self.local.table.insert(), rows)

    def add_notes(self, rows: list[dict[str, Any]]) -> list[int]:
        """Insert notes as an app would (every row names the same columns); returns ids."""
        assert self.outbox.table is not None
        cols = ("ref_id", "phone", "content", "note_by")
        ids = []
        with self.db.begin() as conn:
            for r in rows:
                result = conn.execute(self.outbox.table.insert().values(
                    {c: r.get(c) for c in cols}))
                key = result.inserted_primary_key
                assert key is not None
                ids.append(int(key[0]))
        return ids

    def outbox_rows(self) -> dict[int, dict[str, Any]]:
        from sync.store.schema import note_outbox
        with self.db.connect() as conn:
            rows = conn.execute(sa.select(note_outbox).where(
                note_outbox.c.tenant == self.tenant)).mappings()
            return {int(r["note_id"]): dict(r) for r in rows}


def make_setup(url: str, spec: MappingSpec | None = None, tenant: str | None = None) -> Setup:
    upgrade(url)
    db = make_engine(url)
    spec = spec or load_mapping(default_mapping_file())
    ensure_table(db, spec)
    local = LocalTable.for_spec(spec)
    tenant = tenant or f"t-{secrets.token_hex(4)}"
    outbox = NotesOutbox(db, tenant, spec, local)
    outbox.ensure_table()
    return Setup(url, db, tenant, spec, local, outbox)


@pytest.fixture
def setup(db_url: str) -> Iterator[Setup]:
    s = make_setup(db_url)
    try:
        yield s
    finally:
        s.db.dispose()


@pytest.fixture
def server() -> Iterator[EmulatorServer]:
    with EmulatorServer(EmulatorConfig(api_key=API_KEY)) as srv:
        yield srv


def client_for(url: str, **kwargs: Any) -> OmiClient:
    values: dict[str, Any] = {"max_retries": 0, "backoff_base": 0.01, "backoff_max": 0.05,
                              "timeout": 5.0, **kwargs}
    return OmiClient(url, API_KEY, **values)
