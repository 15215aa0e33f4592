"""An app writing to the local table while cycles run loses no update.

A thread of the "app" updates a few rows in a loop with increasing values (its own connection
pool, as another process would) while cycles run back to back, and a CRM agent edits another
field of the same contacts between cycles, so that the cycles write into those very rows. Once
the app stops, a last cycle with no app write runs: the last value the app wrote is in the row
and in the CRM, and so is the agent's last value.
"""

from __future__ import annotations

import asyncio
import random
import threading
import time
from collections import Counter

import pytest
import sqlalchemy as sa

from sync.emulator import EmulatorConfig, EmulatorServer
from sync.store import make_engine

from .conftest import Figures
from .helpers import API_KEY, Ledger, local_rows, make_runtime, mirror, settle

pytestmark = pytest.mark.reliability

ROWS = 6
CYCLES = 10


async def test_app_writing_during_cycles_loses_no_update(db_url: str, figures: Figures) -> None:
    started = time.monotonic()
    config = EmulatorConfig(api_key=API_KEY, contacts=200, seed=23, page_size_cap=25,
                            latency=0.005, add_more_delay=0.05)
    with EmulatorServer(config) as server:
        emu = server.emulator
        rt = make_runtime(server.url, db_url, page_size=25)
        app_db = make_engine(db_url)
        try:
            assert (await rt.cycle()).status == "ok"
            keys = sorted(k for k in local_rows(rt) if not k.startswith("crm:"))[10:10 + ROWS]
            public = {k: emu.find_by_ref_id(k)[0]["public_id"] for k in keys}
            table = rt.local.table
            ledger = Ledger()
            last: dict[str, str] = {}
            writes = Counter[str]()
            stop, failures = threading.Event(), list[BaseException]()

            def app() -> None:
                rng, i = random.Random(5), 0
                try:
                    while not stop.is_set():
                        i += 1
                        key = keys[i % ROWS]
                        value = f"App ghi lần {i:06d}"
                        with app_db.begin() as conn:
                            n = conn.execute(table.update().where(table.c.ref_id == key)
                                             .values(note=value)).rowcount
                        assert n == 1
                        last[key] = value
                        writes["app"] += 1
                        time.sleep(rng.uniform(0, 0.02))  # each row: every ~60 ms
                except BaseException as exc:  # reported by the test, not lost in the thread
                    failures.append(exc)

            thread = threading.Thread(target=app, name="app-writer", daemon=True)
            results = []
            thread.start()
            try:
                for c in range(CYCLES):
                    for n, key in enumerate(keys):  # pulls that land in the app's rows
                        value = f"{c}{n} Nguyễn Huệ, Quận 1 (agent, chu kỳ {c})"
                        emu.agent_update(public[key], address=value)
                        ledger.wrote(key, address=value)
                        writes["agent"] += 1
                    results.append(await rt.cycle())
                    await asyncio.sleep(0.01)
            finally:
                stop.set()
                thread.join(10)
            assert not failures, failures
            for key, value in last.items():
                ledger.wrote(key, note=value)
            final = await settle(rt, emu, full=False)  # no app write any more
            m = mirror(rt, emu)
            lost = ledger.lost(m, emu)
            skipped = sum(r.counts.get("skipped_changed_during_cycle", 0) for r in results)
            kind = sa.engine.make_url(db_url).get_backend_name()
            figures.record(
                f"app writing during cycles ({kind})", runs=len(results) + len(final),
                cycles_during_app_writes=len(results), app_writes=writes["app"],
                agent_writes=writes["agent"], rows_written_by_both=ROWS,
                rows_skipped_as_changed_during_cycle=skipped,
                updates_pushed_during_app_writes=sum(r.counts.get("updated_remote", 0)
                                                     for r in results),
                cycle_statuses=dict(Counter(r.status for r in results + final)),
                conflicts=sum(r.counts.get("conflicts", 0) for r in results + final),
                duplicates=sum(n - 1 for n in m.duplicates.values()), lost=len(lost),
                converged=m.converged, seconds=round(time.monotonic() - started, 1))
            assert writes["app"] > 5 * CYCLES, "the app hardly wrote while cycles ran"
            assert all(r.status == "ok" for r in results), [r.notes for r in results]
            assert m.converged, m.summary()
            assert not lost, lost
        finally:
            app_db.dispose()
            rt.close()
