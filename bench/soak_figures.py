"""`bench.soak`'s figures: milestones, growth, slopes, the printed tables, tracemalloc diffs."""

from __future__ import annotations

from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
MB = 1024.0


def milestones(n: int, warmup: int, step: int = 50) -> list[int]:
    return sorted({0, min(warmup, n), *range(step, n + 1, step), n})


def to_mb(kb: float | None) -> float | None:
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
        return {"from_cycle": a["cycle"], "to_cycle": b["cycle"], "from_mb": to_mb(a[key]),
                "to_mb": to_mb(b[key]), "mb": round(mb, 2),
                "pct": round(100 * (b[key] - a[key]) / a[key], 2) if a[key] else None}

    out: dict[str, Any] = {
        "cycles": n, "warmup": w,
        "milestones": [{"cycle": m, "kind": by[m]["kind"], "rss_mb": to_mb(by[m]["VmRSS"]),
                        "rss_anon_mb": to_mb(by[m].get("RssAnon")),
                        "hwm_mb": to_mb(by[m].get("VmHWM")),
                        "traced_mb": (round(by[m]["traced"] / MB / MB, 2)
                                      if "traced" in by[m] else None),
                        "py_blocks": by[m].get("py_blocks"),
                        "trimmed_mb": to_mb(by[m].get("trimmed")),
                        "fds": by[m]["fds"], "threads": by[m]["threads"]}
                       for m in milestones(n, w) if m in by],
        "growth": growth(base, last),
        "growth_anon": growth(base, last, "RssAnon") if "RssAnon" in base else None,
        "rss_max_after_warmup_mb": to_mb(max(c["VmRSS"] for c in after)),
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

