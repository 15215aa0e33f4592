"""A fault storm from the emulator (10% HTTP 5xx, 5% 429, 2% timeouts, 1% malformed bodies on
every /api call, writes included) while both sides change: cycles converge within N cycles
(counted and reported), with no duplicate, no lost edit, no resurrected delete."""

from __future__ import annotations

import random
import time
import zlib
from collections import Counter

import pytest
import sqlalchemy as sa

from sync.cycle import CycleResult
from sync.emulator import EmulatorConfig, EmulatorServer

from .conftest import Figures
from .helpers import API_KEY, Ledger, local_rows, make_runtime, mirror, settle, wire_key

pytestmark = pytest.mark.reliability

STORM = {"error_500_rate": 0.10, "rate_429_rate": 0.05, "timeout_rate": 0.02,
         "malformed_rate": 0.01, "retry_after": 0.05, "timeout_hang": 0.5}
READ_TIMEOUT = 0.2  # smaller than the hang: a hung call is a client-side ReadTimeout
ROUNDS = 3
MAX_CYCLES = 12  # the bound asserted for each round to converge


def role(key: str) -> int:
    """0: the app edits it, 1: the app deletes it, 2: the agent deletes it (agent edits: 0, 3)."""
    return zlib.crc32(key.encode()) % 4


async def test_fault_storm_converges(sqlite_url: str, figures: Figures) -> None:
    started = time.monotonic()
    rng = random.Random(7)
    config = EmulatorConfig(api_key=API_KEY, contacts=300, seed=17, page_size_cap=20,
                            add_more_delay=0.05, duplicate_on_resend=True, **STORM)
    with EmulatorServer(config) as server:
        emu = server.emulator
        rt = make_runtime(server.url, sqlite_url, page_size=20, batch_size=10,
                          read_timeout=READ_TIMEOUT, max_retries=5, backoff_max=0.1,
                          pending_recheck_seconds=0.2, max_delete_fraction=0.2)
        ledger = Ledger()
        per_round: list[int] = []
        statuses: Counter[str] = Counter()
        reasons: Counter[str] = Counter()

        def seen(r: CycleResult) -> None:
            statuses[r.status] += 1
            if r.status == "failed":  # "RetriableError: add_more: ..." -> its first words
                reasons[" ".join(r.notes[0].split()[:2]).rstrip(":") if r.notes else "?"] += 1

        try:
            first = await settle(rt, emu, max_cycles=MAX_CYCLES,
                                 on_result=seen)
            per_round.append(len(first))
            table = rt.local.table
            for rnd in range(1, ROUNDS + 1):
                keys = sorted(k for k in local_rows(rt) if not k.startswith("crm:"))
                live = {wire_key(w): w["public_id"] for w in emu.contacts()}
                with rt.db.begin() as conn:
                    for n, key in enumerate(rng.sample([k for k in keys if role(k) == 0], 10)):
                        value = f"Trưởng nhóm {rnd}.{n}"
                        conn.execute(table.update().where(table.c.ref_id == key)
                                     .values(job_title=value))
                        ledger.wrote(key, job_title=value)
                    for key in rng.sample([k for k in keys if role(k) == 1], 3):
                        conn.execute(table.delete().where(table.c.ref_id == key))
                        ledger.delete(key)
                    for j in range(10):
                        key = f"STORM-{rnd}-{j:02d}"
                        row = {"ref_id": key, "full_name": f"Đỗ Thị Bão {rnd}.{j}",
                               "phone": f"0933{rnd:02d}{j:04d}",
                               "email": f"bao.{rnd}.{j}@example.vn"}
                        conn.execute(sa.insert(table).values(**row))
                        ledger.create(key, full_name=row["full_name"], phone=row["phone"],
                                      email=row["email"])
                for n, key in enumerate(rng.sample(
                        sorted(k for k in live if role(k) in (0, 3)), 10)):
                    value = f"{n} Trần Hưng Đạo, Hải Châu, Đà Nẵng (vòng {rnd})"
                    emu.agent_update(live[key], address=value)
                    ledger.wrote(key, address=value)
                for key in rng.sample(sorted(k for k in live if role(k) == 2), 3):
                    emu.agent_delete(live[key])
                    ledger.delete(key)
                for j in range(3):
                    key = f"AG-STORM-{rnd}-{j}"
                    emu.agent_create(full_name=f"Vũ Văn Gió {rnd}.{j}", ref_id=key,
                                     phones=[f"0944{rnd:02d}{j:04d}"])
                    ledger.create(key, full_name=f"Vũ Văn Gió {rnd}.{j}",
                                  phone=f"0944{rnd:02d}{j:04d}")
                emu.agent_create(full_name=f"Khách vãng lai {rnd}")  # no refId: read-only
                done = await settle(rt, emu, max_cycles=MAX_CYCLES,
                                    on_result=seen)
                per_round.append(len(done))
                m = mirror(rt, emu)
                assert m.converged, m.summary()
            m = mirror(rt, emu)
            lost, resurrected = ledger.lost(m, emu), ledger.resurrected(m)
            faults = emu.fault_counts()
            figures.record(
                "fault storm (10% 5xx, 5% 429, 2% timeouts, 1% malformed)",
                runs=sum(per_round), cycles_to_converge_per_round=per_round,
                max_cycles_to_converge=max(per_round), cycle_statuses=dict(statuses),
                failed_cycles_by_reason=dict(reasons),
                faults_injected=faults, api_requests=sum(emu.stats().values()),
                contacts=len(m.rows), duplicates=sum(n - 1 for n in m.duplicates.values()),
                lost=len(lost), resurrected=len(resurrected), converged=m.converged,
                seconds=round(time.monotonic() - started, 1))
            assert all(faults[k] > 0 for k in ("error_500", "rate_429", "timeout"))
            assert m.converged, m.summary()
            assert not m.duplicates
            assert not lost, lost[:10]
            assert not resurrected, resurrected
        finally:
            rt.close()
