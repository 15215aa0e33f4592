"""Wiring: settings -> database, mapping, client, engine. The one place that assembles the
parts, so the CLI, the daemon, the demo and the tests build a cycle the same way."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import datetime

import httpx
from sqlalchemy.engine import Engine

from sync.api.client import OmiClient
from sync.convert import Converter
from sync.cycle import CycleOptions, CycleResult, ProgressFn
from sync.engine import SyncEngine, utcnow
from sync.errors import ConfigError, StoreError
from sync.gcpolicy import cycle_collector
from sync.import_worker import default_workers
from sync.mapping import MappingSpec
from sync.mapping_file import load_mapping
from sync.notes import NotesOutbox
from sync.settings import Settings
from sync.store import deferred_indexes, make_engine
from sync.store.adoption import check_table, column_scales
from sync.store.checkpoint import background_checkpoints
from sync.store.local import LocalTable, ensure_table
from sync.store.lock import TenantLock
from sync.store.migrate import is_up_to_date, upgrade
from sync.store.state import StateStore


@dataclass
class Runtime:
    """The long-lived parts of one tenant's sync: build once, run many cycles."""

    settings: Settings
    spec: MappingSpec
    db: Engine
    store: StateStore
    local: LocalTable
    converter: Converter
    notes: NotesOutbox
    transport: httpx.AsyncBaseTransport | None = None
    now: Callable[[], datetime] = utcnow
    on_request: Callable[..., None] | None = None
    _closed: bool = field(default=False, repr=False)

    def client(self) -> OmiClient:
        s = self.settings
        return OmiClient(s.base_url, s.api_key.get_secret_value(), timeout=s.read_timeout,
                         max_retries=s.max_retries, backoff_max=s.backoff_max,
                         transport=self.transport, on_request=self.on_request)

    def engine(self, client: OmiClient, progress: ProgressFn | None = None) -> SyncEngine:
        s = self.settings
        return SyncEngine(
            client=client, db=self.db, store=self.store, local=self.local,
            converter=self.converter, policy=s.conflict_policy, page_size=s.page_size,
            concurrency=s.concurrency, batch_size=s.batch_size, notes=self.notes,
            max_delete_fraction=s.max_delete_fraction,
            pending_recheck_seconds=s.pending_recheck_seconds, import_workers=(
                s.import_workers if s.import_workers is not None else default_workers()),
            import_min_contacts=s.import_min_contacts, now=self.now, progress=progress)

    def lock(self) -> TenantLock:
        return TenantLock(self.db, self.settings.tenant_id)

    async def cycle(self, options: CycleOptions = CycleOptions(),
                    progress: ProgressFn | None = None) -> CycleResult:
        """One cycle with a client of its own (no lock: the caller holds it)."""
        with cycle_collector(), background_checkpoints(self.db):
            async with self.client() as client:
                return await self.engine(client, progress).run(options)

    def close(self) -> None:
        if not self._closed:
            self.db.dispose()
            self._closed = True


def prepare_database(db: Engine, spec: MappingSpec, *, migrate: bool,
                     tenant: str | None = None) -> None:
    """Bring the bookkeeping schema up to date (or refuse) and create or check the table (a
    new one only for a `tenant` with nothing synced yet)."""
    up_to_date = is_up_to_date(db)  # also the first connection: the server's version is read
    version = db.dialect.server_version_info or ()
    if db.dialect.name == "postgresql" and version < (11,):  # hashtextextended: local.py
        raise StoreError(f"PostgreSQL 11 or later is needed; the server at "
                         f"{db.url.render_as_string(hide_password=True)} is "
                         f"{'.'.join(map(str, version)) or 'of an unknown version'}")
    if not up_to_date:
        if not migrate:
            raise StoreError("the database schema is not up to date: run `crm-sync db upgrade`")
        upgrade(db)
    deferred_indexes.restore(db)  # after a first import killed before it put them back
    problems = check_table(db, spec)
    if problems:
        raise ConfigError("the local table does not fit the mapping:\n  " +
                          "\n  ".join(problems))
    if tenant is not None:
        StateStore(db, tenant).refuse_new_table(spec.table)
    ensure_table(db, spec)


def build_runtime(settings: Settings, *, migrate: bool = True,
                  transport: httpx.AsyncBaseTransport | None = None,
                  now: Callable[[], datetime] = utcnow) -> Runtime:
    spec = load_mapping(settings.mapping_file)
    db = make_engine(settings.database_url)
    local = LocalTable.for_spec(spec)
    notes = NotesOutbox(db, settings.tenant_id, spec, local)
    try:
        prepare_database(db, spec, migrate=migrate, tenant=settings.tenant_id)
        notes.ensure_table()
        scales = column_scales(db, spec)
    except Exception:
        db.dispose()
        raise
    return Runtime(settings=settings, spec=spec, db=db,
                   store=StateStore(db, settings.tenant_id), local=local,
                   converter=Converter(spec, scales), notes=notes, transport=transport,
                   now=now)


@asynccontextmanager
async def opened(settings: Settings, **kwargs: object) -> AsyncIterator[Runtime]:
    rt = build_runtime(settings, **kwargs)  # type: ignore[arg-type]
    try:
        yield rt
    finally:
        rt.close()
