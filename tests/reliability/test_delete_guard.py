"""The CRM suddenly listing 80% fewer contacts deletes nothing beyond the delete guard.

- a listing hiccup (the API leaves 80% of the contacts out of its pages while they still exist):
  the full cycle looks each missing one up, finds it, deletes nothing;
- a real mass deletion in the CRM (an agent deleted 80%): `sync --full` is refused (status
  refused, exit code 1) and the local table stays intact, row for row; an operator who means it
  raises CRM_SYNC_MAX_DELETE_FRACTION for one run, and every deleted row is kept as a tombstone;
- the other way round, the local table losing 80% of its rows deletes nothing in the CRM.
"""

from __future__ import annotations

import json
import random
import time
import zlib
from pathlib import Path

import pytest
import sqlalchemy as sa

from sync.cycle import CycleOptions
from sync.emulator import EmulatorConfig, EmulatorServer

from .conftest import Figures
from .helpers import (
    API_KEY,
    ListRewriter,
    bookkeeping,
    cli_env,
    local_rows,
    make_runtime,
    mirror,
    run_cli,
    settle,
    settled,
    wire_key,
    writes,
)

pytestmark = pytest.mark.reliability

CONTACTS = 200
FULL = CycleOptions(full=True, kind="full")


def _kind(url: str) -> str:
    return sa.engine.make_url(url).get_backend_name()


class KeepOneInFive:
    """List pages with 80% of their items left out (the paging fields untouched)."""

    def __init__(self) -> None:
        self.listed = 0

    def __call__(self, _: int, body: bytes) -> bytes:
        data = json.loads(body)
        items = [i for i in data["payload"]["items"]
                 if zlib.crc32(i["public_id"].encode()) % 5 == 0]
        data["payload"]["items"] = items
        self.listed += len(items)
        return json.dumps(data).encode()


async def test_a_listing_missing_80_percent_deletes_nothing(db_url: str,
                                                            figures: Figures) -> None:
    started = time.monotonic()
    with EmulatorServer(EmulatorConfig(api_key=API_KEY, contacts=CONTACTS, seed=31)) as server:
        rt = make_runtime(server.url, db_url)
        try:
            await settle(rt, server.emulator)
            rows, states = local_rows(rt), bookkeeping(rt)
            keep = KeepOneInFive()
            rt.transport = ListRewriter(keep)
            r = await rt.cycle(FULL)
            listed = keep.listed
            rt.transport = None
            assert listed < 0.3 * CONTACTS, listed  # the hiccup did hide most contacts
            assert r.status == "ok", r.notes
            assert r.counts["deleted_local"] == r.counts["deleted_remote"] == 0
            assert local_rows(rt) == rows
            assert bookkeeping(rt).keys() == states.keys()
            assert len(server.emulator.contacts()) == CONTACTS
            figures.record(
                f"listing hiccup: 80% missing from the pages ({_kind(db_url)})", runs=1,
                contacts=CONTACTS, listed=listed,
                looked_up=r.api_calls.get("get", 0) + r.api_calls.get("details", 0),
                deleted_local=r.counts["deleted_local"],
                deleted_remote=r.counts["deleted_remote"], rows_changed=0, status=r.status,
                seconds=round(time.monotonic() - started, 1))
        finally:
            rt.close()


async def test_crm_deleting_80_percent_is_refused(db_url: str, tmp_path: Path,
                                                  figures: Figures) -> None:
    started = time.monotonic()
    with EmulatorServer(EmulatorConfig(api_key=API_KEY, contacts=CONTACTS, seed=32)) as server:
        emu = server.emulator
        async with settled(server, db_url, max_delete_fraction=0.1) as rt:
            rows, states = local_rows(rt), bookkeeping(rt)
            live = sorted(w["public_id"] for w in emu.contacts())
            gone = random.Random(3).sample(live, int(0.8 * len(live)))
            for public_id in gone:
                emu.agent_delete(public_id)

            r = await rt.cycle(FULL)
            assert r.status == "refused" and r.exit_code == 1, (r.status, r.notes)
            assert any("refused" in n and "MAX_DELETE_FRACTION" in n for n in r.notes), r.notes
            assert r.counts["deleted_local"] == 0
            assert local_rows(rt) == rows
            assert bookkeeping(rt).keys() == states.keys()

            env = cli_env(base_url=server.url, api_key=API_KEY, database_url=db_url,
                          max_delete_fraction=0.1, log_format="json")
            code, output = run_cli(["sync", "--full"], env, tmp_path, "sync-full")
            assert code == 1, output
            assert "refused" in output
            assert local_rows(rt) == rows
            assert writes(emu.stats()) == 0  # nothing was sent to the CRM either

            # the operator means it: a higher fraction for one run; nothing is lost
            rt.close()
            rt = make_runtime(server.url, db_url, max_delete_fraction=0.9)
            r2 = await rt.cycle(FULL)
            assert r2.status == "ok", r2.notes
            assert r2.counts["deleted_local"] == len(gone)
            tombs = rt.store.last_tombstones(limit=10_000)
            by_key = {t["key"]: t for t in tombs}
            deleted_keys = rows.keys() - local_rows(rt).keys()
            assert len(deleted_keys) == len(gone) and deleted_keys <= by_key.keys()
            assert all(by_key[k]["values"] for k in deleted_keys)
            assert mirror(rt, emu).converged
            figures.record(
                f"CRM deletes 80% ({_kind(db_url)})", runs=3, contacts=CONTACTS,
                deleted_in_crm=len(gone), in_process_status=r.status, cli_exit_code=code,
                rows_deleted_while_refused=0,
                rows_deleted_after_raising_the_fraction=r2.counts["deleted_local"],
                tombstones=len(deleted_keys), lost=0,
                seconds=round(time.monotonic() - started, 1))


async def test_local_table_losing_80_percent_deletes_nothing_in_the_crm(
        db_url: str, figures: Figures) -> None:
    with EmulatorServer(EmulatorConfig(api_key=API_KEY, contacts=CONTACTS, seed=33)) as server:
        emu = server.emulator
        async with settled(server, db_url, max_delete_fraction=0.1) as rt:
            crm_before = {wire_key(w): w for w in emu.contacts()}
            keys = sorted(local_rows(rt))
            lost_rows = random.Random(4).sample(keys, int(0.8 * len(keys)))
            table = rt.local.table
            with rt.db.begin() as conn:  # a botched migration
                conn.execute(table.delete().where(table.c.ref_id.in_(lost_rows)))
            emu.reset_stats()
            r = await rt.cycle()
            assert r.status == "refused" and r.exit_code == 1, (r.status, r.notes)
            assert emu.stats()["delete"] == 0
            assert {wire_key(w): w for w in emu.contacts()} == crm_before
            figures.record(
                f"local table loses 80% ({_kind(db_url)})", runs=1, contacts=CONTACTS,
                rows_deleted_locally=len(lost_rows), status=r.status,
                deleted_in_crm=emu.stats()["delete"])
