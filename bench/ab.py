"""Before and after in one run: crm-sync's first pull from this checkout and from another one
(a git worktree at the baseline commit), alternated against one emulator, so that the drift of
a shared machine between runs minutes apart does not pass for a change (or hide one).

    git worktree add /tmp/base 7f28655
    python -m bench.ab /tmp/base --size 100000 --runs 3 [--pg postgresql+psycopg://...]

Each pull runs as `python -m bench.worker pull` in a child whose working directory is the
checkout, so it imports that checkout's `sync` (the result's `sync_fingerprint` says which
sources it measured). Prints every wall time, the medians and their ratio.
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
    ap.add_argument("--runs", type=int, default=3, help="pulls of each checkout, alternated")
    ap.add_argument("--page-size", type=int, default=1000)
    ap.add_argument("--pg", metavar="URL", help="pull into PostgreSQL (a fresh database each)")
    ap.add_argument("--timeout", type=float, default=1800.0)
    opts = ap.parse_args(argv)
    if not (opts.base / "sync" / "engine.py").exists():
        ap.error(f"{opts.base} is not a crm-sync checkout (no sync/engine.py)")
    workdir = Path(tempfile.mkdtemp(prefix="crm-ab-"))
    params = {"page_size": opts.page_size, "concurrency": 4}
    emu = Emulator(opts.size, opts.page_size, workdir)
    walls: dict[str, list[float]] = {"base": [], "this": []}
    prints: dict[str, str] = {}
    try:
        child("floor", {"base_url": emu.url, **params}, workdir, "warmup", emu,
              timeout=opts.timeout)  # the emulator caches each contact's JSON when first served
        for i in range(opts.runs):
            for label, checkout in (("base", opts.base.resolve()), ("this", ROOT)):
                name = f"{label}-{i + 1}"
                db_url, dbname = _database(opts.pg, workdir, name)
                try:
                    r: dict[str, Any] = child("pull", {"base_url": emu.url, "db_url": db_url,
                                                       **params}, workdir, name, emu,
                                              timeout=opts.timeout, checkout=checkout)
                finally:
                    if dbname:
                        from bench.sync_run import pg_database
                        pg_database(opts.pg, dbname, drop=True)
                if "wall_s" not in r:
                    print(f"{name}: failed, see {workdir}", file=sys.stderr)
                    return 1
                walls[label].append(r["wall_s"])
                prints[label] = r.get("sync_fingerprint", "?")
                print(f"{name:<8} {r['wall_s']:8.2f} s", flush=True)
    finally:
        emu.stop()
    base, this = statistics.median(walls["base"]), statistics.median(walls["this"])
    print(f"\nmedian of {opts.runs}: base {base:.2f} s (sync/ {prints['base']}), "
          f"this {this:.2f} s (sync/ {prints['this']}); this / base = {this / base:.3f}")
    return 0


def _database(pg: str | None, workdir: Path, name: str) -> tuple[str, str | None]:
    if not pg:
        return f"sqlite:///{workdir / (name + '.db')}", None
    from bench.sync_run import pg_database
    dbname = f"crm_ab_{os.getpid()}_{name.replace('-', '_')}"
    return pg_database(pg, dbname), dbname


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
