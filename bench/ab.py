"""Before and after in one run: crm-sync's first pull (or, with --noop, its no-op cycle) from
this checkout and from another one (a git worktree at the baseline commit), alternated against
one emulator, so that the drift of a shared machine between runs minutes apart does not pass
for a change (or hide one).

    git worktree add /tmp/base 7f28655
    python -m bench.ab /tmp/base --size 100000 --runs 3 [--pg postgresql+psycopg://...]
    python -m bench.ab /tmp/base --size 100000 --runs 5 --noop

Each cycle runs as `python -m bench.worker pull|noop` in a child whose working directory is
the checkout, so it imports that checkout's `sync` (the result's `sync_fingerprint` says which
sources it measured). A first pull gets a fresh database each time. With --noop, each checkout
first imports into a database of its own (not measured), then its no-op cycles on that mirror
are measured: they change nothing, so every run sees the same mirror. Prints every wall time
(and, for no-ops, the change detection), the medians and their ratio.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
from pathlib import Path
from typing import Any

from bench.run import ROOT, Emulator, child


def main(argv: list[str]) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench.ab", description=__doc__.split("\n")[0])
    ap.add_argument("base", type=Path, help="the other checkout (e.g. a git worktree)")
    ap.add_argument("--size", type=int, default=20_000, help="contacts in the emulator")
    ap.add_argument("--runs", type=int, default=3, help="cycles of each checkout, alternated")
    ap.add_argument("--page-size", type=int, default=1000)
    ap.add_argument("--pg", metavar="URL", help="into PostgreSQL (a fresh database each)")
    ap.add_argument("--noop", action="store_true",
                    help="measure no-op cycles on a mirror (imported first) instead of pulls")
    ap.add_argument("--timeout", type=float, default=1800.0)
    opts = ap.parse_args(argv)
    if not (opts.base / "sync" / "engine.py").exists():
        ap.error(f"{opts.base} is not a crm-sync checkout (no sync/engine.py)")
    workdir = Path(tempfile.mkdtemp(prefix="crm-ab-"))
    params = {"page_size": opts.page_size, "concurrency": 4}
    checkouts = {"base": opts.base.resolve(), "this": ROOT}
    emu = Emulator(opts.size, opts.page_size, workdir)
    walls: dict[str, list[float]] = {"base": [], "this": []}
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
        if opts.noop:
            for label in checkouts:
                mirrors[label] = _database(opts.pg, workdir, f"mirror-{label}", databases)
                if cycle("pull", label, f"mirror-{label}", mirrors[label]) is None:
                    return 1
        for i in range(opts.runs):
            for label in checkouts:
                name = f"{label}-{i + 1}"
                if opts.noop:
                    r = cycle("noop", label, name, mirrors[label])
                else:
                    r = cycle("pull", label, name, _database(opts.pg, workdir, name, databases))
                    _drop(opts.pg, databases)
                if r is None:
                    return 1
                walls[label].append(r["wall_s"])
                line = f"{name:<8} {r['wall_s']:8.2f} s"
                if opts.noop:
                    detection[label].append(r.get("change_detection_s", float("nan")))
                    line += f"   change detection {detection[label][-1]:.3f} s"
                print(line, flush=True)
    finally:
        emu.stop()
        _drop(opts.pg, databases)
    base, this = statistics.median(walls["base"]), statistics.median(walls["this"])
    what = "no-op" if opts.noop else "first pull"
    print(f"\n{what}, median of {opts.runs}: base {base:.2f} s (sync/ {prints['base']}), "
          f"this {this:.2f} s (sync/ {prints['this']}); this / base = {this / base:.3f}")
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


def _drop(pg: str | None, made: list[str]) -> None:
    if pg:
        from bench.sync_run import pg_database
        while made:
            pg_database(pg, made.pop(), drop=True)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
