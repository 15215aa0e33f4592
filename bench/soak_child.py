"""The measured side of `bench.soak`: the daemon in a process of its own.

    python -m bench.soak_child SPEC_JSON

`sync.daemon.run_daemon` (what `crm-sync run` calls) with its Daemon class extended by a
driver that fires each cycle through the scheduler on the parent's order, and reports after
each cycle (VmRSS, VmHWM, RssAnon, open files, threads, Python's allocated blocks; with
`tracemalloc` the traced size and snapshots) as one JSON line. `bench/soak.py` says what is
measured and why; this module is what runs in the child.
"""

from __future__ import annotations

import json
import os
import sys
import threading
import time
from typing import Any

TENANT = "bench"  # bench.sync_run's tenant: the mirror its `pull` imports is this tenant's


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


if __name__ == "__main__":
    sys.exit(child_main(json.loads(sys.argv[1])))
