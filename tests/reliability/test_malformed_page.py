"""A malformed list page aborts the cycle with nothing half-applied.

- In process: the 3rd list page always comes back as truncated JSON (every retry too) while
  both sides have pending changes: the cycle fails (status failed, exit code 1, the run
  recorded as failed with the reason), no local row, no bookkeeping row and no CRM contact
  changed; once the page is readable again, every pending change goes through.
- Pages past one pull chunk (500 contacts): whole chunks may be applied before the bad page
  (the engine commits chunk by chunk), but each contact is whole: its row, its agreed base
  and the CRM agree, or it is exactly as before the cycle.
- The CLI: `python -m sync sync` against an emulator whose every answer but auth is malformed
  exits 1 and changes nothing.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from sync.cycle import CycleOptions
from sync.emulator import EmulatorConfig, EmulatorServer

from .conftest import Figures
from .helpers import (
    API_KEY,
    Ledger,
    ListRewriter,
    bookkeeping,
    cli_env,
    local_rows,
    mirror,
    run_cli,
    runs,
    settle,
    settled,
    synced_keys,
    wire_key,
    writes,
)

pytestmark = pytest.mark.reliability

TRUNCATED = b'{"status_code":9999,"instance_id":"emulator","payload":{"items":[{"public_id":"'
FULL = CycleOptions(full=True, kind="full")


def corrupt_page(bad: int) -> ListRewriter:
    return ListRewriter(lambda page, body: TRUNCATED if page == bad else body)


def changes_on_both_sides(rt: Any, server: EmulatorServer, keys: list[str]) -> Ledger:
    """Pending work on both sides, spread over early and late pages."""
    emu, table, ledger = server.emulator, rt.local.table, Ledger()
    live = {wire_key(w): w["public_id"] for w in emu.contacts()}
    with rt.db.begin() as conn:
        for n, key in enumerate(keys[0::40][:6]):
            conn.execute(table.update().where(table.c.ref_id == key)
                         .values(job_title=f"Thủ quỹ {n}"))
            ledger.wrote(key, job_title=f"Thủ quỹ {n}")
        for key in keys[7::90][:2]:
            conn.execute(table.delete().where(table.c.ref_id == key))
            ledger.delete(key)
        for j in range(3):
            key = f"MAL-{j}"
            conn.execute(sa.insert(table).values(ref_id=key, full_name=f"Lý Thị Hỏng {j}",
                                                 phone=f"091100000{j}"))
            ledger.create(key, full_name=f"Lý Thị Hỏng {j}", phone=f"091100000{j}")
    for n, key in enumerate(keys[3::40][:6]):
        emu.agent_update(live[key], address=f"{n} Hai Bà Trưng, Huế")
        ledger.wrote(key, address=f"{n} Hai Bà Trưng, Huế")
    for key in keys[11::90][:2]:
        emu.agent_delete(live[key])
        ledger.delete(key)
    emu.agent_create(full_name="Mai Văn Mới", ref_id="MAL-AGENT", phones=["0922000111"])
    ledger.create("MAL-AGENT", full_name="Mai Văn Mới", phone="0922000111")
    return ledger


def _kind(url: str) -> str:
    return sa.engine.make_url(url).get_backend_name()


async def test_malformed_third_page_aborts_with_nothing_applied(db_url: str,
                                                                figures: Figures) -> None:
    started = time.monotonic()
    config = EmulatorConfig(api_key=API_KEY, contacts=260, seed=41, page_size_cap=20,
                            add_more_delay=0.05)
    with EmulatorServer(config) as server:
        emu = server.emulator
        async with settled(server, db_url,
                           page_size=20, max_retries=3, max_delete_fraction=0.2) as rt:
            keys = synced_keys(rt)
            ledger = changes_on_both_sides(rt, server, keys)
            rows, states, crm = local_rows(rt), bookkeeping(rt), emu.contacts()
            emu.reset_stats()

            rt.transport = bad = corrupt_page(3)
            r = await rt.cycle(FULL)
            rt.transport = None
            assert bad.pages[3] == 4  # the first try and 3 retries, all malformed
            assert r.status == "failed" and r.exit_code == 1, (r.status, r.notes)
            assert r.notes and "list" in r.notes[0], r.notes
            assert local_rows(rt) == rows
            assert bookkeeping(rt) == states
            assert emu.contacts() == crm and writes(emu.stats()) == 0
            last = runs(rt)[-1]
            assert last["status"] == "failed" and last["finished_at"] is not None
            assert last["message"] and "list" in last["message"]

            after = await settle(rt, emu)
            m = mirror(rt, emu)
            lost = ledger.lost(m, emu)
            assert m.converged, m.summary()
            assert not lost, lost
            figures.record(
                f"malformed 3rd list page ({_kind(db_url)})", runs=1 + len(after),
                contacts=len(m.rows), status=r.status, exit_code=int(r.exit_code),
                list_requests_for_page_3=bad.pages[3], rows_changed=0,
                state_rows_changed=0, crm_writes=0, pending_changes=sum(
                    len(f) for f in ledger.expected.values()) + len(ledger.deleted),
                cycles_to_converge_after=len(after), duplicates=sum(
                    n - 1 for n in m.duplicates.values()), lost=len(lost),
                seconds=round(time.monotonic() - started, 1))


async def test_malformed_page_after_a_whole_chunk_leaves_every_contact_whole(
        sqlite_url: str, figures: Figures) -> None:
    started = time.monotonic()
    config = EmulatorConfig(api_key=API_KEY, contacts=1000, seed=42, page_size_cap=300,
                            add_more_delay=0.05)
    with EmulatorServer(config) as server:
        emu = server.emulator
        async with settled(server, sqlite_url,
                           page_size=300, max_retries=1, max_delete_fraction=0.2) as rt:
            conv = rt.converter
            keys = synced_keys(rt)
            ledger = changes_on_both_sides(rt, server, keys)
            rows, states = local_rows(rt), {s.key: s for c in rt.store.iter_all() for s in c}

            rt.transport = corrupt_page(3)  # pages 1-2: 600 contacts, one chunk of 500+
            r = await rt.cycle(FULL)
            rt.transport = None
            assert r.status == "failed" and r.exit_code == 1, (r.status, r.notes)
            m = mirror(rt, emu)
            now_states = {s.key: s for c in rt.store.iter_all() for s in c}
            now_rows = local_rows(rt)
            untouched, whole, half = 0, 0, []
            for key in rows.keys() | now_rows.keys():
                row, state = now_rows.get(key), now_states.get(key)
                if row == rows.get(key) and state == states.get(key):
                    untouched += 1
                elif (row is not None and state is not None and state.base is not None
                      and conv.row_fields(row) == state.base == m.crm.get(key)):
                    whole += 1
                else:
                    half.append(key)
            figures.record(
                "malformed page after a whole chunk (sqlite)", runs=1, contacts=len(rows),
                status=r.status, exit_code=int(r.exit_code), contacts_untouched=untouched,
                contacts_applied_whole=whole, contacts_half_applied=len(half),
                seconds=round(time.monotonic() - started, 1))
            assert not half, [(k, now_rows.get(k), now_states.get(k)) for k in half[:3]]
            await settle(rt, emu)
            m = mirror(rt, emu)
            assert m.converged, m.summary()
            assert not ledger.lost(m, emu)


async def test_cli_exits_1_and_changes_nothing_on_malformed_answers(
        tmp_path: Path, sqlite_url: str, figures: Figures) -> None:
    config = EmulatorConfig(api_key=API_KEY, contacts=60, seed=43, add_more_delay=0.05)
    with EmulatorServer(config) as server:
        emu = server.emulator
        async with settled(server, sqlite_url) as rt:
            keys = synced_keys(rt)
            changes_on_both_sides(rt, server, keys)
            rows, states, crm = local_rows(rt), bookkeeping(rt), emu.contacts()
            emu.configure(malformed_rate=1.0)  # every answer but auth's
            env = cli_env(base_url=server.url, api_key=API_KEY, database_url=sqlite_url,
                          max_retries=2, backoff_max=0.05, log_format="json")
            code, output = run_cli(["sync", "--full"], env, tmp_path, "sync-malformed")
            emu.configure(malformed_rate=0.0)
            assert code == 1, output
            assert "failed" in output
            assert local_rows(rt) == rows and bookkeeping(rt) == states
            assert emu.contacts() == crm
            assert runs(rt)[-1]["status"] == "failed"
            figures.record("malformed answers, CLI (sqlite)", runs=1, exit_code=code,
                           rows_changed=0, state_rows_changed=0, crm_changed=0)
