"""One measurement in a child process of its own (so that its peak RSS is its own):

    python -m bench.worker SCENARIO ARGS_JSON RESULT_PATH [LOG_PATH] [PROFILE_PREFIX]

SCENARIO is floor | pull | noop | push | naive | dlt. The result (JSON) goes to RESULT_PATH;
crm-sync's structlog lines go to LOG_PATH as JSON lines at level info, as in production. With
PROFILE_PREFIX, the scenario runs under pyinstrument and PREFIX.txt / PREFIX.html are written.
"""

from __future__ import annotations

import json
import resource
import sys
import time
from pathlib import Path
from typing import Any


def _rss_kb() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss


def _hwm_kb() -> int | None:
    """This process image's own peak RSS (VmHWM). ru_maxrss is no good for that on Linux: a
    child starts from the parent's RSS at spawn, as exec folds the parent's mm into it."""
    try:
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return None


def sync_fingerprint() -> str:
    """A hash of the sync/ sources as this process found them: the code under sync/ may be
    edited while a long run goes on, and every measurement says which code it measured."""
    import hashlib

    root = Path(__file__).resolve().parent.parent / "sync"
    digest = hashlib.blake2b(digest_size=8)
    for path in sorted(root.rglob("*.py")):
        digest.update(path.relative_to(root).as_posix().encode())
        digest.update(path.read_bytes())
    return digest.hexdigest()


def run(scenario: str, args: dict[str, Any]) -> dict[str, Any]:
    if scenario == "floor":
        from bench import floor
        return floor.run(**args)
    if scenario == "naive":
        from bench import peers
        return peers.naive(**args)
    if scenario == "dlt":
        from bench import peers
        return peers.dlt_rest_api(**args)
    from bench import sync_run
    fn = {"pull": sync_run.full_pull, "noop": sync_run.noop, "push": sync_run.push}[scenario]
    return fn(**args)


def main(argv: list[str]) -> int:
    scenario, args, result_path = argv[0], json.loads(argv[1]), Path(argv[2])
    fingerprint = sync_fingerprint()
    log_path = argv[3] if len(argv) > 3 and argv[3] else None
    profile = argv[4] if len(argv) > 4 and argv[4] else None
    if scenario in ("pull", "noop", "push"):
        import sync.runtime  # noqa: F401  (imports counted in the baseline RSS)
        from sync import logs
        logs.configure("json", "info", stream=open(log_path or "/dev/null", "w"))  # noqa: SIM115
    baseline_kb = _hwm_kb()
    started = time.perf_counter()
    if profile:
        from pyinstrument import Profiler
        profiler = Profiler(interval=0.001)
        profiler.start()
        out = run(scenario, args)
        profiler.stop()
        Path(profile + ".txt").write_text(profiler.output_text(unicode=True, color=False,
                                                               show_all=False))
        Path(profile + ".html").write_text(profiler.output_html())
    else:
        out = run(scenario, args)
    out["process_s"] = time.perf_counter() - started
    out["sync_fingerprint"] = fingerprint
    out["rss_baseline_kb"] = baseline_kb
    out["vm_hwm_kb"] = _hwm_kb()
    # worker processes of a pooled first import, measured as they stopped (sync_run.py)
    out["workers_hwm_kb"] = sum(p.get("workers_peak_rss_kb", 0)
                                for p in out.get("import_pools", []))
    out["ru_maxrss_kb"] = _rss_kb()
    result_path.write_text(json.dumps(out, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
