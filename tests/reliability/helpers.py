"""The reliability suite's tools: an emulator over real HTTP, a Runtime on the same database,
`python -m sync` subprocesses, and the checks every scenario ends with (converged, duplicates,
lost edits), written against the Converter as the engine itself compares contacts."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time
from collections import Counter
from collections.abc import AsyncIterator, Callable, Collection, Iterable, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import sqlalchemy as sa

from sync.api.adapter import contact_from_wire
from sync.cycle import CycleOptions, CycleResult
from sync.emulator import Emulator, EmulatorServer
from sync.runtime import Runtime, build_runtime
from sync.settings import default_mapping_file, load_settings
from sync.store.schema import sync_lease, sync_runs, sync_state

ROOT = Path(__file__).resolve().parents[2]
API_KEY = "demo-key"
WRITE_ENDPOINTS = ("add", "add_more", "update", "delete", "add_note")


def wire_key(wire: Mapping[str, Any]) -> str:
    """The local key of a CRM contact: its refId, or one derived from its public_id."""
    return wire["ref_id"] or f"crm:{wire['public_id']}"


def writes(calls: Mapping[str, int]) -> int:
    return sum(v for k, v in calls.items() if k in WRITE_ENDPOINTS)


def settings_values(base_url: str, database_url: str, **overrides: Any) -> dict[str, Any]:
    """Explicit settings (a developer's .env or CRM_SYNC_* must not change a scenario)."""
    return {"base_url": base_url, "api_key": API_KEY, "database_url": database_url,
            "mapping_file": default_mapping_file(), "page_size": 100, "concurrency": 4,
            "batch_size": 100, "conflict_policy": "remote_wins", "max_delete_fraction": 0.1,
            "pending_recheck_seconds": 0.2, "max_retries": 5, "backoff_max": 0.05,
            "read_timeout": 10.0, **overrides}


def make_runtime(base_url: str, database_url: str, **overrides: Any) -> Runtime:
    return build_runtime(load_settings(_env_file=None,
                                       **settings_values(base_url, database_url, **overrides)))


# --- the checks -------------------------------------------------------------------------------

def crm_duplicates(emulator: Emulator) -> dict[str, int]:
    """refIds held by more than one live CRM contact."""
    counts = Counter(w["ref_id"] for w in emulator.contacts() if w["ref_id"])
    return {r: n for r, n in counts.items() if n > 1}


def local_rows(rt: Runtime) -> dict[str, dict[str, Any]]:
    table, key = rt.local.table, rt.local.key_column
    with rt.db.connect() as conn:
        return {r[key]: dict(r) for r in conn.execute(sa.select(table)).mappings()}


@dataclass
class Mirror:
    """How far the local table is from the CRM, compared through the Converter."""

    local_only: list[str] = field(default_factory=list)
    crm_only: list[str] = field(default_factory=list)
    different: dict[str, dict[str, tuple[Any, Any]]] = field(default_factory=dict)
    duplicates: dict[str, int] = field(default_factory=dict)
    rows: dict[str, dict[str, Any]] = field(default_factory=dict)  # local canonical fields
    crm: dict[str, dict[str, Any]] = field(default_factory=dict)  # CRM canonical fields

    @property
    def converged(self) -> bool:
        return not (self.local_only or self.crm_only or self.different or self.duplicates)

    def summary(self) -> str:
        return (f"local only {self.local_only[:5]} ({len(self.local_only)}), CRM only "
                f"{self.crm_only[:5]} ({len(self.crm_only)}), different "
                f"{dict(list(self.different.items())[:5])} ({len(self.different)}), "
                f"duplicates {self.duplicates}")


def mirror(rt: Runtime, emulator: Emulator, skip: Collection[str] = ()) -> Mirror:
    """Every local row against its CRM contact:
    `converter.row_fields(row) == converter.remote_fields(contact_from_wire(c))`.
    `skip`: local rows left out (rows in error, which the CRM never got, by design)."""
    conv = rt.converter
    m = Mirror(duplicates=crm_duplicates(emulator))
    crm_wire: dict[str, dict[str, Any]] = {}
    for w in emulator.contacts():
        crm_wire.setdefault(wire_key(w), w)  # a duplicate is reported above
    m.crm = {k: conv.remote_fields(contact_from_wire(w)) for k, w in crm_wire.items()}
    m.rows = {k: conv.row_fields(r) for k, r in local_rows(rt).items() if k not in skip}
    m.local_only = sorted(m.rows.keys() - m.crm.keys())
    m.crm_only = sorted(m.crm.keys() - m.rows.keys())
    for k in m.rows.keys() & m.crm.keys():
        a, b = m.rows[k], m.crm[k]
        if a != b:
            m.different[k] = {f: (a.get(f), b.get(f)) for f in a.keys() | b.keys()
                              if a.get(f) != b.get(f)}
    return m


@dataclass
class Ledger:
    """What a scenario wrote on either side, so what must hold once it converged: every
    field's latest value on both sides, every created contact exactly once in the CRM and in
    the table, every deleted one gone from both."""

    expected: dict[str, dict[str, Any]] = field(default_factory=dict)
    created: set[str] = field(default_factory=set)
    deleted: set[str] = field(default_factory=set)

    def wrote(self, key: str, **fields: Any) -> None:
        self.expected.setdefault(key, {}).update(fields)

    def create(self, key: str, **fields: Any) -> None:
        self.expected[key] = dict(fields)
        self.created.add(key)
        self.deleted.discard(key)

    def delete(self, key: str) -> None:
        self.expected.pop(key, None)
        self.created.discard(key)
        self.deleted.add(key)

    def lost(self, m: Mirror, emulator: Emulator) -> list[tuple[Any, ...]]:
        """(key, what, expected, local, CRM) for every write not found on both sides."""
        out: list[tuple[Any, ...]] = []
        for key, fields in sorted(self.expected.items()):
            for name, value in fields.items():
                here, there = m.rows.get(key, {}).get(name), m.crm.get(key, {}).get(name)
                if here != value or there != value:
                    out.append((key, name, value, here, there))
        for key in sorted(self.created):
            n = len(emulator.find_by_ref_id(key))
            if n != 1 or key not in m.rows:
                out.append((key, "created", "one CRM contact and a row", key in m.rows, n))
        return out

    def resurrected(self, m: Mirror) -> list[str]:
        return sorted(self.deleted & (m.rows.keys() | m.crm.keys()))


def bookkeeping(rt: Runtime) -> dict[str, Any]:
    """The tenant's sync_state rows, as stored (to prove a failed cycle wrote none)."""
    with rt.db.connect() as conn:
        q = sa.select(sync_state).where(sync_state.c.tenant == rt.store.tenant)
        return {r.key: tuple(map(repr, r)) for r in conn.execute(q)}


def runs(rt: Runtime) -> list[dict[str, Any]]:
    with rt.db.connect() as conn:
        q = (sa.select(sync_runs).where(sync_runs.c.tenant == rt.store.tenant)
             .order_by(sync_runs.c.id))
        return [dict(r) for r in conn.execute(q).mappings()]


def holder_pid(holder: str) -> int | None:
    """The pid in a lease holder (`host:pid[@pidns] #token`)."""
    pid = holder.split(" #", 1)[0].rpartition(":")[2].partition("@")[0]
    return int(pid) if pid.isdigit() else None


def lease_holders(db: sa.Engine) -> list[str]:
    with db.connect() as conn:
        return [str(h) for h in conn.scalars(sa.select(sync_lease.c.holder))]


async def settle(rt: Runtime, emulator: Emulator, *, full: bool = True, max_cycles: int = 30,
                 pause: float = 0.1, on_result: Callable[[CycleResult], None] | None = None,
                 ok: Iterable[str] = ("ok",)) -> list[CycleResult]:
    """Cycles until one ends ok, writes nothing to the CRM, changes no row nor any bookkeeping,
    and leaves no create pending in either place."""
    ok = tuple(ok)
    out: list[CycleResult] = []
    for _ in range(max_cycles):
        before = (local_rows(rt), _states(rt))
        r = await rt.cycle(CycleOptions(full=full, kind="full" if full else "sync"))
        out.append(r)
        if on_result:
            on_result(r)
        if (r.status in ok and not writes(r.api_calls) and (local_rows(rt), _states(rt)) == before
                and not rt.store.keys_by_status("pending_create") and emulator.pending == 0):
            return out
        await asyncio.sleep(pause)
    raise AssertionError(f"no fixpoint in {max_cycles} cycles; last: {out[-1]}")


@asynccontextmanager
async def settled(server: EmulatorServer, database_url: str, **overrides: Any
                  ) -> AsyncIterator[Runtime]:
    """A runtime on this database, settled against the served emulator (the mirror made),
    closed at the end."""
    rt = make_runtime(server.url, database_url, **overrides)
    try:
        await settle(rt, server.emulator)
        yield rt
    finally:
        rt.close()


def synced_keys(rt: Runtime) -> list[str]:
    """The keys of the rows bound to a CRM contact by refId (not `crm:` ones), in order."""
    return sorted(k for k in local_rows(rt) if not k.startswith("crm:"))


def _states(rt: Runtime) -> dict[str, Any]:
    return {s.key: {n: v for n, v in s.as_dict().items() if n != "attempts"}
            for chunk in rt.store.iter_all() for s in chunk}


# --- `python -m sync` subprocesses ------------------------------------------------------------

def cli_env(**settings: Any) -> dict[str, str]:
    """The environment of a `python -m sync` child: no inherited CRM_SYNC_*, these instead."""
    env = {k: v for k, v in os.environ.items()
           if not k.startswith("CRM_SYNC_") and k not in ("NOTIFY_SOCKET", "WATCHDOG_USEC")}
    env["PYTHONPATH"] = str(ROOT)
    env.update({f"CRM_SYNC_{k.upper()}": str(v) for k, v in settings.items()})
    return env


def start_cli(args: list[str], env: Mapping[str, str], workdir: Path,
              name: str) -> tuple[subprocess.Popen[bytes], Path]:
    """Start `python -m sync <args>` in `workdir` (no .env there), output to <name>.log."""
    log = workdir / f"{name}.log"
    with log.open("wb") as out:
        proc = subprocess.Popen([sys.executable, "-m", "sync", *args], cwd=workdir,
                                stdout=out, stderr=subprocess.STDOUT, env=dict(env))
    return proc, log


def run_cli(args: list[str], env: Mapping[str, str], workdir: Path, name: str,
            timeout: float = 60) -> tuple[int, str]:
    proc, log = start_cli(args, env, workdir, name)
    try:
        code = proc.wait(timeout)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
    return code, log.read_text(encoding="utf-8", errors="replace")


def wait_until(check: Callable[[], Any], timeout: float, step: float = 0.001) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value or time.monotonic() > deadline:
            return value
        time.sleep(step)



class ListRewriter(httpx.AsyncBaseTransport):
    """Real HTTP to the emulator, with the body of every answered list page passed through
    `rewrite(page_number, body) -> body` (the client then parses what this returns)."""

    def __init__(self, rewrite: Callable[[int, bytes], bytes]) -> None:
        self.rewrite = rewrite
        self.pages: Counter[int] = Counter()  # list requests per page number, retries included
        self._inner: httpx.AsyncHTTPTransport | None = None

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        if self._inner is None:
            self._inner = httpx.AsyncHTTPTransport()
        response = await self._inner.handle_async_request(request)
        if not request.url.path.endswith("/contacts/list") or response.status_code != 200:
            return response
        page = int(request.url.params.get("page", "1"))
        self.pages[page] += 1
        body = self.rewrite(page, await response.aread())
        headers = [(k, v) for k, v in response.headers.items()
                   if k.lower() not in ("content-length", "content-encoding")]
        return httpx.Response(200, headers=headers, content=body, request=request)

    async def aclose(self) -> None:
        inner, self._inner = self._inner, None
        if inner is not None:
            await inner.aclose()
