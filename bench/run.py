"""crm-sync benchmark: the emulator over real HTTP on loopback, crm-sync against the floor and
its peers, in one run. Usage (from the repository root, with the `bench` extra installed):

    .venv/bin/python -m bench.run [--sizes 20000,100000] [--pg URL] [--peers]
                                  [--json bench-results.json] [--profile DIR]

For each size, a fresh emulator is started as a subprocess (`python -m sync emulator`), so its
CPU does not share the GIL with the measured code (on a 2-core machine the emulator and the
client each get about one core). Its listing is read once as a warm-up (the emulator caches
each contact's JSON on first serve). Then, each measurement in a child process of its own:

- floor:  the same pages fetched and JSON-decoded with plain httpx, nothing stored
          (bench/floor.py), three times spread over the run; the best is the reference;
- pull:   a first crm-sync cycle into a fresh SQLite file (and a fresh PostgreSQL database
          with --pg): wall time, contacts/s, ratio to the floor, peak RSS of the child;
- noop:   a second cycle on that mirror (the first no-op after the import), then a third one
          (the steady state, which the no-op targets are judged on): wall time, API requests by
          endpoint, change detection (the local-table and sync_state walks, bench/sync_run.py);
- peers:  with --peers, the naive script and dlt's rest_api source (bench/peers.py);
- push:   on the first size's SQLite mirror, last (it changes the emulator): 5k local updates
          and 5k local inserts, one cycle; API calls by endpoint and wall time; then a cycle
          that confirms the creates.

Peak RSS is each child's own VmHWM (/proc/self/status at its end), so one measurement never
inherits another's peak, nor the parent's (ru_maxrss from os.wait4 is kept in the JSON as
`wait4_maxrss_mb`: on Linux it starts from the parent's RSS at spawn), plus the VmHWM of the
import workers a pooled first import started (read as the pool stops them; the client's own
figure is `own_peak_rss_mb`). Client CPU (from wait4) includes those workers. A table is
printed and everything goes to the JSON file.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import json
import math
import os
import platform
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import httpx

ROOT = Path(__file__).resolve().parent.parent
WRITE_ENDPOINTS = ("add", "add_more", "update", "delete", "add_note")


# --- the machine ----------------------------------------------------------------------------

def machine() -> dict[str, Any]:
    cpu = "unknown"
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    mem_kb = 0
    with contextlib.suppress(OSError, ValueError, IndexError):
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                mem_kb = int(line.split()[1])
    return {"nproc": os.cpu_count(), "cpu_model": cpu, "ram_gb": round(mem_kb / 1024 ** 2, 1),
            "python": platform.python_version(), "platform": platform.platform(),
            "loadavg_start": os.getloadavg(),
            "date": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"), **_git()}


def _git() -> dict[str, Any]:
    """The code measured: HEAD and whether sync/ had uncommitted changes at the start."""
    def git(*args: str) -> str:
        try:
            return subprocess.run(["git", *args], cwd=ROOT, capture_output=True, text=True,
                                  timeout=10).stdout.strip()
        except (OSError, subprocess.SubprocessError):
            return ""
    from bench.worker import sync_fingerprint

    dirty = [line for line in git("status", "--porcelain", "--", "sync").splitlines() if line]
    return {"git_head": git("rev-parse", "--short", "HEAD"), "sync_uncommitted_files": dirty,
            "sync_fingerprint": sync_fingerprint()}


def code_changes(report: dict[str, Any]) -> dict[str, list[str]]:
    """Which measurements saw which sync/ sources (more than one key: edited mid-run)."""
    seen: dict[str, list[str]] = {}
    for res in report["sizes"].values():
        for value in res.values():
            for r in value if isinstance(value, list) else [value]:
                if isinstance(r, dict) and r.get("sync_fingerprint"):
                    seen.setdefault(r["sync_fingerprint"], []).append(r["name"])
    return seen


# --- the emulator in a subprocess -------------------------------------------------------------

def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Emulator:
    def __init__(self, contacts: int, page_size_cap: int, workdir: Path,
                 order: str = "created") -> None:
        self.contacts, self.port = contacts, _free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self._log = open(workdir / f"emulator-{contacts}.log", "w")  # noqa: SIM115
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "sync", "emulator", "--port", str(self.port),
             "--contacts", str(contacts), "--page-size-cap", str(page_size_cap),
             "--add-more-delay", "0", "--seed", "1", "--order", order],
            cwd=ROOT, stdout=self._log, stderr=subprocess.STDOUT)
        started = time.perf_counter()
        while True:
            if self.proc.poll() is not None:
                raise RuntimeError(f"the emulator exited ({self.proc.returncode}); see "
                                   f"{self._log.name}")
            try:
                httpx.get(self.url + "/_emulator/stats", timeout=1.0).raise_for_status()
                break
            except httpx.HTTPError:
                if time.perf_counter() - started > 300:
                    raise RuntimeError("the emulator did not start in 300 s") from None
                time.sleep(0.2)
        self.startup_s = time.perf_counter() - started

    def stats(self) -> dict[str, int]:
        return {k: v for k, v in httpx.get(self.url + "/_emulator/stats").json().items() if v}

    def reset_stats(self) -> None:
        httpx.post(self.url + "/_emulator/stats/reset").raise_for_status()

    def live_contacts(self) -> int:
        token = httpx.get(self.url + "/api/auth", params={"apiKey": "demo-key"}).json()[
            "payload"]["access_token"]
        r = httpx.post(self.url + "/api/contacts/list", params={"page": 1, "size": 1}, json={},
                       headers={"Authorization": "Bearer " + token})
        return int(r.json()["payload"]["total_items"])

    def cpu_s(self) -> float:
        try:
            fields = Path(f"/proc/{self.proc.pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            return 0.0
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self._log.close()


# --- one measurement in a child ---------------------------------------------------------------

def child(scenario: str, args: dict[str, Any], workdir: Path, name: str, emu: Emulator,
          *, timeout: float, profile: str | None = None, checkout: Path = ROOT
          ) -> dict[str, Any]:
    """One measurement, in a child that imports `bench` and `sync` from `checkout`."""
    result_path = workdir / f"{name}.json"
    log_path = workdir / f"{name}.log"
    emu.reset_stats()
    cpu_before = emu.cpu_s()
    started = time.perf_counter()
    proc = subprocess.Popen(
        [sys.executable, "-m", "bench.worker", scenario, json.dumps(args), str(result_path),
         str(log_path), profile or ""], cwd=checkout,
        stdout=open(workdir / f"{name}.out", "w"), stderr=subprocess.STDOUT)  # noqa: SIM115
    timer = threading.Timer(timeout, proc.kill)
    timer.start()
    try:
        _, status, usage = os.wait4(proc.pid, 0)
    finally:
        timer.cancel()
    proc.returncode = os.waitstatus_to_exitcode(status)
    elapsed = time.perf_counter() - started
    out: dict[str, Any] = {"scenario": scenario, "name": name}
    if proc.returncode != 0 or not result_path.exists():
        tail = (workdir / f"{name}.out").read_text()[-2000:]
        out.update(error=f"exit {proc.returncode}", output_tail=tail)
        print(f"  ! {name} failed (exit {proc.returncode}):\n{tail}", file=sys.stderr)
    else:
        out.update(json.loads(result_path.read_text()))
    hwm = out.get("vm_hwm_kb")
    # the client's own peak plus its import workers' (an upper bound of the two together)
    own = hwm or usage.ru_maxrss
    out.update(child_elapsed_s=round(elapsed, 3),
               peak_rss_mb=round((own + out.get("workers_hwm_kb", 0)) / 1024, 1),
               own_peak_rss_mb=round(own / 1024, 1),
               wait4_maxrss_mb=round(usage.ru_maxrss / 1024, 1),
               child_cpu_s=round(usage.ru_utime + usage.ru_stime, 3),
               emulator_cpu_s=round(emu.cpu_s() - cpu_before, 3), server_calls=emu.stats())
    return out


# --- the run ----------------------------------------------------------------------------------

def run(opts: argparse.Namespace) -> dict[str, Any]:
    sizes = [int(s) for s in opts.sizes.split(",") if s]
    workdir = Path(opts.workdir or tempfile.mkdtemp(prefix="crm-bench-"))
    workdir.mkdir(parents=True, exist_ok=True)
    params = {"page_size": opts.page_size, "concurrency": opts.concurrency}
    report: dict[str, Any] = {
        "machine": machine(), "command": " ".join([Path(sys.executable).name, "-m", "bench.run",
                                                   *sys.argv[1:]]),
        "params": {**params, "batch_size": opts.batch_size, "repeat": opts.repeat,
                   "floor_page_sizes": opts.floor_page_sizes,
                   "push_updates": opts.push, "push_inserts": opts.push, "sizes": sizes,
                   "pg": bool(opts.pg), "peers": opts.peers},
        "sizes": {}}
    print(f"crm-sync benchmark: sizes {sizes}, page size {opts.page_size}, concurrency "
          f"{opts.concurrency}, workdir {workdir}", flush=True)
    for idx, n in enumerate(sizes):
        res: dict[str, Any] = {"floors": []}
        report["sizes"][str(n)] = res
        extra_sizes = [int(x) for x in opts.floor_page_sizes.split(",") if x]
        emu = Emulator(n, max([opts.page_size, *extra_sizes]), workdir)
        res["emulator_startup_s"] = round(emu.startup_s, 2)
        print(f"[{n}] emulator up on {emu.url} in {emu.startup_s:.1f} s", flush=True)

        def go(scenario: str, name: str, args: dict[str, Any], profile: str | None = None,
               n: int = n, emu: Emulator = emu) -> dict[str, Any]:
            r = child(scenario, {"base_url": emu.url, **args}, workdir, f"{n}-{name}", emu,
                      timeout=opts.timeout, profile=profile)
            print(f"[{n}] {name:<12} {r.get('wall_s', float('nan')):8.2f} s   "
                  f"rss {r['peak_rss_mb']:6.1f} MB   calls {r['server_calls']}", flush=True)
            return r

        def best(runs: list[dict[str, Any]]) -> dict[str, Any]:
            """The fastest of the repeats, with every repeat's wall time beside it."""
            ok = [r for r in runs if "wall_s" in r]
            chosen = dict(min(ok, key=lambda r: r["wall_s"]) if ok else runs[-1])
            if len(runs) > 1:
                chosen["walls"] = [r.get("wall_s") for r in runs]
            return chosen

        def floor(label: str, res: dict[str, Any] = res) -> None:
            res["floors"].append(best([go("floor", f"{label}-r{i + 1}", params)
                                       for i in range(opts.repeat)]))

        try:
            res["warmup"] = go("floor", "warmup", params)
            floor("floor-1")
            for size in extra_sizes:  # what the listing alone costs with bigger pages
                res.setdefault("floors_other_page_size", []).append(go(
                    "floor", f"floor-p{size}", {**params, "page_size": size}))
            pulls, noops, steady = [], [], []
            for i in range(opts.repeat):  # a fresh database for every repeat
                sqlite_url = f"sqlite:///{workdir / f'sync-r{i + 1}-{n}.db'}"
                pulls.append(go("pull", f"pull-sqlite-r{i + 1}", {"db_url": sqlite_url,
                                                                   **params}))
                noops.append(go("noop", f"noop-sqlite-r{i + 1}", {"db_url": sqlite_url,
                                                                   **params}))
                steady.append(go("noop", f"noop2-sqlite-r{i + 1}", {"db_url": sqlite_url,
                                                                     **params}))
            res["pull_sqlite"], res["noop_sqlite"] = best(pulls), best(noops)
            res["noop2_sqlite"] = best(steady)
            last_sqlite_noop = steady[-1]
            floor("floor-2")
            if opts.pg:
                from bench.sync_run import pg_database
                pulls, noops, steady = [], [], []
                for i in range(opts.repeat):
                    dbname = f"crm_bench_{os.getpid()}_{n}_{i + 1}"
                    pg_url = pg_database(opts.pg, dbname)
                    try:
                        pulls.append(go("pull", f"pull-pg-r{i + 1}", {"db_url": pg_url,
                                                                       **params}))
                        noops.append(go("noop", f"noop-pg-r{i + 1}", {"db_url": pg_url,
                                                                       **params}))
                        steady.append(go("noop", f"noop2-pg-r{i + 1}", {"db_url": pg_url,
                                                                         **params}))
                    finally:
                        pg_database(opts.pg, dbname, drop=True)
                res["pull_pg"], res["noop_pg"] = best(pulls), best(noops)
                res["noop2_pg"] = best(steady)
            if opts.peers:
                res["naive"] = best([go("naive", f"naive-r{i + 1}", {
                    "db_path": str(workdir / f"naive-r{i + 1}-{n}.db"),
                    "page_size": opts.page_size}) for i in range(opts.repeat)])
                if opts.dlt:
                    res["dlt"] = best([go("dlt", f"dlt-r{i + 1}", {
                        "db_path": str(workdir / f"dlt-r{i + 1}-{n}.db"),
                        "page_size": opts.page_size,
                        "workdir": str(workdir / f"dlt-r{i + 1}-{n}")})
                        for i in range(opts.repeat)])
            floor("floor-3")
            if opts.profile and idx == 0:
                pdir = Path(opts.profile)
                pdir.mkdir(parents=True, exist_ok=True)
                purl = f"sqlite:///{workdir / f'profile-{n}.db'}"
                res["profile_pull"] = go("pull", "prof-pull", {"db_url": purl, **params},
                                         profile=str(pdir / f"pull-{n}"))
                res["profile_noop"] = go("noop", "prof-noop", {"db_url": purl, **params},
                                         profile=str(pdir / f"noop-{n}"))
            if opts.push and idx == 0:  # on the last repeat's mirror
                res["push"] = go("push", "push", {
                    "db_url": sqlite_url, "updates": opts.push, "inserts": opts.push,
                    "batch_size": opts.batch_size, **params})
                res["push"]["emulator_live_after"] = emu.live_contacts()
                res["push"]["emulator_live_expected"] = n + opts.push
                if "wall_s" in res["push"] and "wall_s" in last_sqlite_noop:
                    res["push"]["minus_noop_s"] = (res["push"]["wall_s"]
                                                   - last_sqlite_noop["wall_s"])
        finally:
            emu.stop()
        if not opts.keep:
            for f in workdir.glob(f"*-{n}.db*"):
                f.unlink()
            for d in workdir.glob(f"dlt-r*-{n}"):
                shutil.rmtree(d, ignore_errors=True)
    report["machine"]["loadavg_end"] = os.getloadavg()
    report["code_seen"] = code_changes(report)
    report["summary"] = summarise(report)
    report["targets"] = targets(report)
    report["workdir"] = str(workdir)
    return report


# --- summary and targets ------------------------------------------------------------------------

def _floor(res: dict[str, Any]) -> float | None:
    walls = [f["wall_s"] for f in res.get("floors", []) if "wall_s" in f]
    return min(walls) if walls else None


def summarise(report: dict[str, Any]) -> list[dict[str, Any]]:
    rows = []
    k = report["params"]["push_updates"]
    push_label = f"{k // 1000}k+{k // 1000}k" if k % 1000 == 0 else f"{k}+{k}"
    for n, res in report["sizes"].items():
        floor = _floor(res)
        for key, label in (("floors", "floor"), ("pull_sqlite", "crm-sync pull, SQLite"),
                           ("pull_pg", "crm-sync pull, PostgreSQL"),
                           ("noop_sqlite", "crm-sync 1st no-op, SQLite"),
                           ("noop2_sqlite", "crm-sync no-op, SQLite"),
                           ("noop_pg", "crm-sync 1st no-op, PostgreSQL"),
                           ("noop2_pg", "crm-sync no-op, PostgreSQL"),
                           ("naive", "naive script, SQLite"), ("dlt", "dlt rest_api, SQLite"),
                           ("push", f"crm-sync push {push_label}, SQLite")):
            r = res.get(key)
            if r is None:
                continue
            if key == "floors":
                r = min((f for f in r if "wall_s" in f), key=lambda f: f["wall_s"], default=None)
                if r is None:
                    continue
            wall = r.get("wall_s")
            contacts = int(n) if key != "push" else None
            rows.append({
                "size": int(n), "what": label, "wall_s": wall,
                "contacts_per_s": contacts / wall if wall and contacts else None,
                "ratio_to_floor": wall / floor if wall and floor and key != "push" else None,
                "peak_rss_mb": r.get("peak_rss_mb"), "client_cpu_s": r.get("child_cpu_s"),
                "emulator_cpu_s": r.get("emulator_cpu_s"),
                "api_calls": r.get("server_calls"), "error": r.get("error")})
    return rows


def _t(name: str, ok: bool | None, measured: str) -> dict[str, Any]:
    return {"target": name, "met": ok, "measured": measured}


def targets(report: dict[str, Any]) -> list[dict[str, Any]]:
    sizes = report["sizes"]
    out = []
    for n, res in sizes.items():
        floor = _floor(res)
        for key, db in (("pull_sqlite", "SQLite"), ("pull_pg", "PostgreSQL")):
            r = res.get(key)
            if r and "wall_s" in r and floor:
                ratio = r["wall_s"] / floor
                out.append(_t(f"full pull {n} {db} within 1.3x of the floor", ratio <= 1.3,
                              f"{r['wall_s']:.2f} s vs floor {floor:.2f} s = {ratio:.2f}x"))
    ns = sorted(sizes, key=int)
    lo, hi = ns[0], ns[-1]
    for key, db in (("pull_sqlite", "SQLite"), ("pull_pg", "PostgreSQL")):
        big = sizes[hi].get(key)
        if big and "peak_rss_mb" in big:
            out.append(_t(f"peak RSS at {hi} ({db}) <= 200 MB", big["peak_rss_mb"] <= 200,
                          f"{big['peak_rss_mb']:.1f} MB"))
        small = sizes[lo].get(key)
        if big and small and lo != hi:
            growth = big["peak_rss_mb"] / small["peak_rss_mb"] - 1
            out.append(_t(f"peak RSS growth {lo} -> {hi} ({db}) < 25%", growth < 0.25,
                          f"{small['peak_rss_mb']:.1f} -> {big['peak_rss_mb']:.1f} MB "
                          f"(+{growth:.0%})"))
    for key, db in (("noop_sqlite", "SQLite"), ("noop_pg", "PostgreSQL")):
        # the steady state (a second no-op) when measured: the first no-op after an import
        # may also record bookkeeping for every contact once
        steady = sizes[hi].get(key.replace("noop", "noop2"))
        r = steady or sizes[hi].get(key)
        db = f"{db}, {'steady state' if steady else 'first no-op'}"
        if r and "wall_s" in r:
            out.append(_t(f"no-op cycle at {hi} ({db}) within 2 s", r["wall_s"] <= 2.0,
                          f"{r['wall_s']:.2f} s (floor for the same listing "
                          f"{_floor(sizes[hi]) or float('nan'):.2f} s)"))
            out.append(_t(f"no-op change detection at {hi} ({db}) within 0.5 s",
                          r["change_detection_s"] <= 0.5,
                          f"{r['change_detection_s']:.3f} s (local scan "
                          f"{r['phases'].get('local_scan', 0):.3f} s + local walk "
                          f"{r['phases'].get('local_walk', 0):.3f} s + orphans "
                          f"{r['phases'].get('orphans', 0):.3f} s)"))
            writes = {k: v for k, v in r["server_calls"].items() if k in WRITE_ENDPOINTS}
            out.append(_t(f"no-op cycle at {hi} ({db}): zero write calls", not writes,
                          f"{sum(writes.values())} write calls {writes or ''}".strip()))
    for n, res in sizes.items():
        p = res.get("push")
        if p and "server_calls" in p:
            calls = p["server_calls"]
            exp = p["expected_add_more"]
            out.append(_t(f"creates in ceil(n/batch) add-more calls ({n} mirror)",
                          calls.get("add_more", 0) == exp,
                          f"add_more {calls.get('add_more', 0)} (expected {exp}), update "
                          f"{calls.get('update', 0)} (expected {p['expected_update']}), "
                          f"emulator live {p.get('emulator_live_after')} (expected "
                          f"{p.get('emulator_live_expected')})"))
        mine = res.get("pull_sqlite")
        for peer in ("naive", "dlt"):
            q = res.get(peer)
            if mine and q and "wall_s" in q and "wall_s" in mine:
                out.append(_t(f"full pull {n} SQLite faster than {peer}",
                              mine["wall_s"] < q["wall_s"],
                              f"crm-sync {mine['wall_s']:.2f} s vs {peer} {q['wall_s']:.2f} s"))
    return out


def print_table(report: dict[str, Any]) -> None:
    head = (f"{'size':>7}  {'what':<30} {'wall s':>8} {'contacts/s':>11} {'x floor':>8} "
            f"{'peak RSS MB':>11} {'cpu s':>6} {'emu cpu s':>9}  api calls")
    print("\n" + head + "\n" + "-" * len(head))
    for r in report["summary"]:
        def f(v: Any, fmt: str) -> str:
            return "-" if v is None or (isinstance(v, float) and math.isnan(v)) else fmt % v
        calls = ", ".join(f"{k} {v}" for k, v in (r["api_calls"] or {}).items())
        print(f"{r['size']:>7}  {r['what']:<30} {f(r['wall_s'], '%8.2f')} "
              f"{f(r['contacts_per_s'], '%11.0f')} {f(r['ratio_to_floor'], '%8.2f')} "
              f"{f(r['peak_rss_mb'], '%11.1f')} {f(r['client_cpu_s'], '%6.1f')} "
              f"{f(r['emulator_cpu_s'], '%9.1f')}  {calls}"
              + (f"  ERROR {r['error']}" if r["error"] else ""))
    seen = report.get("code_seen") or {}
    if len(seen) > 1:
        print("\nWARNING: sync/ was edited during the run; the measurements saw different code:")
        for fp, names in seen.items():
            print(f"  {fp}: {', '.join(names)}")
    print("\ntargets:")
    for t in report["targets"]:
        mark = "MET    " if t["met"] else "NOT MET"
        print(f"  [{mark}] {t['target']}: {t['measured']}")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.run", description=__doc__.split("\n")[0])
    p.add_argument("--sizes", default="20000,100000", help="contacts per emulator, comma list")
    p.add_argument("--pg", default=None, metavar="URL",
                   help="PostgreSQL server URL (a fresh database is created and dropped)")
    p.add_argument("--peers", action="store_true", help="also run the naive script and dlt")
    p.add_argument("--no-dlt", dest="dlt", action="store_false", help="peers without dlt")
    p.add_argument("--json", default=None, metavar="PATH", help="write the results here")
    p.add_argument("--page-size", type=int, default=1000, help="page size asked for")
    p.add_argument("--floor-page-sizes", default="100", metavar="N,..",
                   help="also measure the floor at these page sizes (the emulator's cap is "
                        "raised to the largest; crm-sync still asks --page-size)")
    p.add_argument("--concurrency", type=int, default=4)
    p.add_argument("--batch-size", type=int, default=100)
    p.add_argument("--push", type=int, default=5000,
                   help="local updates and inserts to push on the first size (0: skip)")
    p.add_argument("--profile", default=None, metavar="DIR",
                   help="also profile a pull and a no-op at the first size (pyinstrument)")
    p.add_argument("--repeat", type=int, default=1,
                   help="run each floor, pull, no-op and peer N times; the fastest counts")
    p.add_argument("--timeout", type=float, default=1800.0, help="seconds per measurement")
    p.add_argument("--workdir", default=None, help="where databases and logs go")
    p.add_argument("--keep", action="store_true", help="keep the databases")
    opts = p.parse_args(argv)
    report = run(opts)
    print_table(report)
    if opts.json:
        Path(opts.json).write_text(json.dumps(report, indent=2, default=str))
        print(f"\nresults: {opts.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
