"""Scenario 10: bad local rows are row errors (state `error`, last_error naming the field) while
the other rows sync; the cycle completes with exit code 3; a fixed row then syncs."""

from __future__ import annotations

import asyncio
from pathlib import Path

import httpx
import pytest
import structlog

from sync.api.adapter import contact_from_wire
from sync.runtime import build_runtime
from sync.settings import default_mapping_file

from .conftest import RECHECK, MakeHarness
from .helpers import Exchange, Harness, Hooked, Send, app_rows, assert_mirrored, first, write_calls

# birthday kept as dd/MM/yyyy text, as a legacy app might
MAPPING_TEXT_BIRTHDAY = default_mapping_file().read_text(encoding="utf-8").replace(
    "{field: birthday, column: birthday}",
    "{field: birthday, column: birthday, type: text, date_format: '%d/%m/%Y'}")


def _error(h: Harness, key: str) -> str:
    state = h.states().get(key)
    assert state is not None, f"no state for {key}"
    assert state.status == "error", state
    return state.last_error or ""


async def test_bad_new_rows_are_row_errors_and_the_others_sync(
        make_harness: MakeHarness) -> None:
    h = make_harness({"contacts": 20, "seed": 71, "add_more_delay": 0.05})
    await h.cycle()
    good = app_rows("OK", 3)
    bad = app_rows("BAD", 4)
    bad[0]["full_name"] = ""
    bad[1]["full_name"] = None
    bad[2]["email"] = "khong-phai-email"
    bad[3]["custom_fields"] = ["not", "an", "object"]
    h.insert(*good, *bad)
    keys = h.rows().keys()
    assert {r["ref_id"] for r in bad} <= keys

    r = await h.cycle()
    assert r.status == "partial" and r.exit_code == 3, (r.status, r.notes)
    assert r.counts["errors"] == 4 and r.rows_in_error == 4
    assert write_calls(r.api_calls) == {"add_more": 1}
    assert r.counts["created_remote"] == 3  # the good ones only
    assert "full_name" in _error(h, "BAD-0001")
    assert "full_name" in _error(h, "BAD-0002")
    assert "email" in _error(h, "BAD-0003")
    assert "custom_fields" in _error(h, "BAD-0004")

    again = await h.cycle()  # still reported, never sent
    assert again.exit_code == 3 and again.rows_in_error == 4
    assert all(h.crm_by_ref(b["ref_id"]) == [] for b in bad)

    h.update("BAD-0001", full_name="Hoàng Văn Sửa")
    h.update("BAD-0002", full_name="Ngô Thị Đúng")
    h.update("BAD-0003", email="dung.roi@example.vn")
    h.update("BAD-0004", custom_fields={"Kênh": "Zalo"})
    await h.settle(pause=0.1)
    assert h.results[-1].exit_code == 0
    assert all(len(h.crm_by_ref(x["ref_id"])) == 1 for x in good + bad)
    assert_mirrored(h)


async def test_unreadable_birthday_in_a_text_column_is_a_row_error(
        make_harness: MakeHarness) -> None:
    h = make_harness({"contacts": 10, "add_more_delay": 0.05}, mapping=MAPPING_TEXT_BIRTHDAY)
    await h.cycle()
    good, bad = app_rows("TXT", 2)
    good["birthday"] = "17/05/1990"
    bad["birthday"] = "1990-05-17"  # not the mapping's dd/MM/yyyy
    h.insert(good, bad)
    r = await h.cycle()
    assert r.exit_code == 3 and r.counts["errors"] == 1
    assert "birthday" in _error(h, bad["ref_id"])
    await h.settle(pause=0.1, statuses=("partial",))
    [created] = h.crm_by_ref(good["ref_id"])
    assert first(created, "birthday") == "17/05/1990"
    assert h.crm_by_ref(bad["ref_id"]) == []


async def test_unreadable_date_in_a_sqlite_date_column_is_a_row_error(
        make_harness: MakeHarness, request: pytest.FixtureRequest) -> None:
    """SQLite stores whatever an app writes: a date column may hold '31/02/2000'."""
    h = make_harness({"contacts": 10, "add_more_delay": 0.05})
    if h.db.kind != "sqlite":
        pytest.skip("a PostgreSQL date column cannot hold an unreadable date")
    await h.cycle()
    h.insert(*app_rows("SQ", 2))
    h.execute("INSERT INTO contacts (ref_id, full_name, birthday) "
              "VALUES ('SQ-BAD', 'Bùi Thị Lỗi', '31/02/2000')")
    r = await h.cycle()
    assert r.status == "partial" and r.exit_code == 3, r.notes
    assert "birthday" in _error(h, "SQ-BAD")
    assert r.counts["created_remote"] == 2


@pytest.mark.parametrize("column", ["tags", "custom_fields"])
async def test_text_that_is_not_json_in_a_sqlite_json_column_is_a_row_error(
        make_harness: MakeHarness, column: str) -> None:
    """SQLite stores whatever text an app writes into a JSON column (`VIP, Khách lẻ`): that
    row is in error, naming the column, and the others sync (before: the read failed, and
    with it every cycle, naming nothing)."""
    h = make_harness({"contacts": 10, "add_more_delay": 0.05})
    if h.db.kind != "sqlite":
        pytest.skip("a PostgreSQL JSON column cannot hold text that is not JSON")
    await h.cycle()
    key, other = sorted(k for k in h.rows() if not k.startswith("crm:"))[:2]
    h.insert(*app_rows("JS", 2))
    h.execute(f"INSERT INTO contacts (ref_id, full_name, {column}) "
              "VALUES ('JS-BAD', 'Bùi Thị Lỗi', 'VIP, Khách lẻ')")
    h.execute(f"UPDATE contacts SET {column} = 'VIP, Khách lẻ' WHERE ref_id = :k", k=key)
    h.update(other, job_title="Thủ kho")
    r = await h.cycle()
    assert r.status == "partial" and r.exit_code == 3, r.notes
    assert column in _error(h, "JS-BAD") and column in _error(h, key)
    assert r.counts["created_remote"] == 2 and r.counts["updated_remote"] == 1


async def test_emptied_full_name_on_a_synced_contact_is_a_row_error(
        make_harness: MakeHarness, request: pytest.FixtureRequest) -> None:
    h = make_harness({"contacts": 20, "seed": 72})
    await h.cycle()
    keys = sorted(k for k in h.rows() if not k.startswith("crm:"))
    h.update(keys[0], full_name=None)
    h.update(keys[1], job_title="Thủ kho")  # another row's edit must still go out
    h.emulator.agent_update(h.crm()[keys[2]]["public_id"], note="Agent ghi chú")
    r = await h.cycle()
    assert r.status == "partial" and r.exit_code == 3, r.notes
    assert "full_name" in _error(h, keys[0])
    assert first(h.crm()[keys[1]], "job_title") == "Thủ kho"
    assert h.row(keys[2])["note"] == "Agent ghi chú"  # type: ignore[index]
    assert first(h.crm()[keys[0]], "full_name")  # the CRM keeps its name


async def test_invalid_email_on_a_synced_contact_names_the_field(
        make_harness: MakeHarness, request: pytest.FixtureRequest) -> None:
    h = make_harness({"contacts": 20, "seed": 73})
    await h.cycle()
    key = sorted(k for k in h.rows() if not k.startswith("crm:"))[0]
    h.update(key, email="khong-phai-email")
    r = await h.cycle()
    assert r.exit_code == 3
    assert "email" in _error(h, key)


MAPPING_INTEGER_POINTS = default_mapping_file().read_text(encoding="utf-8") + \
    "  - {custom: Điểm, column: diem, type: integer}\n"
MAPPING_TEXT_POINTS = default_mapping_file().read_text(encoding="utf-8") + \
    "  - {custom: Điểm, column: diem}\n"


@pytest.mark.parametrize("fixed_on", ["table", "crm"])
async def test_a_crm_value_its_column_cannot_hold_is_fixed_on_either_side(
        make_harness: MakeHarness, fixed_on: str) -> None:
    """An agent's `abc` in an integer custom field puts the contact in error; the row takes
    it out again once either side holds a value the column can: the CRM's is pulled, the
    table's is pushed over the bad one."""
    h = make_harness({"contacts": 10, "seed": 74}, mapping=MAPPING_INTEGER_POINTS)
    await h.cycle()
    key = sorted(k for k in h.rows() if not k.startswith("crm:"))[0]
    pid = h.row(key)["crm_id"]  # type: ignore[index]
    h.emulator.agent_update(pid, custom={"Điểm": "abc"})
    r = await h.cycle()
    assert r.exit_code == 3 and "diem" in _error(h, key)
    again = await h.cycle()  # the row unchanged: still in error, nothing sent
    assert again.exit_code == 3 and not write_calls(again.api_calls)

    if fixed_on == "table":
        h.update(key, diem=300)
    else:
        h.emulator.agent_update(pid, custom={"Điểm": "42"})
    results = await h.settle()
    assert results[-1].exit_code == 0 and h.states()[key].status == "synced"
    expected = 300 if fixed_on == "table" else 42
    points = {e.label: e.value for e in contact_from_wire(h.crm()[key]).custom}["Điểm"]
    assert (h.row(key)["diem"], points) == (expected, str(expected))  # type: ignore[index]
    last = await h.cycle()  # settled: nothing more to write either way
    assert last.exit_code == 0 and not write_calls(last.api_calls)


async def test_an_update_cut_short_under_a_mapping_its_value_no_longer_fits(
        make_harness: MakeHarness, tmp_path: Path) -> None:
    """An update fails after it was sent (status `pushing`, what was sent kept), and the
    mapping file then types that column as an integer, which the sent `abc` does not fit. The
    next cycle reads the sent version to see what landed: an unreadable field did not land
    (before, that read raised outside the contact's own error handling and failed every cycle
    for good)."""
    failing = {"on": False}

    async def refuse(ex: Exchange, send: Send) -> httpx.Response:
        if failing["on"] and ex.path.endswith("/contacts/update"):
            return httpx.Response(500, text="<html>Internal Server Error</html>")
        return await send()

    h = make_harness({"contacts": 10, "seed": 75}, mapping=MAPPING_TEXT_POINTS,
                     transport=Hooked(refuse))
    await h.settle()
    key = sorted(k for k in h.rows() if not k.startswith("crm:"))[0]
    h.update(key, diem="abc")
    failing["on"] = True
    assert (await h.cycle()).status == "failed"
    assert h.states()[key].status == "pushing"

    failing["on"] = False
    h.update(key, diem="5")
    h.rt.close()  # the operator migrates the column to INTEGER and types it in the mapping
    for sql in ("ALTER TABLE contacts RENAME COLUMN diem TO diem_text",
                "ALTER TABLE contacts ADD COLUMN diem INTEGER",
                "UPDATE contacts SET diem = CAST(diem_text AS INTEGER)",
                "ALTER TABLE contacts DROP COLUMN diem_text"):
        h.execute(sql)
    typed = tmp_path / "typed.yaml"
    typed.write_text(MAPPING_INTEGER_POINTS, encoding="utf-8")
    h.rt = build_runtime(h.rt.settings.model_copy(update={"mapping_file": typed}),
                         transport=h.rt.transport)
    results = await h.settle()
    assert results[-1].exit_code == 0, [r.notes for r in results]
    # Typed anew, the field has no agreed value: the CRM's is taken (mappings/README.md,
    # "Changing a mapping"), and the app's 5, written before, is kept as a conflict it won.
    points = {e.label: e.value for e in contact_from_wire(h.crm()[key]).custom}.get("Điểm")
    assert h.row(key)["diem"] == (None if points is None else int(points))  # type: ignore[index]
    assert h.states()[key].status == "synced"
    assert [(c["field"], c["local_value"], c["remote_value"], c["resolution"])
            for c in h.conflicts() if c["key"] == key][-1:] == [
        ("custom:Điểm", 5, None if points is None else int(points), "remote")]


async def test_a_label_a_column_claims_written_into_the_json_column_is_said(
        make_harness: MakeHarness) -> None:
    """The mapping puts the custom field Điểm in column `diem`; an app writes it into the
    JSON column `custom_fields` instead. It is ignored there (the column's value is the
    field's), and the cycle that reads the row as changed says so, naming the row and the
    label (before: silently); once the row is as agreed, nothing more is said."""
    h = make_harness({"contacts": 10, "seed": 76}, mapping=MAPPING_TEXT_POINTS)
    await h.settle()
    key = sorted(k for k in h.rows() if not k.startswith("crm:"))[0]
    before = {e.label: e.value for e in contact_from_wire(h.crm()[key]).custom}.get("Điểm")
    h.update(key, custom_fields={"Điểm": "7", "Kênh": "Zalo"})
    with structlog.testing.capture_logs() as logs:
        r = await h.cycle()
    assert r.counts["custom_labels_ignored"] == 1, r.counts
    said = [x for x in logs if x["event"] == "row.custom_labels_ignored"]
    assert [(x["key"], x["labels"], x["column"]) for x in said] == [
        (key, ["Điểm"], "custom_fields")]
    custom = {e.label: e.value for e in contact_from_wire(h.crm()[key]).custom}
    assert custom.get("Kênh") == "Zalo" and custom.get("Điểm") == before
    await h.settle()
    again = await h.cycle()  # the row is as agreed now: nothing more to say
    assert not again.counts.get("custom_labels_ignored")


@pytest.mark.parametrize("key", ["", " ", "TRAIL-1 ", " LEAD-1", "DBL  SP", "TAB\tKEY",
                                 "crm:abc"])
async def test_a_key_the_crm_would_not_show_as_it_is_is_a_row_error_never_sent(
        make_harness: MakeHarness, key: str) -> None:
    # The listing shows a refId trimmed and its spaces collapsed: a key in another form would
    # never be recognised as the contact it created, and each re-send would add another.
    h = make_harness({"contacts": 5, "add_more_delay": 0.05})
    await h.cycle()
    good, bad = app_rows("KEY", 2)
    bad["ref_id"] = key
    h.insert(good, bad)
    for _ in range(3):
        r = await h.cycle()
        assert r.exit_code == 3 and r.rows_in_error == 1, (r.status, r.notes)
        await asyncio.sleep(RECHECK + 0.1)  # a pending create would be due again
    assert "ref_id" in _error(h, key)
    assert len(h.crm()) == 6  # the five and the good row, once
    assert len(h.crm_by_ref(good["ref_id"])) == 1
    assert len(h.rows()) == 7  # nothing pulled back under another key

    h.delete(key)  # the app gives the row a key of its own
    h.insert({**bad, "ref_id": "KEY-FIXED"})
    await h.settle(pause=0.05)
    assert h.results[-1].exit_code == 0
    assert len(h.crm_by_ref("KEY-FIXED")) == 1 and len(h.crm()) == 7
    assert_mirrored(h)


async def test_a_mapping_without_the_name_still_pushes_updates(
        make_harness: MakeHarness) -> None:
    # An update sends the CRM's own name when the table keeps none (before: every edit of an
    # existing contact was the row error "full_name is empty").
    mapping = default_mapping_file().read_text(encoding="utf-8").replace(
        "  - {field: full_name, column: full_name}\n", "")
    h = make_harness({"contacts": 10, "seed": 72}, mapping=mapping)
    await h.cycle()
    key = sorted(k for k in h.crm() if not k.startswith("crm:"))[1]
    name = first(h.crm()[key], "full_name")
    h.update(key, address="9 Hàng Bài, Hà Nội")
    r = await h.cycle()
    assert r.exit_code == 0 and r.counts["updated_remote"] == 1, (r.notes, r.counts)
    assert first(h.crm()[key], "address") == "9 Hàng Bài, Hà Nội"
    assert first(h.crm()[key], "full_name") == name


async def test_an_update_the_crm_refuses_names_what_was_sent(make_harness: MakeHarness) -> None:
    # the API names no field ("request_invalid"): the row's error names the fields sent
    async def refuse(ex: Exchange, send: Send) -> httpx.Response:
        if ex.path.endswith("/contacts/update"):
            return httpx.Response(200, json={"status_code": -9999, "instance_id": "x",
                                             "key_enabled": False, "payload": None,
                                             "message": "request_invalid"})
        return await send()

    h = make_harness({"contacts": 10, "seed": 73}, transport=Hooked(refuse))
    await h.cycle()
    key = sorted(k for k in h.crm() if not k.startswith("crm:"))[1]
    h.update(key, address="9 Hàng Bài, Hà Nội", job_title="Kế toán trưởng")
    r = await h.cycle()
    assert r.exit_code == 3 and r.counts["errors"] == 1, (r.notes, r.counts)
    assert ("update refused: request_invalid (sent: address, job_title)"
            in (h.states()[key].last_error or "")), h.states()[key]


# the columns have names of their own: a row error must name them, not the CRM fields
MAPPING_OWN_COLUMNS = default_mapping_file().read_text(encoding="utf-8").replace(
    "{field: phone, column: phone}", "{field: phone, column: sdt}").replace(
    "{field: email, column: email}", "{field: email, column: thu}").replace(
    "{field: birthday, column: birthday}",
    "{field: birthday, column: ngay_sinh, type: text, date_format: dd/MM/yyyy}")
BAD_DATE = "column 'ngay_sinh': '31/02/1990' is not a date in the format 'dd/MM/yyyy'"
BAD_EMAIL = "column 'thu': 'binh.tran(at)example.vn' is not an email address"
BAD_PHONE = "column 'sdt': '12-34' is not a phone number"


async def test_a_new_rows_error_names_every_bad_column_with_what_it_holds(
        make_harness: MakeHarness) -> None:
    h = make_harness({"contacts": 10, "seed": 77, "add_more_delay": 0.05},
                     mapping=MAPPING_OWN_COLUMNS)
    await h.cycle()
    good = {"ref_id": "NH-OK", "full_name": "Lê Thị Tốt", "sdt": "0912 345 678",
            "thu": "tot@example.vn", "ngay_sinh": "17/05/1990"}
    bad = good | {"ref_id": "NH-BAD", "full_name": "Trần Văn Bình", "sdt": "12-34",
                  "thu": "binh.tran(at)example.vn", "ngay_sinh": "31/02/1990"}
    bad_key = good | {"ref_id": "NH-KEY ", "sdt": "12-34"}
    h.insert(good, bad, bad_key)
    r = await h.cycle()
    assert r.status == "partial" and r.exit_code == 3, (r.status, r.notes)
    assert r.counts["errors"] == 2 and r.rows_in_error == 2, r.counts  # one for each row
    assert r.counts["created_remote"] == 1
    assert _error(h, "NH-BAD") == f"{BAD_DATE}; {BAD_EMAIL}; {BAD_PHONE}"
    assert _error(h, "NH-KEY ") == (
        "ref_id 'NH-KEY ' cannot be a refId: the CRM trims it and collapses its spaces "
        f"(blank, leading, trailing or repeated spaces, or control characters); {BAD_PHONE}")

    h.update("NH-BAD", ngay_sinh="28/02/1990")  # what is left is said as it was
    r = await h.cycle()
    assert r.exit_code == 3 and r.counts["errors"] == 2, r.counts
    assert _error(h, "NH-BAD") == f"{BAD_EMAIL}; {BAD_PHONE}"

    h.update("NH-BAD", sdt="0912 345 679", thu="binh.tran@example.vn")
    h.delete("NH-KEY ")
    await h.settle(pause=0.1)
    assert h.results[-1].exit_code == 0
    [created] = h.crm_by_ref("NH-BAD")
    assert first(created, "birthday") == "28/02/1990"
    assert h.crm_by_ref("NH-KEY") == h.crm_by_ref("NH-KEY ") == []


async def test_a_synced_rows_error_names_every_bad_column_with_what_it_holds(
        make_harness: MakeHarness) -> None:
    h = make_harness({"contacts": 10, "seed": 78}, mapping=MAPPING_OWN_COLUMNS)
    await h.settle()
    key, other = sorted(k for k in h.rows() if not k.startswith("crm:"))[:2]
    h.update(key, ngay_sinh="31/02/1990", sdt="12-34", thu="binh.tran(at)example.vn")
    h.update(other, job_title="Thủ kho")  # another row's edit must still go out
    r = await h.cycle()
    assert r.status == "partial" and r.exit_code == 3, (r.status, r.notes)
    assert r.counts["errors"] == 1 and r.rows_in_error == 1, r.counts
    assert _error(h, key) == f"{BAD_DATE}; {BAD_EMAIL}; {BAD_PHONE}"
    assert first(h.crm()[other], "job_title") == "Thủ kho"

    h.update(key, ngay_sinh="28/02/1990")  # an update now, which the CRM would refuse
    r = await h.cycle()
    assert r.exit_code == 3 and r.counts["errors"] == 1, r.counts
    assert _error(h, key) == f"{BAD_EMAIL}; {BAD_PHONE}"
    assert first(h.crm()[key], "birthday") != "28/02/1990"  # nothing of the row sent
