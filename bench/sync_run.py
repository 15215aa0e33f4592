"""crm-sync's side of the benchmark: one real cycle per call, as `crm-sync sync` runs it
(build_runtime, the tenant lock, `rt.cycle`), against the emulator over HTTP.

Phase times come from wrapping the engine's step methods in this process (nothing under
`sync/` is changed; the wrapped names are in `_TIMERS`, and a name a refactor removed is
reported in the result's `missing_timers`):

- `pull`: `Pull.run` (`SyncEngine._pull` before), the listing with the per-chunk plan and apply;
- `pull_chunks`: the share of it in `Pull.chunk` (`SyncEngine.pull_chunk` before; load state
  and rows, convert both sides, compare, plan, apply);
- `apply_chunks`: `Applier.apply_chunk` (local writes and bookkeeping, then CRM updates);
- `parse_pages`: `adapter.page_from_wire` (the listing's JSON -> lazily parsed items);
- `local_scan`: `SyncEngine._agreed`, the one pass (SQL) over the local table and sync_state
  that tells the rows still as agreed from the others, before the listing (quick cycles);
- `local_walk`: `LocalWalk.run`, the rows the listing did not show (new rows, pending
  creates, edits to contacts the listing missed): in a quick cycle only the rows the scan found
  not as agreed, in a full one every key;
- `orphans`: `Deletions.orphans`, the walk of sync_state for rows the app deleted;
- `push_updates`, `creates`, `deletes`: the CRM writes.

"Change detection" for the no-op target is `local_scan + local_walk + orphans`: what a cycle
does to find local inserts, edits and deletes that the listing cannot show. Listed contacts
whose row the scan found changed are compared inside `pull_chunks`, reported there.
"""

from __future__ import annotations

import asyncio
import functools
import json
import math
import time
from collections import defaultdict
from collections.abc import Callable
from typing import Any

import sqlalchemy as sa

PHASES: dict[str, float] = defaultdict(float)
CALLS: dict[str, int] = defaultdict(int)
# the import pool's stats as it closed (batches, prepared here, the workers' peak RSS)
POOLS: list[dict[str, int]] = []
_INSTALLED = False


def _timed_async(name: str, fn: Callable[..., Any]) -> Callable[..., Any]:
    @functools.wraps(fn)
    async def wrapper(*args: Any, **kwargs: Any) -> Any:
        started = time.perf_counter()
        try:
            return await fn(*args, **kwargs)
        finally:
            PHASES[name] += time.perf_counter() - started
            CALLS[name] += 1
    return wrapper


def _timed(name: str, fn: Callable[..., Any]) -> Callable[..., Any]:
    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        started = time.perf_counter()
        try:
            return fn(*args, **kwargs)
        finally:
            PHASES[name] += time.perf_counter() - started
            CALLS[name] += 1
    return wrapper


# (module, class or None, method names tried in order, phase). The engine is refactored
# often: a name that is gone is skipped and listed in `missing_timers` in the result.
_TIMERS: tuple[tuple[str, str | None, tuple[str, ...], str], ...] = (
    ("sync.pull", "Pull", ("run",), "pull"),
    ("sync.engine", "SyncEngine", ("_pull",), "pull"),
    ("sync.pull", "Pull", ("chunk",), "pull_chunks"),
    ("sync.engine", "SyncEngine", ("pull_chunk", "_pull_chunk"), "pull_chunks"),
    ("sync.engine", "SyncEngine", ("_agreed",), "local_scan"),
    ("sync.local_walk", "LocalWalk", ("run",), "local_walk"),
    ("sync.deletions", "Deletions", ("orphans",), "orphans"),
    ("sync.engine", "SyncEngine", ("_orphans",), "orphans"),
    ("sync.apply", "Applier", ("apply_chunk",), "apply_chunks"),
    ("sync.apply", "Applier", ("_push_updates",), "push_updates"),
    ("sync.apply", "Applier", ("creates",), "creates"),
    ("sync.deletions", "Deletions", ("apply",), "deletes"),
    ("sync.api.adapter", None, ("page_from_wire",), "parse_pages"),
)
MISSING: list[str] = []


def install_phase_timers() -> None:
    global _INSTALLED
    if _INSTALLED:
        return
    import importlib
    import inspect

    found: set[str] = set()
    for module_name, owner_name, names, phase in _TIMERS:
        try:
            module = importlib.import_module(module_name)
        except ImportError:
            continue
        owner = getattr(module, owner_name) if owner_name else module
        if owner is None:
            continue
        for name in names:
            fn = getattr(owner, name, None)
            if fn is None:
                continue
            wrap = _timed_async if inspect.iscoroutinefunction(fn) else _timed
            setattr(owner, name, wrap(phase, fn))
            found.add(phase)
            break
    MISSING.extend(sorted({t[3] for t in _TIMERS} - found))
    _watch_pools()
    _INSTALLED = True


def _watch_pools() -> None:
    """Record each import pool's stats just before it stops its workers: their peak RSS is
    read from /proc then, and counted in the measurement's peak RSS (bench/worker.py)."""
    try:
        from sync.import_pool import ImportPool
    except ImportError:  # a checkout from before the pool
        return
    close = ImportPool.close

    def recorded(self: Any) -> None:
        POOLS.append(self.stats())
        close(self)

    ImportPool.close = recorded  # type: ignore[method-assign]


def phases() -> dict[str, float]:
    out = {k: round(v, 4) for k, v in sorted(PHASES.items())}
    PHASES.clear()
    CALLS.clear()
    return out


def _settings(base_url: str, db_url: str, page_size: int, concurrency: int,
              batch_size: int) -> Any:
    from sync.settings import load_settings
    return load_settings(base_url=base_url, api_key="demo-key", database_url=db_url,
                         page_size=page_size, concurrency=concurrency, batch_size=batch_size,
                         tenant="bench")


def one_cycle(base_url: str, db_url: str, *, page_size: int = 100, concurrency: int = 4,
              batch_size: int = 100, prepare: Callable[[Any], dict[str, Any]] | None = None,
              after: Callable[[Any], dict[str, Any]] | None = None) -> dict[str, Any]:
    """One cycle as the CLI runs it; `prepare(rt)` runs before (untimed), `after(rt)` after."""
    from sync.cycle import CycleOptions
    from sync.runtime import build_runtime

    install_phase_timers()
    started = time.perf_counter()
    rt = build_runtime(_settings(base_url, db_url, page_size, concurrency, batch_size))
    lock = rt.lock()
    lock.acquire(wait=False)
    setup = time.perf_counter() - started
    out: dict[str, Any] = {"setup_s": round(setup, 4)}
    try:
        if prepare is not None:
            out["prepared"] = prepare(rt)
        phases()  # drop anything the preparation timed
        t0 = time.perf_counter()
        result = asyncio.run(rt.cycle(CycleOptions()))
        out["wall_s"] = time.perf_counter() - t0
        out["phases"] = phases()
        out["import_pools"] = list(POOLS)
        POOLS.clear()
        if MISSING:
            out["missing_timers"] = MISSING
        out.update(status=result.status, notes=list(result.notes),
                   counts={k: v for k, v in result.counts.items() if v},
                   api_calls=dict(result.api_calls), rows_in_error=result.rows_in_error)
        if after is not None:
            out.update(after(rt))
    finally:
        lock.release()
        rt.close()
    return out


def full_pull(base_url: str, db_url: str, **kw: Any) -> dict[str, Any]:
    """A first cycle into an empty database: every contact is pulled."""
    def after(rt: Any) -> dict[str, Any]:
        with rt.db.connect() as conn:
            return {"local_rows": rt.local.count(conn)}
    out = one_cycle(base_url, db_url, after=after, **kw)
    out["contacts"] = out["counts"].get("pulled", 0)
    out["contacts_per_s"] = out["contacts"] / out["wall_s"] if out["wall_s"] else None
    return out


def _rows(rt: Any) -> Any:
    """Every local row in key order, 1000 at a time, with whichever API the store has."""
    if hasattr(rt.local, "iter_rows"):
        yield from rt.local.iter_rows(rt.db, chunk=1000)
        return
    for keys in rt.local.iter_keys(rt.db):
        for start in range(0, len(keys), 1000):
            with rt.db.connect() as conn:
                found = rt.local.load(conn, keys[start:start + 1000])
            yield list(found.values())


def local_walk_proxy(rt: Any) -> dict[str, Any]:
    """The walks alone, outside a cycle, as a cross-check of the phase timers: every local
    row read in key order (and converted with `Converter.row_fields`), the keys alone when
    the store can walk them, and the sync_state walk (`StateStore.iter_all`). Best effort: the
    store's API changes, and a missing method is reported, not fatal."""
    out: dict[str, Any] = {}
    try:
        t0 = time.perf_counter()
        rows = sum(len(chunk) for chunk in _rows(rt))
        t1 = time.perf_counter()
        for chunk in _rows(rt):
            for row in chunk:
                rt.converter.row_fields(row)
        t2 = time.perf_counter()
        out.update(rows=rows, read_rows_s=round(t1 - t0, 4),
                   read_and_convert_s=round(t2 - t1, 4))
        if hasattr(rt.local, "iter_keys"):
            t0 = time.perf_counter()
            out["keys"] = sum(len(keys) for keys in rt.local.iter_keys(rt.db))
            out["read_keys_s"] = round(time.perf_counter() - t0, 4)
        if hasattr(rt.store, "iter_all"):
            t0 = time.perf_counter()
            out["states"] = sum(len(batch) for batch in rt.store.iter_all(chunk=1000))
            out["read_states_s"] = round(time.perf_counter() - t0, 4)
    except Exception as exc:  # the proxy must never cost the measurement
        out["error"] = f"{type(exc).__name__}: {exc}"
    return out


def noop(base_url: str, db_url: str, **kw: Any) -> dict[str, Any]:
    """A cycle on an up-to-date mirror: nothing changed on either side."""
    out = one_cycle(base_url, db_url, after=lambda rt: {"proxy": local_walk_proxy(rt)}, **kw)
    ph = out["phases"]
    out["change_detection_s"] = round(ph.get("local_scan", 0.0) + ph.get("local_walk", 0.0)
                                      + ph.get("orphans", 0.0), 4)
    writes = {k: v for k, v in out["api_calls"].items()
              if k in ("add", "add_more", "update", "delete", "add_note")}
    out["write_calls"] = sum(writes.values())
    return out


PUSH_PREFIX = "BENCH-"


def push(base_url: str, db_url: str, *, updates: int = 5000, inserts: int = 5000,
         batch_size: int = 100, **kw: Any) -> dict[str, Any]:
    """Edit `updates` mirrored rows and insert `inserts` new ones in the local table, as an
    app would (plain SQL), then run one cycle; then a second cycle once add-more applied."""
    def prepare(rt: Any) -> dict[str, Any]:
        t = rt.local.table
        key = rt.local.key
        with rt.db.begin() as conn:
            keys = [k for k in conn.execute(sa.select(key).order_by(key)).scalars()
                    if not str(k).startswith("crm:")]
            step = max(1, len(keys) // updates) if updates else 1
            chosen = keys[::step][:updates]
            conn.execute(t.update().where(key == sa.bindparam("k")).values(
                job_title=sa.bindparam("jt"), note=sa.bindparam("nt")),
                [{"k": k, "jt": f"Bench job {i}", "nt": f"Ghi chú bench {i}"}
                 for i, k in enumerate(chosen)])
            conn.execute(t.insert(), [
                {"ref_id": f"{PUSH_PREFIX}{i:06d}", "full_name": f"Khách Bench {i}",
                 "phone": f"09{i:08d}", "email": f"bench{i}@example.vn", "gender": "female",
                 "address": "Số 1 Lê Lợi, Quận 1, TP Hồ Chí Minh", "tags": ["Bench"]}
                for i in range(inserts)])
        return {"updated_rows": len(chosen), "inserted_rows": inserts}

    out = one_cycle(base_url, db_url, prepare=prepare, batch_size=batch_size, **kw)
    out["expected_add_more"] = math.ceil(inserts / batch_size)
    out["expected_update"] = updates
    # add-more is asynchronous: the next listing shows the creates (emulator delay is 0)
    confirm = one_cycle(base_url, db_url, batch_size=batch_size, **kw)
    out["confirm"] = {k: confirm[k] for k in ("wall_s", "status", "counts", "api_calls")}
    return out


def pg_database(server_url: str, name: str, *, drop: bool = False) -> str:
    """Create (or drop) database `name` on the server of `server_url`; returns its URL."""
    url = sa.engine.make_url(server_url)
    admin = sa.create_engine(url, isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as conn:
            conn.exec_driver_sql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
            if not drop:
                conn.exec_driver_sql(f'CREATE DATABASE "{name}"')
    finally:
        admin.dispose()
    return url.set(database=name).render_as_string(hide_password=False)


def dumps(obj: Any) -> str:
    return json.dumps(obj, default=str)
