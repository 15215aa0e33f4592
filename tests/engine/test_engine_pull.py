"""Scenarios 1 and 2: a full pull reproduces every contact field for field, under every list
order and a page-size cap; a cycle with no changes makes zero write calls."""

from __future__ import annotations

import gc
import io
import json
import math
import threading
from collections.abc import Collection
from typing import Any, ClassVar

import pytest
import sqlalchemy as sa
from rich.console import Console
from sqlalchemy.engine import Connection

from sync.cycle import COUNTERS, CycleOptions
from sync.emulator.config import ORDERS
from sync.gcpolicy import CYCLE_GEN0_THRESHOLD
from sync.report import print_status
from sync.status import collect_status
from sync.store.local import LocalTable

from .conftest import MakeHarness
from .helpers import Harness, app_rows, assert_mirrored, first, write_calls

N = 60
CAP = 17


def _agent_extras(h: Harness) -> dict[str, str]:
    """Contacts in the awkward shapes agents produce, beside the seeded ones."""
    emu = h.emulator
    return {
        "two_phones": emu.agent_create(
            full_name="Trần Văn Tiến", ref_id="KH-X-1", ref_code="CX1",
            phones=["+84 393 187 319", ("02838123456", "office")],
            emails=[("TienTV@Example.VN", "office"), "tien.tran@gmail.com"],
            gender="male", birthday="29/02/1988", job_title="Trưởng phòng",
            address="12 Nguyễn Huệ, Quận 1, TP. Hồ Chí Minh", passport="079088001234",
            note="Gọi lại sau 17h\nKhách quan tâm gói VIP", tags=["Khách lẻ", "Đã gọi"],
            owner_email="Lan.Nguyen@cskh.example.vn",
            custom={"Màu sắc yêu thích": "Vàng", "Điểm": "90"},
            dynamic={"vWabCEBkqM": "120"}),
        "ui_made": emu.agent_create(full_name="Lê Thị Hồng Nhung", phones=["84912345678"],
                                    tags=["VIP"]),
        "bare": emu.agent_create(full_name="Phạm Quốc Bảo", ref_id="KH-X-2"),
    }


@pytest.mark.parametrize("order", ORDERS)
async def test_full_pull_reproduces_every_field(make_harness: MakeHarness, order: str) -> None:
    h = make_harness({"contacts": N, "page_size_cap": CAP, "order": order, "seed": 3})
    extras = _agent_extras(h)
    total = N + len(extras)
    crm = h.crm()
    assert len(crm) == total

    first = await h.cycle()
    assert first.status == "ok", first.notes
    assert not write_calls(first.api_calls)
    if order != "random":
        # the client follows the capped page_size it gets back, not the 100 it asked for
        assert first.api_calls["list"] == math.ceil(total / CAP)
        assert first.counts["pulled"] == total
        assert first.counts["created_local"] == total
    else:
        # a fresh random sample per page: one listing misses some; later cycles fill in
        for _ in range(40):
            if len(h.rows()) == total:
                break
            r = await h.cycle()
            assert r.status == "ok", r.notes
            assert not write_calls(r.api_calls)
            assert r.counts["deleted_local"] == r.counts["updated_local"] == 0
        assert len(h.rows()) == total

    assert_mirrored(h)

    states = h.states()
    ui_made = [k for k in crm if k.startswith("crm:")]
    assert len(ui_made) >= 2  # the seed makes ~10% in the CRM's interface, plus ours
    assert f"crm:{extras['ui_made']}" in ui_made
    for key in crm:
        expected = "read_only" if key.startswith("crm:") else "synced"
        assert states[key].status == expected, (key, states[key])
        assert states[key].public_id == crm[key]["public_id"]
    # the awkward contact, spelled out
    row = h.row("KH-X-1")
    assert row is not None
    assert (row["phone"], row["email"], row["owner_email"]) == (
        "0393187319", "tientv@example.vn", "lan.nguyen@cskh.example.vn")
    assert row["custom_fields"] == {"Màu sắc yêu thích": "Vàng", "Điểm": "90"}
    assert str(row["birthday"]) == "1988-02-29"
    assert row["note"] == "Gọi lại sau 17h\nKhách quan tâm gói VIP"
    ui = h.row(f"crm:{extras['ui_made']}")
    assert ui is not None and ui["phone"] == "0912345678" and ui["ref_code"] is None


@pytest.mark.parametrize("order", ["created", "updated_desc", "random"])
async def test_no_op_cycle_makes_zero_write_calls(make_harness: MakeHarness, order: str) -> None:
    h = make_harness({"contacts": N, "page_size_cap": CAP, "order": order, "seed": 5})
    for _ in range(40):
        r = await h.cycle()
        assert r.status == "ok", r.notes
        if len(h.rows()) == N:
            break
    assert len(h.rows()) == N
    rows_before = h.rows()
    writes_before = write_calls(h.emulator.stats())
    crm_before = h.emulator.contacts()

    for full in (False, True, False):
        r = await h.cycle(full=full)
        assert r.status == "ok", r.notes
        assert r.exit_code == 0
        assert not write_calls(r.api_calls), r.api_calls
        changed = {k: v for k, v in r.counts.items() if k not in ("pulled", "unchanged") and v}
        assert not changed, changed
        # A quick cycle skips every contact unparsed; a full one re-checks them all. (In a
        # random order some contacts are missed and fetched one by one by the full cycle:
        # not listed, they have no listing digest, so the next cycle parses them once.)
        if full:
            assert r.counts.get("unchanged", 0) == 0
        elif order != "random":
            assert r.counts.get("unchanged", 0) == r.counts["pulled"]

    assert write_calls(h.emulator.stats()) == writes_before
    assert h.rows() == rows_before
    assert h.emulator.contacts() == crm_before
    assert_mirrored(h)


async def test_local_edits_to_read_only_contacts_are_reported_never_sent(
        make_harness: MakeHarness) -> None:
    h = make_harness({"contacts": 30, "seed": 5})
    await h.cycle()
    key = sorted(k for k in h.rows() if k.startswith("crm:"))[0]
    crm_before = h.crm()[key]
    h.update(key, job_title="Sửa ở bảng", phone="0909 111 222")
    for _ in range(2):
        r = await h.cycle()
        assert r.status == "ok", r.notes
        assert not write_calls(r.api_calls), r.api_calls
        assert r.counts["read_only_edits"] == 1
    state = h.states()[key]
    assert state.status == "read_only"
    assert "job_title" in (state.last_error or "") and "phone" in (state.last_error or "")
    assert h.crm()[key] == crm_before


async def test_deleting_a_read_only_row_does_not_delete_the_crm_contact(
        make_harness: MakeHarness) -> None:
    h = make_harness({"contacts": 30, "seed": 5})
    await h.cycle()
    key = sorted(k for k in h.rows() if k.startswith("crm:"))[0]
    h.delete(key)
    r = await h.cycle()
    assert "delete" not in r.api_calls, r.api_calls
    assert key in h.crm()


async def test_a_bulk_import_into_postgresql_gives_the_planner_row_counts(
        make_harness: MakeHarness) -> None:
    """An import of 1,000 rows or more ANALYZEs the lookup columns as it goes (PostgreSQL
    would otherwise plan each chunk's lookups as if the tables were empty), and only those:
    the wide JSON columns' statistics would cost most of the ANALYZE and serve no plan."""
    h = make_harness({"contacts": 1200, "seed": 8}, page_size=500)
    if h.db.kind != "postgresql":
        pytest.skip("ANALYZE is PostgreSQL's; SQLite plans by its indexes")
    r = await h.cycle()
    assert r.status == "ok" and r.counts["created_local"] == 1200, r.notes
    with h.rt.db.connect() as conn:
        counted = dict(conn.exec_driver_sql(
            "SELECT relname, reltuples FROM pg_class WHERE relnamespace = "
            "current_schema()::regnamespace AND relname IN ('sync_state', 'contacts')").all())
        stats = set(conn.exec_driver_sql(
            "SELECT tablename, attname FROM pg_stats WHERE schemaname = current_schema() "
            "AND tablename IN ('sync_state', 'contacts')").all())
    assert counted == {"sync_state": 1200, "contacts": 1200}
    assert stats == {("sync_state", "tenant"), ("sync_state", "key"),
                     ("sync_state", "public_id"), ("sync_state", "status"),
                     ("contacts", "ref_id")}


class _CountingTable(LocalTable):
    """The local table, counting the engine's lookups of rows before a chunk is planned."""

    looked_up: ClassVar[list[int]]

    def load_fingerprinted(self, conn: Connection, keys: Collection[str],
                           image: Any) -> tuple[dict[str, Any], dict[str, str]]:
        self.looked_up.append(len(keys))
        return super().load_fingerprinted(conn, keys, image)


async def test_a_first_import_looks_nothing_up_before_its_chunks(
        make_harness: MakeHarness) -> None:
    """Empty bookkeeping and an empty table at the start: no chunk looks up states or rows
    that cannot exist. Once either side holds something, the lookups are back."""
    h = make_harness({"contacts": N, "seed": 9}, page_size=CAP)
    state_loads: list[int] = []
    real_load = h.rt.store.load

    def load(keys: Collection[str], **kw: Any) -> Any:
        state_loads.append(len(keys))
        return real_load(keys, **kw)

    h.rt.store.load = load  # type: ignore[method-assign]
    row_loads: list[int] = []
    _CountingTable.looked_up = row_loads
    h.rt.local = _CountingTable(h.rt.local.table, h.rt.local.key_column)
    r = await h.cycle()
    assert r.status == "ok" and r.counts["created_local"] == N, r.notes
    assert (state_loads, row_loads) == ([], [])
    assert_mirrored(h)

    key = sorted(k for k in h.rows() if not k.startswith("crm:"))[3]
    h.emulator.agent_update(h.crm()[key]["public_id"], note="Agent: sửa lúc 11h")
    r = await h.cycle()
    assert r.status == "ok" and r.counts["updated_local"] == 1, r.notes
    assert state_loads and row_loads
    assert h.row(key)["note"] == "Agent: sửa lúc 11h"  # type: ignore[index]


async def test_a_row_an_app_inserts_during_a_first_import_is_kept(
        make_harness: MakeHarness) -> None:
    """The import planned the contact with no row (it looked none up, nor re-read it), and
    its insert skips the key the app took meanwhile: the app's row stands, counted as changed
    during the cycle, not as created, and not as agreed. The app's values then reach the CRM
    (the app wrote last) and nothing is duplicated."""
    h = make_harness({"contacts": N, "seed": 10}, page_size=CAP)
    crm = h.crm()
    key = sorted(k for k in crm if not k.startswith("crm:"))[-1]
    app_row = {**app_rows("APP", 1)[0], "ref_id": key, "note": "App: thêm lúc 10h"}
    conv = h.rt.converter
    real = conv.remote_fields
    inserted: list[str] = []

    def remote_fields(contact: Any) -> Any:
        if not inserted:  # the first contact planned: the app's insert lands now
            h.insert(app_row)
            inserted.append(key)
        return real(contact)

    conv.remote_fields = remote_fields  # type: ignore[method-assign,assignment]
    r = await h.cycle()
    assert inserted and r.status == "ok", r.notes
    assert r.counts["skipped_changed_during_cycle"] == 1
    assert r.counts["created_local"] == N - 1
    assert h.row(key)["note"] == "App: thêm lúc 10h"  # type: ignore[index]
    assert h.states()[key].local_hash is None

    conv.remote_fields = real  # type: ignore[method-assign]
    await h.settle()
    assert first(h.crm()[key], "note") == "App: thêm lúc 10h"
    assert len(h.crm_by_ref(key)) == 1


def _checkpointing() -> bool:
    return any(t.name == "crm-sync-wal-checkpoint" for t in threading.enumerate())


async def test_a_cycle_runs_with_its_collector_threshold_and_checkpoint_thread(
        make_harness: MakeHarness) -> None:
    h = make_harness({"contacts": 30, "page_size_cap": 10})
    before = gc.get_threshold()
    during: list[tuple[int, bool]] = []
    result = await h.rt.cycle(CycleOptions(), progress=lambda done, total: during.append(
        (gc.get_threshold()[0], _checkpointing())))
    assert result.status == "ok" and len(h.rows()) == 30
    sqlite = h.rt.db.dialect.name == "sqlite"
    assert during and set(during) == {(max(before[0], CYCLE_GEN0_THRESHOLD), sqlite)}
    assert gc.get_threshold() == before and not _checkpointing()


async def test_json_columns_hold_sql_null_for_no_value(make_harness: MakeHarness) -> None:
    # as an app writes "no value": `WHERE tags IS NULL` finds them (before: the JSON text null)
    h = make_harness({"contacts": 30, "seed": 61})
    await h.cycle()
    rows = h.rows()
    empty = [k for k, r in rows.items() if not r["tags"]]
    assert empty, "the seed has contacts without tags"
    with h.rt.db.connect() as conn:
        nulls = conn.execute(sa.text("SELECT count(*) FROM contacts WHERE tags IS NULL")).scalar()
    assert nulls == len(empty)
    r = await h.cycle()
    assert r.counts["unchanged"] == 30 and not write_calls(r.api_calls), r.counts


async def test_a_crm_edit_next_to_an_apps_escaped_surrogate_is_written(
        make_harness: MakeHarness) -> None:
    """An app's JSON column may hold a lone surrogate, ASCII-escaped (a JS app that cut an
    emoji in half writes "\\ud83d": valid JSON). A CRM edit of another custom field writes
    the column with both: msgspec refuses the surrogate, and the cycle failed, every cycle,
    until the processor fell back to json.dumps for it as before (found by a code review)."""
    h = make_harness({"contacts": 30, "seed": 5})
    if h.db.kind != "sqlite":
        pytest.skip("PostgreSQL's jsonb refuses a lone surrogate in the app's own write")
    r = await h.cycle()
    assert r.status == "ok", r.notes
    key = sorted(k for k in h.rows() if k.startswith("crm:"))[0]  # read-only: nothing pushed
    pid = h.row(key)["crm_id"]  # type: ignore[index]
    h.execute("UPDATE contacts SET custom_fields = :v WHERE ref_id = :k", k=key,
              v='{"Ghi chú": "Hẹn gọi lại \\ud83d"}')
    h.emulator.agent_update(pid, custom={"Kênh": "Facebook"})
    r = await h.cycle()
    assert r.status in ("ok", "partial"), r.notes
    assert h.row(key)["custom_fields"] == {  # type: ignore[index]
        "Ghi chú": "Hẹn gọi lại \ud83d", "Kênh": "Facebook"}


async def test_status_shows_read_only_edits_and_the_last_runs_other_counts(
        make_harness: MakeHarness) -> None:
    # README: local edits to read-only contacts "are reported in `status`"; before, only the
    # cycle's own summary said so, and a duplicate refId in the CRM was nowhere in status
    h = make_harness({"contacts": 30, "seed": 5})
    await h.cycle()
    key = sorted(k for k in h.rows() if k.startswith("crm:"))[0]
    h.update(key, job_title="Sửa ở bảng")
    taken = sorted(k for k in h.rows() if not k.startswith("crm:"))[0]
    h.emulator.agent_create(full_name="Bản Sao Trùng Lặp", ref_id=taken, phones=["0911222333"])
    r = await h.cycle(full=True)
    assert r.counts["read_only_edits"] == 1 and r.counts["duplicates_in_crm"] == 1, r.counts

    status = collect_status(h.rt.settings)
    assert status["runs"][0]["details"] == {k: v for k, v in r.counts.items()
                                            if k not in COUNTERS and v}
    assert status["read_only_edits_count"] == 1
    assert [(e["key"], "job_title" in e["last_error"]) for e in status["read_only_edits"]] == [
        (key, True)]
    console = Console(file=io.StringIO(), width=200)
    print_status(console, status)
    text = console.file.getvalue()  # type: ignore[attr-defined]
    assert f"run {r.run_id} also: " in text
    assert "1 CRM contacts sharing a refId (reported, not touched)" in text
    assert "1 local edits to read-only contacts (not sent)" in text
    assert "read-only contacts with local edits not sent: 1" in text
    assert f"read-only {key}: local edits to job_title are not sent" in text, text
    json.dumps(status, default=str)  # `status --json` can write it


async def test_a_read_only_edit_undone_leaves_status(make_harness: MakeHarness) -> None:
    h = make_harness({"contacts": 30, "seed": 5})
    await h.cycle()
    key = sorted(k for k in h.rows() if k.startswith("crm:"))[0]
    old = h.row(key)["job_title"]  # type: ignore[index]
    h.update(key, job_title="Sửa ở bảng")
    r = await h.cycle()
    assert r.counts["read_only_edits"] == 1
    assert collect_status(h.rt.settings)["read_only_edits_count"] == 1
    h.update(key, job_title=old)  # the app undoes its edit: nothing is unsent any more
    for _ in range(2):
        r = await h.cycle()
        assert not r.counts.get("read_only_edits"), r.counts
    assert collect_status(h.rt.settings)["read_only_edits_count"] == 0
    assert h.states()[key].last_error is None
