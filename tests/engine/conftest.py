"""Fixtures for the engine's integration tests: the emulator over real HTTP, a Runtime on a
database of each kind (a SQLite file, or PostgreSQL in a schema of the test's own).

PostgreSQL needs CRM_SYNC_TEST_PG_URL (e.g. postgresql+psycopg://postgres@127.0.0.1/test) and is
skipped, saying so, only when it is unset. The approach is tests/store/conftest.py's (search_path
set through the URL's `options`), but per TEST rather than per session: the engine owns the
fixed-name local table `contacts`, which no tenant column separates.
"""

from __future__ import annotations

import secrets
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from sync.emulator import EmulatorConfig, EmulatorServer
from sync.settings import default_mapping_file, load_settings

from .helpers import Db, Harness

API_KEY = "demo-key"

MakeHarness = Callable[..., Harness]
# Re-check a pending create only after the emulator's default add-more delay (0.2 s) has passed:
# a lookup before that finds nothing, and a re-send then makes a duplicate (duplicate_on_resend).
RECHECK = 0.5



@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def db(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Db]:
    """An empty database of each kind (the runtime migrates it)."""
    if request.param == "sqlite":
        yield Db("sqlite", f"sqlite:///{tmp_path}/engine.db")
        return
    yield Db("postgresql", request.getfixturevalue("fresh_pg_url"))


@pytest.fixture
def make_harness(db: Db, tmp_path: Path) -> Iterator[MakeHarness]:
    """make_harness(emulator=EmulatorConfig | dict of knobs, mapping=YAML text, transport=...,
    **settings).

    Starts an EmulatorServer on a loopback port and builds a Runtime on `db` with fast,
    explicit settings (explicit so that a developer's .env or CRM_SYNC_* cannot change them).
    """
    made: list[Harness] = []

    def make(emulator: EmulatorConfig | dict[str, Any] | None = None, *,
             mapping: str | None = None, transport: httpx.AsyncBaseTransport | None = None,
             **settings: Any) -> Harness:
        config = (emulator if isinstance(emulator, EmulatorConfig)
                  else EmulatorConfig(**{"api_key": API_KEY, **(emulator or {})}))
        server = EmulatorServer(config).start()
        mapping_file = default_mapping_file()
        if mapping is not None:
            mapping_file = tmp_path / f"mapping-{len(made)}.yaml"
            mapping_file.write_text(mapping, encoding="utf-8")
        values: dict[str, Any] = dict(
            base_url=server.url, api_key=config.api_key, database_url=db.url,
            mapping_file=mapping_file, tenant=f"t-{secrets.token_hex(4)}", page_size=100,
            concurrency=4, batch_size=100, conflict_policy="remote_wins",
            max_delete_fraction=0.1, pending_recheck_seconds=RECHECK, max_retries=5,
            backoff_max=0.05, read_timeout=10.0)
        values.update(settings)
        try:
            h = Harness.build(server, db, load_settings(**values), transport=transport)
        except BaseException:
            server.stop()
            raise
        made.append(h)
        return h

    yield make
    for h in made:
        h.close()
