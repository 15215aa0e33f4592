"""crm-sync soak benchmark: does the long-running daemon's memory stay flat over many cycles?

    .venv/bin/python -m bench.soak [--contacts 20000] [--cycles 300] [--pg URL]
                                   [--tracemalloc [FRAMES]] [--json PATH]

The emulator is started as a subprocess (bench.run's `Emulator`, real HTTP on loopback), a
fresh one for each database. The mirror is first imported by a separate child (bench.run's
`pull` measurement, as a `crm-sync sync` run before the daemon would do), so that the daemon
process starts on an up-to-date mirror: an import in the same process would raise its RSS to
the import's high-water mark and the freed-but-kept heap could hide a slow leak for hundreds of
cycles (`--import-in-daemon` makes the daemon's first tick do the import instead).

The daemon then runs in ONE child process (`python -m bench.soak --child`), started with
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
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import random
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

if TYPE_CHECKING:  # imported late: the child starts tracemalloc before importing them
    import httpx
    import sqlalchemy as sa

    from bench.run import Emulator

ROOT = Path(__file__).resolve().parent.parent
TENANT = "bench"  # bench.sync_run's tenant: the mirror its `pull` imports is this tenant's
MB = 1024.0


# --- readings ---------------------------------------------------------------------------------

def proc_status() -> dict[str, int]:
    """VmRSS, VmHWM and RssAnon (kB) of this process, from /proc/self/status."""
    out: dict[str, int] = {}
    with open("/proc/self/status") as status:
        for line in status:
            name, _, rest = line.partition(":")
            if name in ("VmRSS", "VmHWM", "RssAnon"):
                out[name] = int(rest.split()[0])
    return out


def _open_fds() -> int:
    try:
        return len(os.listdir("/proc/self/fd"))
    except OSError:
        return -1


# --- the child: the daemon, one cycle per order -----------------------------------------------

def child_main(spec: dict[str, Any]) -> int:
    """Run `run_daemon` with the cycles fired on the parent's orders (see the docstring)."""
    frames = int(spec.get("tracemalloc") or 0)
    if frames:
        import tracemalloc
        tracemalloc.start(frames)
    import asyncio
    import gc
    from datetime import UTC, datetime

    from sync import daemon as daemon_module
    from sync.cycle import CycleResult
    from sync.settings import Settings, load_settings

    report = open(spec["report_fd"], "w", buffering=1)  # noqa: SIM115 (open for the run)
    trim = None
    if spec.get("malloc_trim"):
        import ctypes
        trim = ctypes.CDLL("libc.so.6").malloc_trim
    snapshot_at = {int(k): v for k, v in spec.get("snapshots", {}).items()}

    def send(msg: dict[str, Any]) -> None:
        report.write(json.dumps(msg, default=str) + "\n")

    class SoakDaemon(daemon_module.Daemon):
        """The daemon as `crm-sync run` builds it, plus the driver that fires its jobs."""

        def __init__(self, settings: Settings, **kwargs: Any) -> None:
            super().__init__(settings, **kwargs)
            self.soak_results: list[CycleResult] = []
            self.soak_done = asyncio.Event()
            self.soak_driver: asyncio.Task[None] | None = None

        def _start_scheduler(self) -> Any:
            scheduler = super()._start_scheduler()  # its `sync` job is due now: cycle 0
            self.soak_driver = asyncio.create_task(self._soak_drive(), name="soak-driver")
            return scheduler

        async def _tick(self, kind: str) -> None:
            try:
                await super()._tick(kind)
            finally:
                self.soak_done.set()

        def _record(self, result: CycleResult) -> None:
            self.soak_results.append(result)
            super()._record(result)

        async def _soak_drive(self) -> None:
            loop = asyncio.get_running_loop()
            reader = asyncio.StreamReader()
            orders = open(spec["command_fd"], "rb", buffering=0)  # noqa: SIM115
            await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), orders)
            cycle, kind, fired = 0, "sync", time.perf_counter()
            while True:
                await self.soak_done.wait()
                wall = time.perf_counter() - fired
                self.soak_done.clear()
                result = self.soak_results[-1] if self.soak_results else None
                self.soak_results.clear()  # nothing of a cycle kept here past its reading
                msg: dict[str, Any] = {
                    "cycle": cycle, "kind": kind, "wall_s": round(wall, 4),
                    "status": result.status if result else "error",
                    "duration_s": round(result.duration_s, 4) if result else None,
                    "counts": {k: v for k, v in result.counts.items() if v} if result else {},
                    "rows_in_error": result.rows_in_error if result else None,
                    "fds": _open_fds(), "threads": threading.active_count(),
                    "gc_objects": len(gc.get_objects()) if spec.get("count_objects") else None,
                    "py_blocks": sys.getallocatedblocks(), **proc_status()}
                if trim is not None:  # what the allocator keeps free: RSS after a trim
                    trim(0)
                    msg["trimmed"] = proc_status()["VmRSS"]
                del result
                if frames:
                    import tracemalloc
                    msg["traced"], msg["traced_peak"] = tracemalloc.get_traced_memory()
                    tracemalloc.reset_peak()
                    if cycle in snapshot_at:
                        gc.collect()
                        tracemalloc.take_snapshot().dump(snapshot_at[cycle])
                        msg["snapshot"] = snapshot_at[cycle]
                send(msg)
                line = await reader.readline()
                order: dict[str, Any] = json.loads(line) if line.strip() else {"stop": True}
                if order.get("stop"):
                    self.request_stop("soak over")
                    return
                kind, cycle = order["kind"], cycle + 1
                fired = time.perf_counter()
                assert self.scheduler is not None
                self.scheduler.modify_job(kind, next_run_time=datetime.now(UTC))

    settings = load_settings(
        base_url=spec["base_url"], api_key="demo-key", database_url=spec["db_url"],
        tenant=TENANT, page_size=spec["page_size"], concurrency=spec["concurrency"],
        interval_seconds=3600.0, full_sync_cron="0 0 1 1 *", health_host="127.0.0.1",
        health_port=0, log_format="json", log_level="info")
    send({"event": "start", **proc_status()})
    daemon_module.Daemon = SoakDaemon  # type: ignore[misc]  # run_daemon builds this one
    code = daemon_module.run_daemon(settings)
    send({"event": "exit", "code": code, **proc_status()})
    report.close()
    return code


# --- this process: the other side of the pipes, and the edits ---------------------------------

class SoakChild:
    """The measured child: reports one JSON line per cycle, waits for the next order."""

    def __init__(self, spec: dict[str, Any], log_path: Path) -> None:
        rep_r, rep_w = os.pipe()
        cmd_r, cmd_w = os.pipe()
        self._log = open(log_path, "w")  # noqa: SIM115
        self.log_path = log_path
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "bench.soak", "--child",
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


class Edits:
    """Both sides' changes between two cycles: the app's (SQL on the local table) and the CRM
    agents' (the emulator's admin routes)."""

    def __init__(self, db_url: str, emulator_url: str, opts: argparse.Namespace) -> None:
        import httpx
        import sqlalchemy as sa

        self.db: sa.Engine = sa.create_engine(db_url)
        self.http: httpx.Client = httpx.Client(base_url=emulator_url, timeout=30.0)
        self.opts, self.rng = opts, random.Random(opts.seed)
        self.totals: dict[str, int] = {}
        self.crm_deleted: set[str] = set()

    def _count(self, what: str, n: int) -> None:
        self.totals[what] = self.totals.get(what, 0) + n

    def apply(self, cycle: int) -> dict[str, int]:
        import sqlalchemy as sa

        o = self.opts
        with self.db.connect() as conn:
            synced = [(str(k), str(c)) for k, c in conn.execute(sa.text(
                "SELECT ref_id, crm_id FROM contacts WHERE crm_id IS NOT NULL ORDER BY ref_id"))]
        # Contacts deleted in the CRM stay in the table until a full cycle (a quick listing
        # does not show deletions): they are left alone meanwhile, as an edit to one is a
        # conflict (edited here, deleted there) and an agent's edit of one a 404.
        self.crm_deleted &= {c for _, c in synced}
        live = [r for r in synced if r[1] not in self.crm_deleted]
        # Rows no refId names (agents' contacts, `crm:` keys) cannot be updated through the
        # API: an app edit of one is a read-only edit, reported again every cycle, so the
        # app's edits and deletes pick rows it created (refIds), the agents' any contact.
        own = [r for r in live if not r[0].startswith("crm:")]
        app = self.rng.sample(own, min(o.app_updates + o.app_deletes, len(own)))
        picked = set(app)
        rest = [r for r in live if r not in picked]
        crm = self.rng.sample(rest, min(o.crm_updates + o.crm_deletes, len(rest)))
        app_upd, app_del = app[:o.app_updates], app[o.app_updates:]
        crm_upd, crm_del = crm[:o.crm_updates], crm[o.crm_updates:]
        self.crm_deleted.update(c for _, c in crm_del)
        done: dict[str, int] = {}
        with self.db.begin() as conn:  # one transaction, as an app's batch would be
            if app_upd:
                conn.execute(sa.text("UPDATE contacts SET job_title = :jt, note = :nt "
                                     "WHERE ref_id = :k"),
                             [{"k": k, "jt": f"Soak job {cycle}-{i}", "nt": f"Ghi chú {cycle}"}
                              for i, (k, _) in enumerate(app_upd)])
            if app_del:
                conn.execute(sa.text("DELETE FROM contacts WHERE ref_id = :k"),
                             [{"k": k} for k, _ in app_del])
            if o.app_inserts:
                conn.execute(sa.text(
                    "INSERT INTO contacts (ref_id, full_name, phone, email) "
                    "VALUES (:k, :n, :p, :e)"),
                    [{"k": f"SOAK-{cycle:05d}-{i:03d}", "n": f"Khách Soak {cycle}-{i}",
                      "p": f"039{cycle * 100 + i:07d}", "e": f"soak{cycle}-{i}@example.vn"}
                     for i in range(o.app_inserts)])
        done.update(app_updates=len(app_upd), app_deletes=len(app_del),
                    app_inserts=o.app_inserts)
        missing = 0
        for i, (_, crm_id) in enumerate(crm_upd):
            r = self.http.patch(f"/_emulator/contacts/{crm_id}", json={
                "job_title": f"CRM soak {cycle}-{i}", "note": f"Sửa trong CRM {cycle}"})
            missing += r.status_code == 404
            if r.status_code != 404:
                r.raise_for_status()
        for i in range(o.crm_creates):
            self.http.post("/_emulator/contacts", json={
                "full_name": f"Khách CRM {cycle}-{i}", "phones": [f"038{cycle * 100 + i:07d}"],
                "emails": [f"crm{cycle}-{i}@example.vn"]}).raise_for_status()
        for _, crm_id in crm_del:
            r = self.http.delete(f"/_emulator/contacts/{crm_id}")
            missing += r.status_code == 404
            if r.status_code != 404:
                r.raise_for_status()
        done.update(crm_updates=len(crm_upd), crm_creates=o.crm_creates,
                    crm_deletes=len(crm_del), crm_missing=missing)
        for k, v in done.items():
            self._count(k, v)
        return done

    def local_rows(self) -> int:
        import sqlalchemy as sa

        with self.db.connect() as conn:
            return int(conn.scalar(sa.text("SELECT count(*) FROM contacts")) or 0)

    def close(self) -> None:
        self.http.close()
        self.db.dispose()


# --- figures ----------------------------------------------------------------------------------

def milestones(n: int, warmup: int, step: int = 50) -> list[int]:
    return sorted({0, min(warmup, n), *range(step, n + 1, step), n})


def _mb(kb: float | None) -> float | None:
    return None if kb is None else round(kb / MB, 1)


def _slope(points: list[tuple[int, float]]) -> float | None:
    """Least-squares slope (y per x) of the points; None for fewer than two."""
    if len(points) < 2:
        return None
    xs, ys = [p[0] for p in points], [p[1] for p in points]
    mx, my = sum(xs) / len(xs), sum(ys) / len(ys)
    den = sum((x - mx) ** 2 for x in xs)
    return sum((x - mx) * (y - my) for x, y in points) / den if den else None


def summarise(cycles: list[dict[str, Any]], warmup: int, full_every: int) -> dict[str, Any]:
    """Milestones, growth after the warm-up, slope, wall times and statuses of one run."""
    by = {c["cycle"]: c for c in cycles}
    n = max(by)
    w = min(warmup, n)
    base, last = by[w], by[n]
    after = [c for c in cycles if c["cycle"] >= w]
    quick = [c for c in after if c["kind"] == "sync"]
    fulls = [c for c in after if c["kind"] == "full"]
    walls = [c["wall_s"] for c in cycles if c["cycle"] > 0]
    walls_quick = [c["wall_s"] for c in cycles if c["cycle"] > 0 and c["kind"] == "sync"]
    walls_full = [c["wall_s"] for c in cycles if c["cycle"] > 0 and c["kind"] == "full"]
    statuses: dict[str, int] = {}
    for c in cycles:
        statuses[c["status"]] = statuses.get(c["status"], 0) + 1

    def growth(a: dict[str, Any], b: dict[str, Any], key: str = "VmRSS") -> dict[str, Any]:
        mb = (b[key] - a[key]) / MB
        return {"from_cycle": a["cycle"], "to_cycle": b["cycle"], "from_mb": _mb(a[key]),
                "to_mb": _mb(b[key]), "mb": round(mb, 2),
                "pct": round(100 * (b[key] - a[key]) / a[key], 2) if a[key] else None}

    out: dict[str, Any] = {
        "cycles": n, "warmup": w,
        "milestones": [{"cycle": m, "kind": by[m]["kind"], "rss_mb": _mb(by[m]["VmRSS"]),
                        "rss_anon_mb": _mb(by[m].get("RssAnon")),
                        "hwm_mb": _mb(by[m].get("VmHWM")),
                        "traced_mb": (round(by[m]["traced"] / MB / MB, 2)
                                      if "traced" in by[m] else None),
                        "py_blocks": by[m].get("py_blocks"),
                        "trimmed_mb": _mb(by[m].get("trimmed")),
                        "fds": by[m]["fds"], "threads": by[m]["threads"]}
                       for m in milestones(n, w) if m in by],
        "growth": growth(base, last),
        "growth_anon": growth(base, last, "RssAnon") if "RssAnon" in base else None,
        "rss_max_after_warmup_mb": _mb(max(c["VmRSS"] for c in after)),
        "rss_slope_mb_per_100_cycles": (lambda s: None if s is None else round(100 * s / MB, 3))(
            _slope([(c["cycle"], c["VmRSS"]) for c in after])),
        "wall_s_per_cycle": {
            "mean": round(sum(walls) / len(walls), 4) if walls else None,
            "mean_quick": round(sum(walls_quick) / len(walls_quick), 4) if walls_quick else None,
            "mean_full": round(sum(walls_full) / len(walls_full), 4) if walls_full else None,
            "max": round(max(walls), 4) if walls else None,
            "first_tick_s": by[0]["wall_s"]},
        "statuses": statuses,
        "fds": {"at_warmup": base["fds"], "at_end": last["fds"]},
        "threads": {"at_warmup": base["threads"], "at_end": last["threads"]},
    }
    if len(quick) >= 2:
        out["growth_quick_to_quick"] = growth(quick[0], quick[-1])
    if len(fulls) >= 2:
        out["growth_full_to_full"] = growth(fulls[0], fulls[-1])
    if "py_blocks" in base:
        out["py_blocks_growth"] = last["py_blocks"] - base["py_blocks"]
        out["py_blocks_slope_per_100_cycles"] = (lambda s: None if s is None else round(
            100 * s))(_slope([(c["cycle"], c["py_blocks"]) for c in after]))
    if "trimmed" in base:
        out["growth_trimmed"] = growth(base, last, "trimmed")
    if "traced" in base:
        out["traced_growth_mb"] = round((last["traced"] - base["traced"]) / MB / MB, 3)
        out["traced_slope_kb_per_100_cycles"] = (lambda s: None if s is None else round(
            100 * s / MB, 2))(_slope([(c["cycle"], c["traced"]) for c in after]))
    return out


def _fmt(v: Any, fmt: str) -> str:
    return "-" if v is None else fmt % v


def print_progress(label: str, cycles: list[dict[str, Any]], warmup: int) -> None:
    """One line for the last 25 cycles: RSS now and against the warm-up, walls, traced."""
    block = cycles[-25:]
    last = block[-1]
    by = {c["cycle"]: c for c in cycles}
    base = by.get(warmup)
    delta = (last["VmRSS"] - base["VmRSS"]) / MB if base else None
    walls = [c["wall_s"] for c in block if c["cycle"] > 0]
    traced = last.get("traced")
    bad = sum(c["status"] not in ("ok", "partial") for c in block)
    print(f"[{label}] cycle {last['cycle']:>4}  RSS {last['VmRSS'] / MB:7.1f} MB  "
          f"vs cycle {warmup}: {_fmt(delta, '%+6.2f')} MB  "
          f"range {min(c['VmRSS'] for c in block) / MB:6.1f}-"
          f"{max(c['VmRSS'] for c in block) / MB:6.1f}  "
          f"wall {sum(walls) / max(1, len(walls)):5.2f} s/cycle (max {max(walls or [0]):5.2f})  "
          f"traced {_fmt(None if traced is None else traced / MB / MB, '%6.2f')} MB  "
          f"fds {last['fds']}  threads {last['threads']}"
          + (f"  NOT OK: {bad}" if bad else ""), flush=True)


def print_summary(label: str, s: dict[str, Any]) -> None:
    print(f"\n[{label}] RSS per milestone ({s['cycles']} cycles, warm-up {s['warmup']}):")
    head = (f"  {'cycle':>6} {'kind':<5} {'RSS MB':>8} {'anon MB':>8} {'HWM MB':>8} "
            f"{'py blocks':>10} {'traced MB':>9} {'trimmed MB':>10} {'fds':>4} {'thr':>4}")
    print(head + "\n  " + "-" * (len(head) - 2))
    for m in s["milestones"]:
        print(f"  {m['cycle']:>6} {m['kind']:<5} {_fmt(m['rss_mb'], '%8.1f')} "
              f"{_fmt(m['rss_anon_mb'], '%8.1f')} {_fmt(m['hwm_mb'], '%8.1f')} "
              f"{_fmt(m['py_blocks'], '%10d')} {_fmt(m['traced_mb'], '%9.2f')} "
              f"{_fmt(m['trimmed_mb'], '%10.1f')} {m['fds']:>4} {m['threads']:>4}")
    g = s["growth"]
    print(f"  growth cycle {g['from_cycle']} -> {g['to_cycle']}: {g['mb']:+.2f} MB "
          f"({g['pct']:+.2f}%)  [{g['from_mb']} -> {g['to_mb']} MB]")
    for key, what in (("growth_quick_to_quick", "quick -> quick"),
                      ("growth_full_to_full", "full -> full")):
        if key in s:
            q = s[key]
            print(f"  growth {what} (cycle {q['from_cycle']} -> {q['to_cycle']}): "
                  f"{q['mb']:+.2f} MB ({q['pct']:+.2f}%)")
    if s.get("growth_anon"):
        print(f"  anonymous RSS growth: {s['growth_anon']['mb']:+.2f} MB")
    print(f"  RSS slope after warm-up: {s['rss_slope_mb_per_100_cycles']:+.3f} MB / 100 cycles; "
          f"max after warm-up {s['rss_max_after_warmup_mb']} MB")
    if "py_blocks_growth" in s:
        print(f"  Python blocks allocated (sys.getallocatedblocks): {s['py_blocks_growth']:+d} "
              f"from the warm-up, slope {s['py_blocks_slope_per_100_cycles']:+d} / 100 cycles")
    if "growth_trimmed" in s:
        t = s["growth_trimmed"]
        print(f"  RSS after malloc_trim: {t['from_mb']} -> {t['to_mb']} MB ({t['mb']:+.2f} MB)")
    if "traced_growth_mb" in s:
        print(f"  traced (tracemalloc) growth: {s['traced_growth_mb']:+.3f} MB, slope "
              f"{s['traced_slope_kb_per_100_cycles']:+.2f} kB / 100 cycles")
    w = s["wall_s_per_cycle"]
    print(f"  wall per cycle: mean {w['mean']} s (quick {w['mean_quick']} s, full "
          f"{w['mean_full']} s, max {w['max']} s; first tick {w['first_tick_s']} s)")
    print(f"  statuses: {s['statuses']}  fds {s['fds']}  threads {s['threads']}")


# --- tracemalloc snapshots --------------------------------------------------------------------

def snapshot_diff(before: str, after: str, top: int = 12) -> dict[str, Any]:
    """The allocations grown between two snapshots: by traceback and by line."""
    import tracemalloc

    ignore = [tracemalloc.Filter(False, tracemalloc.__file__),
              tracemalloc.Filter(False, "<frozen importlib._bootstrap>"),
              tracemalloc.Filter(False, "<frozen importlib._bootstrap_external>"),
              tracemalloc.Filter(False, "<unknown>")]
    a = tracemalloc.Snapshot.load(before).filter_traces(ignore)
    b = tracemalloc.Snapshot.load(after).filter_traces(ignore)
    out: dict[str, Any] = {"total_before": sum(t.size for t in a.traces),
                           "total_after": sum(t.size for t in b.traces)}
    for key in ("traceback", "lineno"):
        stats = [s for s in b.compare_to(a, key) if s.size_diff > 0][:top]
        out[key] = [{"size_diff": s.size_diff, "count_diff": s.count_diff, "size": s.size,
                     "count": s.count,
                     "traceback": [f"{f.filename}:{f.lineno}" for f in s.traceback]}
                    for s in stats]
    return out


def print_diff(label: str, diff: dict[str, Any]) -> None:
    grown = (diff["total_after"] - diff["total_before"]) / MB / MB
    print(f"\n[{label}] tracemalloc: {diff['total_before'] / MB / MB:.2f} -> "
          f"{diff['total_after'] / MB / MB:.2f} MB traced after gc.collect() ({grown:+.3f} MB)")
    print("  grown most, by traceback (most recent call first):")
    for s in diff["traceback"][:8]:
        print(f"  {s['size_diff'] / MB:+9.1f} kB  {s['count_diff']:+7d} blocks")
        for frame in reversed(s["traceback"][-8:]):
            print(f"        {_short_path(frame)}")
    print("  grown most, by line:")
    for s in diff["lineno"][:10]:
        print(f"  {s['size_diff'] / MB:+9.1f} kB  {s['count_diff']:+7d} blocks  "
              f"{_short_path(s['traceback'][0])}")


def _short_path(frame: str) -> str:
    for marker in ("/site-packages/", str(ROOT) + "/"):
        if marker in frame:
            return frame.split(marker, 1)[1]
    return frame


# --- the run ----------------------------------------------------------------------------------

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
        res["child_start_rss_mb"] = _mb(first.get("VmRSS"))
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
        "params": {k: v for k, v in vars(opts).items() if k not in ("child", "json", "pg")},
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
    p.add_argument("--child", default=None, help=argparse.SUPPRESS)
    opts = p.parse_args(argv)
    if opts.child:
        return child_main(json.loads(opts.child))
    report = run(opts)
    if opts.json:
        Path(opts.json).write_text(json.dumps(report, indent=2, default=str))
        print(f"\nresults: {opts.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
