"""Before and after in one run: crm-sync's first pull (with --noop its no-op cycle, with
--edits N a cycle pulling N CRM edits into a mirror) from this checkout and from another one
(a git worktree at the baseline commit), alternated against one emulator, so that the drift
of a shared machine between runs minutes apart does not pass for a change (or hide one).

    git worktree add /tmp/base 7f28655
    python -m bench.ab /tmp/base --size 100000 --runs 3 [--pg postgresql+psycopg://...]
    python -m bench.ab /tmp/base --size 100000 --runs 5 --noop
    python -m bench.ab /tmp/base --size 100000 --runs 3 --edits 20000

Each cycle runs as `python -m bench.worker pull|noop` in a child whose working directory is
the checkout, so it imports that checkout's `sync` (the result's `sync_fingerprint` says which
sources it measured). A first pull gets a fresh database each time. With --noop, each checkout
first imports into a database of its own (not measured), then its no-op cycles on that mirror
are measured: they change nothing, so every run sees the same mirror. With --edits, each
checkout imports its mirror too, then N contacts spread over the listing are edited in the
emulator (once, for both), and every measured cycle runs on a fresh copy of its checkout's
mirror (SQLite's backup API, or a PostgreSQL database made from it as a template), so each
pulls the same N edits. Prints every wall time
and CPU time (and, for no-ops, the change detection), the medians and their ratios.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sqlite3
import statistics
import sys
import tempfile
from pathlib import Path
from typing import Any

import httpx
import sqlalchemy as sa

from bench.run import ROOT, Emulator, child


def main(argv: list[str]) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench.ab", description=__doc__.split("\n")[0])
    ap.add_argument("base", type=Path, help="the other checkout (e.g. a git worktree)")
    ap.add_argument("--size", type=int, default=20_000, help="contacts in the emulator")
    ap.add_argument("--runs", type=int, default=3, help="cycles of each checkout, alternated")
    ap.add_argument("--page-size", type=int, default=1000)
    ap.add_argument("--order", default="created",
                    help="the emulator's list order (created, updated_desc, public_id, random)")
    ap.add_argument("--pg", metavar="URL", help="into PostgreSQL (a fresh database each)")
    ap.add_argument("--noop", action="store_true",
                    help="measure no-op cycles on a mirror (imported first) instead of pulls")
    ap.add_argument("--edits", type=int, default=0, metavar="N",
                    help="measure a cycle pulling N CRM edits into a mirror (imported first)")
    ap.add_argument("--timeout", type=float, default=1800.0)
    opts = ap.parse_args(argv)
    if not (opts.base / "sync" / "engine.py").exists():
        ap.error(f"{opts.base} is not a crm-sync checkout (no sync/engine.py)")
    workdir = Path(tempfile.mkdtemp(prefix="crm-ab-"))
    params = {"page_size": opts.page_size, "concurrency": 4}
    checkouts = {"base": opts.base.resolve(), "this": ROOT}
    emu = Emulator(opts.size, opts.page_size, workdir, opts.order)
    walls: dict[str, list[float]] = {"base": [], "this": []}
    cpus: dict[str, list[float]] = {"base": [], "this": []}  # the child's and its workers'
    detection: dict[str, list[float]] = {"base": [], "this": []}
    prints: dict[str, str] = {}
    databases: list[str] = []
    mirrors: dict[str, str] = {}

    def cycle(scenario: str, label: str, name: str, db_url: str) -> dict[str, Any] | None:
        r: dict[str, Any] = child(scenario, {"base_url": emu.url, "db_url": db_url, **params},
                                  workdir, name, emu, timeout=opts.timeout,
                                  checkout=checkouts[label])
        if "wall_s" not in r:
            print(f"{name}: failed, see {workdir}", file=sys.stderr)
            return None
        prints[label] = r.get("sync_fingerprint", "?")
        return r

    try:
        child("floor", {"base_url": emu.url, **params}, workdir, "warmup", emu,
              timeout=opts.timeout)  # the emulator caches each contact's JSON when first served
        if opts.noop or opts.edits:
            for label in checkouts:
                mirrors[label] = _database(opts.pg, workdir, f"mirror-{label}", databases)
                if cycle("pull", label, f"mirror-{label}", mirrors[label]) is None:
                    return 1
        if opts.edits:
            _edit(emu.url, opts.edits)
        for i in range(opts.runs):
            for label in checkouts:
                name = f"{label}-{i + 1}"
                if opts.noop:
                    r = cycle("noop", label, name, mirrors[label])
                elif opts.edits:
                    copy = _copy(opts.pg, workdir, mirrors[label], name, databases)
                    r = cycle("pull", label, name, copy)
                    _drop(opts.pg, databases, keep=len(checkouts))
                else:
                    r = cycle("pull", label, name, _database(opts.pg, workdir, name, databases))
                    _drop(opts.pg, databases)
                if r is None:
                    return 1
                walls[label].append(r["wall_s"])
                cpus[label].append(r.get("child_cpu_s", float("nan")))
                line = f"{name:<8} {r['wall_s']:8.2f} s   CPU {cpus[label][-1]:6.2f} s"
                if opts.noop:
                    detection[label].append(r.get("change_detection_s", float("nan")))
                    line += f"   change detection {detection[label][-1]:.3f} s"
                print(line, flush=True)
    finally:
        emu.stop()
        _drop(opts.pg, databases)
    base, this = statistics.median(walls["base"]), statistics.median(walls["this"])
    what = ("no-op" if opts.noop else f"a cycle pulling {opts.edits} CRM edits" if opts.edits
            else "first pull")
    print(f"\n{what}, median of {opts.runs}: base {base:.2f} s (sync/ {prints['base']}), "
          f"this {this:.2f} s (sync/ {prints['this']}); this / base = {this / base:.3f}")
    # CPU (the cycle's process and its import workers, setup included) is steadier than wall
    # time when the VM's neighbours come and go
    b, t = statistics.median(cpus["base"]), statistics.median(cpus["this"])
    print(f"CPU, median: base {b:.2f} s, this {t:.2f} s; this / base = {t / b:.3f}")
    if opts.noop:
        b, t = statistics.median(detection["base"]), statistics.median(detection["this"])
        print(f"change detection, median: base {b:.3f} s, this {t:.3f} s; "
              f"this / base = {t / b:.3f}")
    return 0


def _database(pg: str | None, workdir: Path, name: str, made: list[str]) -> str:
    """A fresh database: a SQLite file, or a PostgreSQL database (recorded in `made`)."""
    if not pg:
        return f"sqlite:///{workdir / (name + '.db')}"
    from bench.sync_run import pg_database
    dbname = f"crm_ab_{os.getpid()}_{name.replace('-', '_')}"
    made.append(dbname)
    return pg_database(pg, dbname)


def _drop(pg: str | None, made: list[str], keep: int = 0) -> None:
    """Drop the PostgreSQL databases made, but the first `keep` (the mirrors)."""
    if pg:
        from bench.sync_run import pg_database
        while len(made) > keep:
            pg_database(pg, made.pop(), drop=True)


def _copy(pg: str | None, workdir: Path, mirror: str, name: str, made: list[str]) -> str:
    """A fresh copy of a mirror: SQLite's backup API, or a database with the mirror as its
    template."""
    if not pg:
        target = workdir / f"{name}.db"
        target.unlink(missing_ok=True)
        with sqlite3.connect(mirror.removeprefix("sqlite:///")) as src, \
                sqlite3.connect(target) as dst:
            src.backup(dst)
        return f"sqlite:///{target}"
    url = sa.engine.make_url(pg)
    dbname = f"crm_ab_{os.getpid()}_{name.replace('-', '_')}"
    admin = sa.create_engine(url, isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as conn:
            conn.exec_driver_sql(f'DROP DATABASE IF EXISTS "{dbname}" WITH (FORCE)')
            conn.exec_driver_sql(f'CREATE DATABASE "{dbname}" TEMPLATE '
                                 f'"{sa.engine.make_url(mirror).database}"')
    finally:
        admin.dispose()
    made.append(dbname)
    return url.set(database=dbname).render_as_string(hide_password=False)


def _edit(url: str, n: int) -> None:
    """An agent's edit of `n` contacts spread over the listing (their job title), through the
    emulator's admin API."""
    contacts = httpx.get(url + "/_emulator/contacts", timeout=300).json()
    step = max(1, len(contacts) // n)
    chosen = [c["public_id"] for c in contacts[::step][:n]]

    async def patch_all() -> None:
        async with httpx.AsyncClient(base_url=url, timeout=60) as client:
            gate = asyncio.Semaphore(16)

            async def one(public_id: str) -> None:
                async with gate:
                    r = await client.patch(f"/_emulator/contacts/{public_id}",
                                           json={"job_title": "Trưởng phòng kinh doanh"})
                    r.raise_for_status()
            await asyncio.gather(*(one(p) for p in chosen))

    asyncio.run(patch_all())
    print(f"edited {len(chosen)} contacts in the emulator", flush=True)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
