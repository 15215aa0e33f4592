"""crm-sync soak benchmark: does the long-running daemon's memory stay flat over many cycles?

    .venv/bin/python -m bench.soak [--contacts 20000] [--cycles 300] [--pg URL]
                                   [--tracemalloc [FRAMES]] [--json PATH]

The emulator is started as a subprocess (bench.run's `Emulator`, real HTTP on loopback), a
fresh one for each database. The mirror is first imported by a separate child (bench.run's
`pull` measurement, as a `crm-sync sync` run before the daemon would do), so that the daemon
process starts on an up-to-date mirror: an import in the same process would raise its RSS to
the import's high-water mark and the freed-but-kept heap could hide a slow leak for hundreds of
cycles (`--import-in-daemon` makes the daemon's first tick do the import instead).

The daemon then runs in ONE child process (`python -m bench.soak_child`), started with
`sync.daemon.run_daemon`, the function `crm-sync run` calls: logging configured as the command
configures it (structlog JSON lines on stdout, which goes to a log file here, stdlib logging
routed through it), the runtime built once, the health server (port 0), the signal handlers and
APScheduler's AsyncIOScheduler with its `sync` and `full` jobs. The interval is an hour and the
cron a yearly one, so the scheduler never fires a job on its own after the first tick (the
daemon's cycle at start, cycle 0); each following cycle is fired through the scheduler itself
(`modify_job(next_run_time=now)`), so every cycle is the daemon's `_tick` as APScheduler runs
it: the tenant lock, `close_abandoned_runs`, `Runtime.cycle` with a client of its own, the
metrics, the backlog gauges. Every `--full-every` (50) cycles the `full` job is fired instead.

Between two cycles this process (not the measured child) changes both sides, so the child's
memory is the daemon's alone: the app's edits go to the local table through SQLAlchemy (updates
of synced rows, inserts of new rows, deletes), the CRM agents' through the emulator's admin
routes (`/_emulator/contacts`: edits, creates, deletes). Inserts and deletes balance, so the
data's size stays where it started and any growth is the daemon's. The two processes take
turns over two pipes: the child reports after each cycle and waits for the next order.

After each cycle the child reads VmRSS, VmHWM and RssAnon from /proc/self/status, its open file
descriptors and threads, and `sys.getallocatedblocks()` (the blocks Python's allocator has
handed out and not got back: cheap enough for every cycle, and flat unless objects are kept).
No `gc.collect()` is run before a reading: what is measured is what the daemon keeps. Two
diagnoses, off by default:

- `--tracemalloc [FRAMES]`: tracemalloc is started before anything of crm-sync is imported;
  the traced size is read after each cycle, and snapshots are taken after cycle `--warmup` and
  after the last one (after a `gc.collect()`, so that they hold what is reachable); their
  difference is printed: the allocations grown most, by traceback and by line. Slow (at 20,000
  contacts a quick cycle takes 5 s, a full one a minute): use fewer cycles, `--full-every 10`
  and a warm-up past the first full cycle (`--warmup 20`). The RSS figures of such a run are
  tracemalloc's as much as the daemon's.
- `--malloc-trim`: the RSS is read again after glibc's `malloc_trim(0)`, which gives the free
  pages of the C heap back: growth that a trim takes away is free memory the allocator kept.

A table is printed every 25 cycles and at the end: RSS at cycle 0, `--warmup` (10), 50, 100,
..., N; the growth from cycle `--warmup` to N in MB and %, the growth between quick cycles
alone (a full cycle's RSS may be higher than a quick one's, freed memory is not always given
back) and the least-squares slope of RSS over the cycles after the warm-up (MB per 100 cycles);
the wall time per cycle (the order sent to the scheduler to the tick's end). The first full
cycle raises the RSS to a plateau of its own (it reads every row and state), so the growth
between full cycles (50 -> N) is the one that tells a leak. At the end the local row count and
the CRM's live contacts are compared. Everything goes to the JSON file. The default run (20,000
contacts, 300 cycles, SQLite) takes 3-5 minutes on a 2-core VM; `--pg` adds as much again.

The modules: this one drives (the emulator, the import, the edits, the orders) and prints;
`bench/soak_child.py` is the measured daemon; `bench/soak_figures.py` makes the figures.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

from bench.soak_edits import Edits
from bench.soak_figures import (
    ROOT,
    print_diff,
    print_progress,
    print_summary,
    snapshot_diff,
    summarise,
    to_mb,
)

if TYPE_CHECKING:

    from bench.run import Emulator


# --- the child's other end: its pipes ---------------------------------------------------------

class SoakChild:
    """The measured child: reports one JSON line per cycle, waits for the next order."""

    def __init__(self, spec: dict[str, Any], log_path: Path) -> None:
        rep_r, rep_w = os.pipe()
        cmd_r, cmd_w = os.pipe()
        self._log = open(log_path, "w")  # noqa: SIM115
        self.log_path = log_path
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "bench.soak_child",
             json.dumps({**spec, "report_fd": rep_w, "command_fd": cmd_r})],
            cwd=ROOT, stdout=self._log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            pass_fds=(rep_w, cmd_r))
        os.close(rep_w)
        os.close(cmd_r)
        self._reports: IO[str] = open(rep_r)  # noqa: SIM115
        self._orders: IO[str] = open(cmd_w, "w", buffering=1)  # noqa: SIM115

    def read(self, timeout: float) -> dict[str, Any]:
        timer = threading.Timer(timeout, self.proc.kill)
        timer.start()
        try:
            line = self._reports.readline()
        finally:
            timer.cancel()
        if not line:
            self.proc.wait()
            self._log.flush()
            tail = self.log_path.read_text(errors="replace")[-3000:]
            raise RuntimeError(f"the soak child ended (exit {self.proc.returncode}); its log "
                               f"{self.log_path} ends with:\n{tail}")
        msg: dict[str, Any] = json.loads(line)
        return msg

    def order(self, **order: Any) -> None:
        self._orders.write(json.dumps(order) + "\n")

    def close(self) -> int:
        with contextlib.suppress(OSError):
            self._orders.close()
        try:
            code = self.proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            code = self.proc.wait()
        self._reports.close()
        self._log.close()
        return code


def soak_one(label: str, emu: Emulator, db_url: str, opts: argparse.Namespace,
             workdir: Path) -> dict[str, Any]:
    """The soak on one database: (import,) daemon child, N cycles with edits between them."""
    from bench.run import child

    res: dict[str, Any] = {"database": label}
    params = {"page_size": opts.page_size, "concurrency": opts.concurrency}
    if not opts.import_in_daemon:
        imp = child("pull", {"base_url": emu.url, "db_url": db_url, **params}, workdir,
                    f"soak-import-{label}", emu, timeout=opts.timeout)
        res["import"] = {k: imp.get(k) for k in ("wall_s", "status", "contacts", "peak_rss_mb",
                                                 "error", "output_tail") if k in imp}
        print(f"[{label}] import in a child of its own: {imp.get('wall_s', float('nan')):.2f} s, "
              f"{imp.get('contacts')} contacts, status {imp.get('status')}", flush=True)
        if "error" in imp:
            raise RuntimeError(f"the import failed: {imp['error']}")
    snaps = {}
    if opts.tracemalloc:
        snaps = {str(min(opts.warmup, opts.cycles)): str(workdir / f"{label}-warmup.snap"),
                 str(opts.cycles): str(workdir / f"{label}-end.snap")}
    spec = {"base_url": emu.url, "db_url": db_url, "tracemalloc": opts.tracemalloc,
            "snapshots": snaps, "count_objects": opts.count_objects,
            "malloc_trim": opts.malloc_trim, **params}
    started = time.perf_counter()
    proc = SoakChild(spec, workdir / f"soak-daemon-{label}.log")
    edits: Edits | None = None
    cycles: list[dict[str, Any]] = []
    edit_s = 0.0
    try:
        first = proc.read(opts.timeout)
        res["child_start_rss_mb"] = to_mb(first.get("VmRSS"))
        edits = Edits(db_url, emu.url, opts)
        for i in range(opts.cycles + 1):
            msg = proc.read(opts.timeout)
            cycles.append(msg)
            if i and i % 25 == 0:
                print_progress(label, cycles, opts.warmup)
            if i == opts.cycles:
                break
            t0 = time.perf_counter()
            msg["edits_before_next"] = edits.apply(i + 1)
            edit_s += time.perf_counter() - t0
            proc.order(kind="full" if (i + 1) % opts.full_every == 0 else "sync")
        proc.order(stop=True)
        res["exit"] = proc.read(opts.timeout)
        res["local_rows_end"] = edits.local_rows()
        res["crm_live_end"] = emu.live_contacts()
        res["edit_totals"] = edits.totals
    finally:
        if edits is not None:
            edits.close()
        code = proc.close()
    res["child_exit_code"] = code
    res["elapsed_s"] = round(time.perf_counter() - started, 1)
    res["edits_s"] = round(edit_s, 1)
    res["summary"] = summarise(cycles, opts.warmup, opts.full_every)
    res["cycles"] = cycles
    print_summary(label, res["summary"])
    print(f"  end: local rows {res['local_rows_end']}, CRM live contacts {res['crm_live_end']}"
          f"{' (equal)' if res['local_rows_end'] == res['crm_live_end'] else ' (DIFFER)'}; "
          f"edits {res['edit_totals']}; child exit {code}; {res['elapsed_s']} s in all, "
          f"{res['edits_s']} s of it editing")
    if snaps and all(Path(p).exists() for p in snaps.values()):
        before, after = snaps[str(min(opts.warmup, opts.cycles))], snaps[str(opts.cycles)]
        res["tracemalloc_diff"] = snapshot_diff(before, after)
        print_diff(label, res["tracemalloc_diff"])
        if not opts.keep:
            for p in snaps.values():
                Path(p).unlink()
    return res


def run(opts: argparse.Namespace) -> dict[str, Any]:
    from bench.run import Emulator, machine
    from bench.sync_run import pg_database

    workdir = Path(opts.workdir or tempfile.mkdtemp(prefix="crm-soak-"))
    workdir.mkdir(parents=True, exist_ok=True)
    report: dict[str, Any] = {
        "machine": machine(),
        "command": " ".join([Path(sys.executable).name, "-m", "bench.soak", *sys.argv[1:]]),
        "params": {k: v for k, v in vars(opts).items() if k not in ("json", "pg")},
        "pg": bool(opts.pg), "workdir": str(workdir), "runs": {}}
    print(f"crm-sync soak: {opts.contacts} contacts, {opts.cycles} cycles (a full one every "
          f"{opts.full_every}), workdir {workdir}", flush=True)
    targets: list[tuple[str, str, str | None]] = [
        ("sqlite", f"sqlite:///{workdir / 'soak.db'}", None)]
    if opts.pg:
        dbname = f"crm_soak_{os.getpid()}"
        targets.append(("pg", pg_database(opts.pg, dbname), dbname))
    try:
        for label, url, _ in targets:
            emu = Emulator(opts.contacts, opts.page_size, workdir)
            print(f"[{label}] emulator up on {emu.url} in {emu.startup_s:.1f} s", flush=True)
            try:
                report["runs"][label] = soak_one(label, emu, url, opts, workdir)
            finally:
                emu.stop()
    finally:
        for _, _, scratch in targets:
            if scratch and opts.pg:
                pg_database(opts.pg, scratch, drop=True)
        if not opts.keep:
            for f in workdir.glob("soak.db*"):
                f.unlink()
    report["machine"]["loadavg_end"] = os.getloadavg()
    return report


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.soak", description=__doc__.split("\n")[0])
    p.add_argument("--contacts", type=int, default=20000, help="contacts in the emulator")
    p.add_argument("--cycles", type=int, default=300, help="cycles after the first tick")
    p.add_argument("--full-every", type=int, default=50, help="every Nth cycle is a full one")
    p.add_argument("--warmup", type=int, default=10, help="growth is measured from this cycle")
    p.add_argument("--pg", default=None, metavar="URL",
                   help="also on PostgreSQL (a fresh database is created and dropped)")
    p.add_argument("--json", default=None, metavar="PATH", help="write the results here")
    p.add_argument("--tracemalloc", type=int, nargs="?", const=10, default=0, metavar="FRAMES",
                   help="trace Python allocations (FRAMES deep, 10 by default): traced size "
                        "per cycle and a snapshot diff warm-up -> end (slower)")
    p.add_argument("--count-objects", action="store_true",
                   help="also count the objects the collector tracks after each cycle")
    p.add_argument("--malloc-trim", action="store_true",
                   help="diagnosis: also read RSS after glibc's malloc_trim(0) after each "
                        "cycle (the trim then changes what the next cycles start from)")
    p.add_argument("--import-in-daemon", action="store_true",
                   help="no import beforehand: the daemon's first tick imports the mirror")
    p.add_argument("--page-size", type=int, default=1000)
    p.add_argument("--concurrency", type=int, default=4)
    for side, edits in (("app", (("updates", 20), ("inserts", 5), ("deletes", 5))),
                        ("crm", (("updates", 20), ("creates", 2), ("deletes", 2)))):
        for what, default in edits:
            p.add_argument(f"--{side}-{what}", type=int, default=default,
                           help=f"{side} {what} before each cycle (default {default})")
    p.add_argument("--seed", type=int, default=1, help="which rows the edits pick")
    p.add_argument("--timeout", type=float, default=600.0, help="seconds per cycle at most")
    p.add_argument("--workdir", default=None, help="where databases and logs go")
    p.add_argument("--keep", action="store_true", help="keep the databases and snapshots")
    opts = p.parse_args(argv)
    report = run(opts)
    if opts.json:
        Path(opts.json).write_text(json.dumps(report, indent=2, default=str))
        print(f"\nresults: {opts.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
