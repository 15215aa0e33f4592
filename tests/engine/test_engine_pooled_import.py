"""A first import with its per-contact work in worker processes (sync/pooled_import.py) writes
exactly what the in-process import writes, on SQLite and PostgreSQL: the same rows, the same
bookkeeping byte for byte, the same counts, with the awkward contacts (no refId, a refId two
CRM contacts share, a value the column cannot hold, a contact listed as deleted) handed to
the usual path. A worker that dies leaves the import to finish in the cycle's process."""

from __future__ import annotations

import os
import signal
from typing import Any, ClassVar

import pytest
import sqlalchemy as sa
from structlog.testing import capture_logs

import sync.pull
from sync.cycle import CycleOptions
from sync.emulator.config import ORDERS
from sync.import_pool import ImportPool
from sync.runtime import build_runtime
from sync.settings import default_mapping_file
from sync.store import deferred_indexes
from sync.store.deferred_indexes import SECONDARY
from sync.store.schema import sync_state

from .conftest import MakeHarness
from .helpers import Harness, app_rows, assert_mirrored, first, write_calls

N = 1100  # three batches (of 500, 500, 104): more than the window holds
MAPPING = default_mapping_file().read_text(encoding="utf-8") + (
    "  - {custom: Điểm, column: diem, type: integer}\n")


class _CountingPool(ImportPool):
    batches: ClassVar[list[int]] = []
    kill_after: ClassVar[int | None] = None  # kill the workers after this many batches
    fail_after: ClassVar[int | None] = None  # fail the import after this many batches
    db: ClassVar[sa.Engine | None] = None  # if set, the indexes seen at each batch
    indexes_seen: ClassVar[list[set[str]]] = []

    def submit(self, items: list[Any]) -> None:
        if self.db is not None:
            self.indexes_seen.append(_indexes(self.db))
        if len(self.batches) == self.fail_after:
            raise RuntimeError("the import failed here")
        super().submit(items)
        self.batches.append(len(items))
        if len(self.batches) == self.kill_after:
            for pid in self.pids:
                os.kill(pid, signal.SIGKILL)


@pytest.fixture
def pooled(monkeypatch: pytest.MonkeyPatch) -> type[_CountingPool]:
    """ImportPool with its batches counted (and its workers killed on demand)."""
    monkeypatch.setattr(sync.pull, "ImportPool", _CountingPool)
    _CountingPool.batches, _CountingPool.kill_after = [], None
    _CountingPool.fail_after, _CountingPool.db, _CountingPool.indexes_seen = None, None, []
    return _CountingPool


def _indexes(db: sa.Engine) -> set[str]:
    return {str(ix["name"]) for ix in sa.inspect(db).get_indexes("sync_state")}


def _awkward(h: Harness) -> None:
    emu = h.emulator
    emu.agent_create(full_name="Lê Thị Hồng Nhung", phones=["84912345678"])  # no refId
    emu.agent_create(full_name="Trần Văn Tiến", ref_id="KH-DUP")
    emu.agent_create(full_name="Trần Văn Tiến (bản sao)", ref_id="KH-DUP")
    emu.agent_create(full_name="Phạm Quốc Bảo", ref_id="KH-BAD", custom={"Điểm": "chín"})
    emu.agent_delete(emu.agent_create(full_name="Đã xoá", ref_id="KH-GONE"))


def _wipe(h: Harness) -> None:
    with h.rt.db.begin() as conn:
        conn.execute(h.table.delete())
        conn.execute(sync_state.delete().where(sync_state.c.tenant == h.rt.store.tenant))


def _import_with(h: Harness, workers: int = 1, min_contacts: int = 0) -> None:
    h.rt.settings = h.rt.settings.model_copy(update={"import_workers": workers,
                                                     "import_min_contacts": min_contacts})


async def test_a_pooled_import_writes_what_the_in_process_import_writes(
        make_harness: MakeHarness, pooled: type[_CountingPool]) -> None:
    h = make_harness({"contacts": N, "seed": 31, "page_size_cap": 100}, mapping=MAPPING,
                     page_size=100, import_min_contacts=0)
    _awkward(h)
    _import_with(h, 0)
    usual = await h.cycle()
    expected = h.fingerprint()
    assert not pooled.batches and usual.status == "partial", usual.notes  # KH-BAD
    assert usual.counts["errors"] == 1 and usual.counts["duplicates_in_crm"] == 1

    _wipe(h)
    _import_with(h, 1)
    r = await h.cycle()
    assert r.status == "partial", r.notes
    assert sum(pooled.batches) == N + 4 and len(pooled.batches) > 2
    assert r.counts == usual.counts
    assert h.fingerprint() == expected
    assert h.states()["KH-BAD"].status == "error"
    assert "does not fit column 'diem'" in (h.states()["KH-BAD"].last_error or "")

    nothing = await h.cycle()  # the bookkeeping vouches for every row: a quick no-op
    assert not write_calls(nothing.api_calls)
    assert nothing.counts["unchanged"] == N + 2, nothing.counts


async def test_an_import_finishes_in_process_when_its_worker_dies(
        make_harness: MakeHarness, pooled: type[_CountingPool]) -> None:
    h = make_harness({"contacts": N, "seed": 32, "page_size_cap": 100}, page_size=100,
                     import_min_contacts=0)
    pooled.kill_after = 2
    with capture_logs() as logs:
        r = await h.cycle()
    assert r.status == "ok", r.notes
    lost = [e for e in logs if e["event"] == "import.worker_lost"]
    assert len(lost) == 1 and lost[0]["log_level"] == "warning", lost
    assert r.counts["created_local"] == N and pooled.batches == [500, 500, 100]
    assert_mirrored(h)
    again = await h.cycle()
    assert again.counts["unchanged"] == N and not write_calls(again.api_calls)


async def test_small_imports_dry_runs_and_later_cycles_run_in_process(
        make_harness: MakeHarness, pooled: type[_CountingPool]) -> None:
    h = make_harness({"contacts": 40, "seed": 33})
    _import_with(h, min_contacts=41)
    assert (await h.cycle(dry_run=True)).status == "ok"
    _import_with(h, min_contacts=0)
    assert (await h.cycle(dry_run=True)).status == "ok"
    assert not pooled.batches  # a dry run writes nothing: no workers for it
    _import_with(h, min_contacts=41)  # the listing says 40: too short to pay for workers
    assert (await h.cycle()).counts["created_local"] == 40
    assert not pooled.batches
    _import_with(h, min_contacts=0)
    h.emulator.agent_create(full_name="Mới", ref_id="KH-NEW")
    assert (await h.cycle()).counts["created_local"] == 1
    assert not pooled.batches  # not a first import any more
    with h.rt.db.connect() as conn:
        assert conn.execute(sa.select(sa.func.count()).select_from(h.table)).scalar() == 41


async def test_a_row_an_app_inserts_during_a_pooled_import_is_kept(
        make_harness: MakeHarness, pooled: type[_CountingPool]) -> None:
    """As in the in-process import (test_engine_pull.py): the insert skips the key the app
    took meanwhile, and the app's row stands, not as agreed; its values then reach the CRM."""
    h = make_harness({"contacts": N, "seed": 34, "page_size_cap": 100}, page_size=100,
                     import_min_contacts=0)
    key = max(k for k in h.crm() if not k.startswith("crm:"))  # listed last, in order created
    app_row = {**app_rows("APP", 1)[0], "ref_id": key, "note": "App: thêm lúc 10h"}
    inserted: list[str] = []

    def progress(done: int, total: int | None) -> None:
        if not inserted:  # after the first page: the key's chunk is not written yet
            h.insert(app_row)
            inserted.append(key)

    r = await h.rt.cycle(CycleOptions(), progress=progress)
    assert inserted and r.status == "ok", r.notes
    assert pooled.batches
    assert r.counts["skipped_changed_during_cycle"] == 1
    assert r.counts["created_local"] == N - 1
    assert h.row(key)["note"] == "App: thêm lúc 10h"  # type: ignore[index]
    assert h.states()[key].local_hash is None
    await h.settle()
    assert first(h.crm()[key], "note") == "App: thêm lúc 10h"
    assert len(h.crm_by_ref(key)) == 1


@pytest.mark.parametrize("order", ORDERS)
async def test_a_pooled_import_mirrors_the_crm_in_every_list_order(
        make_harness: MakeHarness, pooled: type[_CountingPool], order: str) -> None:
    """A server that caps pages at 37 and lists in any order: the pooled import (and, for a
    random order, the quick cycles that fill in what one listing missed) mirror every contact
    field for field; then a cycle writes nothing."""
    h = make_harness({"contacts": 600, "seed": 35, "page_size_cap": 37, "order": order},
                     import_min_contacts=0)
    r = await h.cycle()
    assert r.status == "ok", r.notes
    assert pooled.batches and not write_calls(r.api_calls)
    for _ in range(40):
        if len(h.rows()) == len(h.crm()):
            break
        assert (await h.cycle()).status == "ok"
    assert_mirrored(h)
    assert not write_calls((await h.cycle()).api_calls)


SECONDARY_NAMES = {str(ix.name) for ix in SECONDARY}


async def test_a_first_import_builds_the_secondary_indexes_once_at_its_end(
        make_harness: MakeHarness, pooled: type[_CountingPool]) -> None:
    """Into an empty sync_state the import writes without sync_state's secondary indexes,
    and puts them back when it ends: when it succeeds, when it fails, and, after a process
    killed meanwhile, when the next one prepares the database."""
    h = make_harness({"contacts": N, "seed": 36, "page_size_cap": 100}, page_size=100,
                     import_min_contacts=0)
    assert SECONDARY_NAMES and _indexes(h.rt.db) >= SECONDARY_NAMES
    pooled.db = h.rt.db
    r = await h.cycle()
    assert r.status == "ok", r.notes
    assert len(pooled.indexes_seen) == 3
    assert all(not seen & SECONDARY_NAMES for seen in pooled.indexes_seen[1:])
    assert _indexes(h.rt.db) >= SECONDARY_NAMES

    _wipe(h)  # a first import again, which fails halfway
    pooled.batches, pooled.indexes_seen, pooled.fail_after = [], [], 1
    failed = await h.cycle()
    assert failed.status == "failed" and "the import failed here" in " ".join(failed.notes)
    assert not pooled.indexes_seen[-1] & SECONDARY_NAMES  # they were set aside
    assert _indexes(h.rt.db) >= SECONDARY_NAMES

    with h.rt.db.begin() as conn:  # as a process killed during an import leaves them
        for ix in SECONDARY:
            ix.drop(conn)
    build_runtime(h.rt.settings).close()
    assert _indexes(h.rt.db) >= SECONDARY_NAMES


async def test_the_indexes_stay_when_another_tenant_has_rows(
        make_harness: MakeHarness, pooled: type[_CountingPool]) -> None:
    h = make_harness({"contacts": N, "seed": 37, "page_size_cap": 100}, page_size=100,
                     import_min_contacts=0)
    with h.rt.db.begin() as conn:
        conn.execute(sync_state.insert().values(
            tenant="other", key="KH-1", status="synced", updated_at=sa.func.now()))
    pooled.db = h.rt.db
    assert (await h.cycle()).status == "ok"
    assert pooled.batches and all(seen >= SECONDARY_NAMES for seen in pooled.indexes_seen)


async def test_indexes_a_failed_import_left_aside_come_back_without_a_restart(
        make_harness: MakeHarness, pooled: type[_CountingPool],
        monkeypatch: pytest.MonkeyPatch) -> None:
    """The database goes away as a first import ends: the import's cycle fails, and so does
    putting sync_state's indexes back. A daemon does not restart: its next cycles succeed
    (the database is back) and are no first import; the indexes come back in this process,
    not only at its next start, else every status and error query of every tenant reads the
    whole table meanwhile (found by a code review)."""
    h = make_harness({"contacts": N, "seed": 38, "page_size_cap": 100}, page_size=100,
                     import_min_contacts=0)
    real = deferred_indexes.restore
    down = {"on": True}

    def restore(db: sa.Engine) -> None:
        if down["on"]:
            raise sa.exc.OperationalError("CREATE INDEX ...", {}, ConnectionError(
                "server closed the connection unexpectedly"))
        real(db)

    monkeypatch.setattr(deferred_indexes, "restore", restore)
    r = await h.cycle()
    assert r.status == "failed", r.notes  # everything written, the indexes not put back
    assert not _indexes(h.rt.db) & SECONDARY_NAMES
    down["on"] = False  # the database is back
    assert (await h.cycle()).status == "ok"
    assert _indexes(h.rt.db) >= SECONDARY_NAMES
