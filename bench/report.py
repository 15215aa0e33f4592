"""Render a benchmark JSON (from `python -m bench.run --json`) as the Markdown tables of
docs/benchmarks.md:  python -m bench.report results.json"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any


def _f(v: Any, fmt: str) -> str:
    return "–" if v is None else fmt % v


def _calls(calls: dict[str, int] | None) -> str:
    return ", ".join(f"{k} {v}" for k, v in (calls or {}).items())


def render(report: dict[str, Any]) -> str:
    m, p = report["machine"], report["params"]
    out = [
        f"Measured {m['date']} on {m['nproc']} cores ({m['cpu_model']}), {m['ram_gb']} GB RAM, "
        f"Python {m['python']}, {m['platform']}; load average at start "
        f"{', '.join(f'{x:.2f}' for x in m['loadavg_start'])}, at end "
        f"{', '.join(f'{x:.2f}' for x in m.get('loadavg_end', []))}. Code: {m['git_head']}"
        f" (sync/ sources {m.get('sync_fingerprint', '?')})"
        + (f" with uncommitted changes in {len(m['sync_uncommitted_files'])} files under sync/"
           if m.get("sync_uncommitted_files") else "") + ".",
        "",
        f"Page size {p['page_size']}, concurrency {p['concurrency']}, add-more batch "
        f"{p['batch_size']}, each measurement repeated {p.get('repeat', 1)}x (the fastest "
        "counts; the floor is the fastest of all its runs at that size).",
        "",
        "| contacts | what | wall s | contacts/s | × floor | peak RSS MB | client CPU s "
        "| emulator CPU s | API requests (server count) |",
        "|---:|---|---:|---:|---:|---:|---:|---:|---|",
    ]
    for r in report["summary"]:
        out.append(
            f"| {r['size']:,} | {r['what']} | {_f(r['wall_s'], '%.2f')} | "
            f"{_f(r['contacts_per_s'], '%.0f')} | {_f(r['ratio_to_floor'], '%.2f')} | "
            f"{_f(r['peak_rss_mb'], '%.1f')} | {_f(r['client_cpu_s'], '%.1f')} | "
            f"{_f(r['emulator_cpu_s'], '%.1f')} | {_calls(r['api_calls'])}"
            + (f" **failed: {r['error']}**" if r.get("error") else "") + " |")
    out += ["", "Phases of the crm-sync cycles (seconds, wrapped engine methods; see "
            "bench/sync_run.py):", "",
            "| contacts | cycle | pull | pull_chunks | apply_chunks | parse_pages | local_scan "
            "| local_walk | orphans | push_updates | creates |",
            "|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for n, res in report["sizes"].items():
        for key in ("pull_sqlite", "noop_sqlite", "noop2_sqlite", "pull_pg", "noop_pg",
                    "noop2_pg", "push"):
            r = res.get(key)
            if not r or "phases" not in r:
                continue
            ph = r["phases"]
            out.append(f"| {int(n):,} | {key} | " + " | ".join(
                _f(ph.get(k), "%.2f") for k in ("pull", "pull_chunks", "apply_chunks",
                                                "parse_pages", "local_scan", "local_walk",
                                                "orphans",
                                                "push_updates", "creates")) + " |")
    seen = report.get("code_seen") or {}
    if len(seen) > 1:
        out += ["", "**sync/ was edited during this run**; the measurements saw different code: "
                + "; ".join(f"{fp}: {', '.join(names)}" for fp, names in seen.items())]
    out += ["", "Targets:", ""]
    for t in report["targets"]:
        out.append(f"- {'**met**' if t['met'] else '**NOT met**'}: {t['target']}: "
                   f"{t['measured']}")
    return "\n".join(out) + "\n"


def main(argv: list[str]) -> int:
    print(render(json.loads(Path(argv[0]).read_text())), end="")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
