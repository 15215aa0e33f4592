"""Scenario 3: local inserts, updates and deletes reach the CRM with zero duplicates, though
add-more is asynchronous, drops items, and the process may crash around the call."""

from __future__ import annotations

import asyncio
import itertools
from collections import Counter
from datetime import UTC, datetime, timedelta

import httpx
import pytest

from sync.api.adapter import contact_from_wire

from .conftest import MakeHarness
from .helpers import (
    Exchange,
    Harness,
    Hook,
    Hooked,
    Send,
    app_rows,
    assert_mirrored,
    expected_row,
    first,
    national_phone,
    write_calls,
)


def _one_each(h: Harness, refs: list[str]) -> None:
    counts = {r: len(h.crm_by_ref(r)) for r in refs}
    assert counts == dict.fromkeys(refs, 1), {r: n for r, n in counts.items() if n != 1}


def _resends_were_checked(log: list[Exchange]) -> None:
    """Every add-more item sent again was looked up (get?ref_id, answered null) in between."""
    sent_at: dict[str, int] = {}
    for i, ex in enumerate(log):
        if ex.path.endswith("/contacts/add-more"):
            for item in ex.body:
                ref = item["refId"]
                if ref in sent_at:
                    looked = [e for e in log[sent_at[ref] + 1:i]
                              if e.path.endswith("/contacts/get")
                              and e.params.get("ref_id") == ref and e.status == 200]
                    assert looked, f"{ref} re-sent without a lookup"
                    assert looked[-1].payload is None, f"{ref} re-sent though the CRM had it"
                sent_at[ref] = i


async def test_a_create_is_pending_from_its_add_more_not_from_the_cycle_start(
        make_harness: MakeHarness) -> None:
    """The recheck wait runs from the add-more call. Counted from the cycle's start, a cycle
    that took longer than the wait (an import, a slow listing) looked its creates up at once,
    before the CRM could show them, and sent them again: duplicates."""
    h = make_harness({"contacts": 5, "seed": 4, "add_more_delay": 0.2})
    await h.cycle()
    start = datetime(2026, 1, 1, tzinfo=UTC)
    ticks = itertools.count()
    h.rt.now = lambda: start + timedelta(minutes=next(ticks))  # every look at the clock: +1 min
    h.insert(*app_rows("LATE", 3))
    r = await h.cycle()
    assert r.counts["created_remote"] == 3
    since = {h.states()[n["ref_id"]].pending_since for n in app_rows("LATE", 3)}
    assert len(since) == 1 and since.pop() > r.started_at  # type: ignore[operator]


async def test_inserts_updates_deletes_reach_the_crm_once(make_harness: MakeHarness) -> None:
    # add-more takes longer than a cycle; the engine looks again only after the recheck wait
    h = make_harness({"contacts": 40, "seed": 11, "add_more_delay": 0.8,
                      "duplicate_on_resend": True}, pending_recheck_seconds=1.2)
    await h.cycle()
    synced = sorted(k for k in h.rows() if not k.startswith("crm:"))
    new = app_rows("APP", 20)
    h.insert(*new)
    upd = synced[:5]
    h.update(upd[0], job_title="Giám đốc kinh doanh")
    h.update(upd[1], phone="+84 988 777 666")
    h.update(upd[2], tags=["Khách sỉ", "VIP"], note="Đổi địa chỉ giao hàng")
    h.update(upd[3], custom_fields={"Kênh": "Website"})
    h.update(upd[4], email="Moi.Email@Example.VN", address="1 Tràng Tiền, Hà Nội")
    gone = synced[-3:]
    gone_ids = {k: h.row(k)["crm_id"] for k in gone}  # type: ignore[index]
    h.delete(*gone)

    r = await h.cycle()
    assert r.status == "ok", r.notes
    assert write_calls(r.api_calls) == {"add_more": 1, "update": 5, "delete": 3}
    assert (r.counts["created_remote"], r.counts["updated_remote"],
            r.counts["deleted_remote"]) == (20, 5, 3)
    states = h.states()
    assert {states[n["ref_id"]].status for n in new} == {"pending_create"}

    r = await h.cycle()  # the CRM has not shown them yet: nothing is sent again
    assert not write_calls(r.api_calls), r.api_calls
    assert r.counts["pending_create"] == 20

    await h.settle(pause=0.2)
    assert h.emulator.stats()["add_more"] == 1  # never re-sent
    _one_each(h, [n["ref_id"] for n in new])
    assert {s.status for k, s in h.states().items() if not k.startswith("crm:")} == {"synced"}
    assert_mirrored(h)
    # what the app wrote is what the CRM holds
    crm = h.crm()
    assert first(crm[upd[0]], "job_title") == "Giám đốc kinh doanh"
    assert national_phone(first(crm[upd[1]], "phone_number")) == "0988777666"
    assert set(crm[upd[2]]["tags"]) == {"Khách sỉ", "VIP"}
    assert expected_row(crm[upd[3]])["custom_fields"] == {"Kênh": "Website"}
    assert first(crm[upd[4]], "mail").lower() == "moi.email@example.vn"
    for k, public_id in gone_ids.items():
        assert h.crm_by_ref(k) == []
        assert h.emulator.contact(public_id)["is_deleted"] is True  # type: ignore[index]
    stones = {t["key"]: t for t in h.tombstones()}
    assert {k: stones[k]["side"] for k in gone} == dict.fromkeys(gone, "local")
    assert all(stones[k]["public_id"] == gone_ids[k] for k in gone)
    assert all(stones[k]["values"] for k in gone)  # the last agreed values are kept


async def test_dropped_creates_are_resent_only_after_a_lookup(make_harness: MakeHarness) -> None:
    # seed 1: every item is created within the engine's 5 attempts (each dropped at most 4
    # times); the give-up after 5 has a test of its own below
    transport = Hooked()
    h = make_harness({"contacts": 0, "seed": 1, "add_more_delay": 0.05,
                      "add_more_drop_rate": 0.5, "duplicate_on_resend": True},
                     pending_recheck_seconds=0.15, transport=transport)
    new = app_rows("DROP", 12)
    h.insert(*new)
    await h.settle(max_cycles=80, pause=0.1)
    refs = [n["ref_id"] for n in new]
    _one_each(h, refs)
    sends = Counter(i["refId"] for e in transport.calls("add-more") for i in e.body)
    assert max(sends.values()) >= 2  # some were dropped and sent again
    _resends_were_checked(transport.log)
    assert_mirrored(h)


async def test_create_given_up_after_max_attempts_is_reported(make_harness: MakeHarness) -> None:
    transport = Hooked()
    h = make_harness({"contacts": 0, "add_more_delay": 0.02, "add_more_drop_rate": 1.0},
                     pending_recheck_seconds=0.03, transport=transport)
    h.insert(*app_rows("LOST", 1))
    results = []
    for _ in range(60):
        results.append(await h.cycle())
        if any(r.counts["errors"] for r in results):
            break
        await asyncio.sleep(0.03)
    gave_up = results[-1]
    assert gave_up.counts["errors"] == 1
    assert len(transport.calls("add-more")) == 5  # MAX_CREATE_ATTEMPTS, each after a lookup
    _resends_were_checked(transport.log)
    assert h.crm_by_ref("LOST-0001") == []
    message = h.states()["LOST-0001"].last_error or ""
    assert "5 add-more attempts" in message
    assert gave_up.exit_code == 3, f"{gave_up.status}, exit {gave_up.exit_code}"
    for _ in range(2):  # and it stays reported, as it is: no new sends, no growing count
        await asyncio.sleep(0.05)
        later = await h.cycle()
        assert later.exit_code == 3 and later.rows_in_error == 1
    assert len(transport.calls("add-more")) == 5
    assert h.states()["LOST-0001"].last_error == message


async def test_add_more_answer_lost_then_no_duplicate(make_harness: MakeHarness) -> None:
    """The CRM queued the batch but the answer never arrived (connection cut): the cycle fails;
    the next cycles find the contacts instead of sending them again."""

    async def cut(ex: Exchange, send: Send) -> httpx.Response:
        response = await send()
        if ex.path.endswith("/contacts/add-more") and len(transport.calls("add-more")) == 1:
            raise httpx.ReadError("connection reset by peer")
        return response

    transport = Hooked(cut)
    h = make_harness({"contacts": 10, "add_more_delay": 0.3, "duplicate_on_resend": True},
                     pending_recheck_seconds=0.5, transport=transport)
    await h.cycle()
    new = app_rows("CUT", 8)
    h.insert(*new)
    r = await h.cycle()
    assert r.status == "failed" and r.exit_code == 1
    assert h.emulator.pending == 8  # the CRM did get them
    h.restart()
    await h.settle(pause=0.1)
    _one_each(h, [n["ref_id"] for n in new])
    assert h.emulator.stats()["add_more"] == 1
    assert_mirrored(h)


async def test_add_more_refused_with_500_then_sent_once(make_harness: MakeHarness) -> None:
    """The emulator answers the add-more with a 500 (faults change nothing): the creates stay
    pending, are looked up, and are sent again exactly once."""

    async def fault_on_add_more(ex: Exchange, send: Send) -> httpx.Response:
        if ex.path.endswith("/contacts/add-more") and len(transport.calls("add-more")) == 1:
            h.emulator.configure(error_500_rate=1.0)
            try:
                return await send()
            finally:
                h.emulator.configure(error_500_rate=0.0)
        return await send()

    transport = Hooked(fault_on_add_more)
    h = make_harness({"contacts": 10, "add_more_delay": 0.05, "duplicate_on_resend": True},
                     pending_recheck_seconds=0.2, transport=transport)
    await h.cycle()
    new = app_rows("F500", 8)
    h.insert(*new)
    r = await h.cycle()
    assert r.status == "failed", r
    assert transport.calls("add-more")[0].status == 500
    assert {h.states()[n["ref_id"]].status for n in new} == {"pending_create"}
    await h.settle(pause=0.1)
    _one_each(h, [n["ref_id"] for n in new])
    assert h.emulator.stats()["add_more"] == 2
    _resends_were_checked(transport.log)
    assert_mirrored(h)


@pytest.mark.parametrize("when", ["before_send", "after_send"])
async def test_crash_around_add_more_never_duplicates(make_harness: MakeHarness,
                                                      when: str) -> None:
    """The process dies (the cycle is cancelled) with the add-more in flight, before or after
    the CRM received it; a new process then runs cycles until converged."""
    in_flight = asyncio.Event()

    async def hang(ex: Exchange, send: Send) -> httpx.Response:
        if ex.path.endswith("/contacts/add-more") and len(transport.calls("add-more")) == 1:
            if when == "after_send":
                await send()
            in_flight.set()
            await asyncio.Event().wait()  # never answers: the process dies here
        return await send()

    transport = Hooked(hang)
    h = make_harness({"contacts": 10, "add_more_delay": 0.3, "duplicate_on_resend": True},
                     pending_recheck_seconds=0.5, transport=transport)
    await h.cycle()
    new = app_rows("CRASH", 8)
    h.insert(*new)
    task = asyncio.create_task(h.cycle())
    await asyncio.wait_for(in_flight.wait(), 10)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert {h.states()[n["ref_id"]].status for n in new} == {"pending_create"}
    assert h.emulator.pending == (8 if when == "after_send" else 0)
    h.restart()
    await h.settle(pause=0.1)
    _one_each(h, [n["ref_id"] for n in new])
    assert h.emulator.stats()["add_more"] == 1  # received once: sent once, or sent again
    assert len(transport.calls("add-more")) == (1 if when == "after_send" else 2)
    _resends_were_checked(transport.log)
    assert_mirrored(h)


async def test_row_deleted_while_create_pending_stays_deleted(make_harness: MakeHarness) -> None:
    h = make_harness({"contacts": 20, "add_more_delay": 0.5, "duplicate_on_resend": True},
                     pending_recheck_seconds=2.0, max_delete_fraction=0.5)
    await h.cycle()
    h.insert(*app_rows("GONE", 2))
    r = await h.cycle()
    assert write_calls(r.api_calls) == {"add_more": 1}
    h.delete("GONE-0001")  # the app changes its mind before the CRM shows the contact
    await h.cycle()
    await asyncio.sleep(0.6)  # the queued create lands in the CRM
    await h.settle(pause=0.1)
    assert h.row("GONE-0001") is None, "the row the app deleted came back"
    assert h.crm_by_ref("GONE-0001") == [], "the deletion never reached the CRM"
    assert len(h.crm_by_ref("GONE-0002")) == 1
    assert_mirrored(h)


async def test_pushed_update_keeps_second_phone_email_and_unmapped_data(
        make_harness: MakeHarness) -> None:
    """Scenario 4: update replaces whole lists, so what the mapping does not cover (the second
    phone and email with their kinds, custom fields, dynamic attributes) is sent back."""
    h = make_harness({"contacts": 5})
    pid = h.emulator.agent_create(
        full_name="Trần Văn Tiến", ref_id="KH-2P", ref_code="C2P",
        phones=[("0395187319", "home"), ("+84 28 3812 3456", "office")],
        emails=[("tientv@example.vn", "personal"), ("tien.office@congty.vn", "office")],
        custom={"Màu sắc yêu thích": "Vàng", "Điểm": "90"},
        dynamic={"vWabCEBkqM": "120", "hTqLmZpXcR": "Vàng"}, tags=["VIP"])
    await h.cycle()
    h.update("KH-2P", phone="0912 000 111", email="Tien.Moi@Example.VN")
    r = await h.cycle()
    assert write_calls(r.api_calls) == {"update": 1}, r.api_calls
    crm = h.emulator.contact(pid)
    assert crm is not None
    a = {x["field_code"]: x["value"] for x in crm["attribute_structure"]}
    phones = [(national_phone(v["display_value"]), v["data_type"]) for v in a["phone_number"]]
    assert phones == [("0912000111", "home"), ("02838123456", "office")]
    emails = [(v["display_value"].lower(), v["data_type"]) for v in a["mail"]]
    assert emails == [("tien.moi@example.vn", "personal"), ("tien.office@congty.vn", "office")]
    assert {v["value_type"]: v["display_value"] for v in a["more_infomation"]} == {
        "Màu sắc yêu thích": "Vàng", "Điểm": "90"}
    assert [v["display_value"] for v in a["vWabCEBkqM"]] == ["120"]
    assert [v["display_value"] for v in a["hTqLmZpXcR"]] == ["Vàng"]
    assert crm["tags"] == ["VIP"] and crm["ref_code"] == "C2P"

    # the app edits something else later: the second phone still survives that push too
    h.update("KH-2P", custom_fields={"Màu sắc yêu thích": "Đỏ", "Điểm": "90"})
    r = await h.cycle()
    assert write_calls(r.api_calls) == {"update": 1}
    crm = h.emulator.contact(pid)
    assert crm is not None
    a = {x["field_code"]: x["value"] for x in crm["attribute_structure"]}
    assert [(national_phone(v["display_value"]), v["data_type"]) for v in a["phone_number"]] \
        == [("0912000111", "home"), ("02838123456", "office")]
    assert len(a["mail"]) == 2 and "vWabCEBkqM" in a
    assert (await h.cycle()).api_calls.keys() <= {"auth", "list"}  # and then: nothing to do
    assert_mirrored(h)



async def test_crm_id_is_written_when_a_create_is_confirmed(make_harness: MakeHarness) -> None:
    h = make_harness({"contacts": 3, "add_more_delay": 0.05}, pending_recheck_seconds=0.1)
    h.insert(*app_rows("CID", 1))
    await h.cycle()
    for _ in range(40):
        await asyncio.sleep(0.05)
        await h.cycle()
        if h.states()["CID-0001"].status == "synced":
            break
    state = h.states()["CID-0001"]
    assert state.status == "synced" and state.public_id
    row = h.row("CID-0001")
    assert row is not None and row["crm_id"] == state.public_id


def deleted_contact(ref_id: str, created: datetime) -> Hook:
    """A hook that answers the lookup of `ref_id` with a deleted contact created then."""

    async def hook(ex: Exchange, send: Send) -> httpx.Response:
        response = await send()
        if ex.path.endswith("/contacts/get") and ex.params.get("ref_id") == ref_id:
            data = response.json()
            data["payload"] = {"public_id": "deadbeef0001", "ref_id": ref_id,
                               "is_deleted": True,
                               "created_date": int(created.timestamp() * 1000),
                               "attribute_structure": [
                                   {"field_code": "full_name", "field_type": "single_text",
                                    "value": [{"display_value": "Người đã xoá"}]}]}
            return httpx.Response(200, json=data, request=response.request)
        return response

    return hook


async def test_an_older_deleted_contact_does_not_confirm_a_pending_create(
        make_harness: MakeHarness) -> None:
    """The lookup before a re-send finds a contact with the refId, deleted, and created long
    before the add-more (an earlier contact of that refId): the create is not taken as
    landed; it is sent again, and stays pending."""
    transport = Hooked(deleted_contact("GONE-0001", datetime(2024, 5, 1, tzinfo=UTC)))
    h = make_harness({"contacts": 0, "add_more_delay": 0.02, "add_more_drop_rate": 1.0},
                     pending_recheck_seconds=0.03, transport=transport)
    h.insert(*app_rows("GONE", 1))
    for _ in range(40):
        await h.cycle()
        if len(transport.calls("add-more")) >= 2:
            break
        await asyncio.sleep(0.03)
    assert len(transport.calls("contacts/get")) >= 1
    assert len(transport.calls("add-more")) == 2  # sent again after the lookup
    state = h.states()["GONE-0001"]
    assert state.status == "pending_create" and state.public_id is None
    _resends_were_checked(transport.log)


async def test_a_create_deleted_in_the_crm_before_it_was_seen_is_not_sent_again(
        make_harness: MakeHarness) -> None:
    """The lookup finds the contact our add-more created, already deleted by an agent: it is
    bound, not sent again (which would undo the agent's deletion), and a full cycle then
    deletes the row, as for any CRM deletion."""
    transport = Hooked(deleted_contact("GONE-0001", datetime.now(UTC) + timedelta(seconds=1)))
    h = make_harness({"contacts": 0, "add_more_delay": 0.02, "add_more_drop_rate": 1.0},
                     pending_recheck_seconds=0.03, max_delete_fraction=1.0,
                     transport=transport)
    h.insert(*app_rows("GONE", 1))
    for _ in range(20):
        await h.cycle()
        if h.states()["GONE-0001"].status != "pending_create":
            break
        await asyncio.sleep(0.03)
    assert len(transport.calls("add-more")) == 1
    assert h.states()["GONE-0001"].public_id == "deadbeef0001"

    r = await h.cycle(full=True)
    assert r.status == "ok", r.notes
    assert r.counts["deleted_local"] == 1 and h.rows() == {}
    assert len(transport.calls("add-more")) == 1
    assert [t["key"] for t in h.tombstones()] == ["GONE-0001"]


async def test_a_create_deleted_in_the_crm_before_any_lookup_could_see_it_comes_back_once(
        make_harness: MakeHarness) -> None:
    """Known limit (docs/reliability.md, notes and limits): on a CRM whose `get?ref_id=` answers
    live contacts only (the emulator, as the contract allows), a contact our add-more created
    and an agent deleted before any cycle listed or looked it up leaves no trace crm-sync can
    read: the lookup answers null, as for an add-more item the CRM dropped (contract 20), and
    the create is sent again. The agent's deletion is undone, once: one contact, bound, no
    duplicate, both sides alike (the kill -9 scenario's agent deletes only contacts crm-sync
    has seen, for this reason)."""
    transport = Hooked()
    h = make_harness({"contacts": 0, "add_more_delay": 0.02}, pending_recheck_seconds=0.03,
                     transport=transport)
    h.insert(*app_rows("GONE", 1))
    await h.cycle()
    assert h.states()["GONE-0001"].status == "pending_create"
    h.emulator.flush_pending()
    (first_copy,) = h.crm_by_ref("GONE-0001")
    h.emulator.agent_delete(first_copy["public_id"])  # before crm-sync ever saw it
    await asyncio.sleep(0.05)
    await h.settle(full=True)
    assert len(transport.calls("add-more")) == 2  # sent again after a lookup answered null
    _resends_were_checked(transport.log)
    (again,) = h.crm_by_ref("GONE-0001")
    assert again["public_id"] != first_copy["public_id"]
    assert h.states()["GONE-0001"].public_id == again["public_id"]
    assert h.row("GONE-0001") is not None
    assert_mirrored(h)


async def test_updates_the_crm_took_are_recorded_when_another_fails(
        make_harness: MakeHarness) -> None:
    """One update of a cycle keeps failing (HTTP 500 past the retries): the cycle fails, but
    only after the other updates ran to their end, and those are recorded as agreed."""
    failing: set[str] = set()

    async def refuse(ex: Exchange, send: Send) -> httpx.Response:
        if ex.path.endswith("/contacts/update") and (ex.body or {}).get("refId") in failing:
            return httpx.Response(500, text="<html>Internal Server Error</html>")
        return await send()

    h = make_harness({"contacts": 20, "seed": 7}, transport=Hooked(refuse))
    await h.settle()
    keys = sorted(k for k in h.rows() if not k.startswith("crm:"))[:4]
    for i, k in enumerate(keys):
        h.update(k, job_title=f"Chức danh {i}")
    failing.add(keys[0])

    r = await h.cycle()
    assert r.status == "failed", r.notes
    states = h.states()
    assert states[keys[0]].status == "pushing"  # unknown: the next cycle sees to it
    for i, k in enumerate(keys[1:], start=1):
        assert states[k].status == "synced", (k, states[k].status)
        assert states[k].base is not None and states[k].base["job_title"] == f"Chức danh {i}"
        assert first(h.crm()[k], "job_title") == f"Chức danh {i}"

    failing.clear()
    await h.settle()
    assert first(h.crm()[keys[0]], "job_title") == "Chức danh 0"
    assert_mirrored(h)


async def test_a_create_given_up_is_kept_and_tried_again_once_the_app_changes_it(
        make_harness: MakeHarness) -> None:
    """A row whose create the CRM never showed was never in the CRM: a full cycle must not
    take it for a contact deleted there (it deleted the app's row), and it stays in error,
    sending nothing, until the app changes it; then it is looked up and sent again."""
    transport = Hooked()
    h = make_harness({"contacts": 0, "add_more_delay": 0.02, "add_more_drop_rate": 1.0},
                     pending_recheck_seconds=0.03, transport=transport)
    h.insert(*app_rows("LOST", 1))
    for _ in range(60):
        await h.cycle()
        if h.states()["LOST-0001"].status == "error":
            break
        await asyncio.sleep(0.03)
    assert h.states()["LOST-0001"].status == "error"
    sends = len(transport.calls("add-more"))
    for full in (True, False, True):
        await asyncio.sleep(0.05)
        result = await h.cycle(full=full)
        assert result.counts["deleted_local"] == 0 and result.exit_code == 3
        assert h.row("LOST-0001") is not None and h.tombstones() == []
        assert h.states()["LOST-0001"].status == "error"
    assert len(transport.calls("add-more")) == sends

    h.emulator.configure(add_more_drop_rate=0.0)
    h.update("LOST-0001", full_name="Nguyễn Văn Sửa")
    results = await h.settle(full=True)
    assert results[-1].exit_code == 0
    assert len(transport.calls("add-more")) == sends + 1
    _resends_were_checked(transport.log)
    _one_each(h, ["LOST-0001"])
    assert h.states()["LOST-0001"].status == "synced"
    assert_mirrored(h)


async def test_an_agent_edit_made_while_a_push_is_on_its_way_is_kept(
        make_harness: MakeHarness) -> None:
    """The app edits one field; while crm-sync's update of that contact is on its way, an
    agent edits another. The update carries only what changed (and what the API requires), so
    neither edit is lost: different fields changed on each side merge."""
    agent_note = "Sửa bởi nhân viên: gọi lại thứ Hai"

    async def hook(ex: Exchange, send: Send) -> httpx.Response:
        if ex.path.endswith("/contacts/update") and not edited:
            edited.append(h.crm_by_ref(ex.body["refId"])[0]["public_id"])
            h.emulator.agent_update(edited[0], note=agent_note)
        return await send()

    edited: list[str] = []
    h = make_harness({"contacts": 6, "seed": 3}, transport=Hooked(hook))
    await h.cycle()
    key = next(k for k in h.rows() if not k.startswith("crm:"))
    h.update(key, job_title="Trưởng phòng kinh doanh")
    await h.settle()
    assert edited
    crm = contact_from_wire(h.crm_by_ref(key)[0])
    assert (crm.job_title, crm.note) == ("Trưởng phòng kinh doanh", agent_note)
    row = h.row(key)
    assert row is not None and (row["job_title"], row["note"]) == (crm.job_title, agent_note)
    assert_mirrored(h)


async def test_an_earlier_send_shown_late_does_not_undo_the_apps_edit(
        make_harness: MakeHarness) -> None:
    """The CRM shows an add-more item later than the recheck: the lookup misses it, the app's
    row (edited meanwhile) is sent again, that send is dropped, and the first one lands with
    the values from before the edit. The app's edit must reach the CRM, not be undone."""
    h, sends = await _edited_then_sent_again(make_harness, "Khách hẹn gọi lại sáng thứ Ba")
    assert h.crm_by_ref("LATE-0001") == []
    assert sends[1].body[0].get("note") == "Khách hẹn gọi lại sáng thứ Ba"
    await asyncio.sleep(0.7)  # the first send lands, without the note
    await h.settle()
    _note_on_both_sides(h, "LATE-0001", "Khách hẹn gọi lại sáng thứ Ba")


async def _edited_then_sent_again(make_harness: MakeHarness, note: str
                                  ) -> tuple[Harness, list[Exchange]]:
    """Row LATE-0001 sent without a note (the CRM shows it 0.6 s later, after the recheck),
    then given `note` and sent again, and that second send dropped."""
    h, sends = _dropping_harness(make_harness, 2, delay=0.6)
    (new,) = app_rows("LATE", 1)
    h.insert({**new, "note": None})
    await h.cycle()  # the first send
    h.update("LATE-0001", note=note)
    await _until_sent_twice(h, sends)  # the lookup misses it: the edited row is sent again
    return h, sends


def _note_on_both_sides(h: Harness, key: str, note: str) -> None:
    (crm,) = h.crm_by_ref(key)
    assert contact_from_wire(crm).note == note
    row = h.row(key)
    assert row is not None and row["note"] == note
    assert_mirrored(h)


def _dropping_harness(make_harness: MakeHarness, nth: int, *, delay: float
                      ) -> tuple[Harness, list[Exchange]]:
    """An empty CRM showing add-more items `delay` s late, whose `nth` add-more is dropped;
    the add-more calls as they were made."""
    sends: list[Exchange] = []
    ref: list[Harness] = []
    h = make_harness({"contacts": 0, "add_more_delay": delay}, pending_recheck_seconds=0.05,
                     transport=Hooked(_dropping(nth, sends, ref)))
    ref.append(h)
    return h, sends


def _dropping(nth: int, sends: list[Exchange], h: list[Harness]) -> Hook:
    """A hook that has the emulator drop the `nth` add-more (1-based) it forwards."""
    async def hook(ex: Exchange, send: Send) -> httpx.Response:
        if not ex.path.endswith("/contacts/add-more"):
            return await send()
        sends.append(ex)
        h[0].emulator.configure(add_more_drop_rate=1.0 if len(sends) == nth else 0.0)
        try:
            return await send()
        finally:
            h[0].emulator.configure(add_more_drop_rate=0.0)
    return hook


async def _until_sent_twice(h: Harness, sends: list[Exchange]) -> None:
    for _ in range(20):
        await asyncio.sleep(0.06)
        await h.cycle()
        if len(sends) == 2:
            return
    raise AssertionError(f"{len(sends)} add-more calls")


async def test_an_app_edit_after_the_last_send_survives_an_earlier_send_shown_late(
        make_harness: MakeHarness) -> None:
    """Send 1 (no note) lands late; send 2 (note B) is dropped; the app then writes note C:
    C must reach the CRM, not be undone by send 1's empty note."""
    h, _ = await _edited_then_sent_again(make_harness, "B: sửa lần 1")
    h.update("LATE-0001", note="C: sửa lần 2")
    await asyncio.sleep(0.7)  # send 1 lands
    await h.settle()
    _note_on_both_sides(h, "LATE-0001", "C: sửa lần 2")


async def test_an_agent_edit_of_a_create_sent_twice_is_pulled(make_harness: MakeHarness) -> None:
    """Send 1 is dropped, send 2 lands, and an agent edits the new contact before crm-sync
    first lists it: the agent's value is no earlier send of ours, so it is pulled."""
    h, sends = _dropping_harness(make_harness, 1, delay=0.1)
    (new,) = app_rows("AGT", 1)
    h.insert({**new, "job_title": "Kế toán"})
    await h.cycle()
    await _until_sent_twice(h, sends)
    await asyncio.sleep(0.3)  # send 2 lands
    (crm,) = h.crm_by_ref("AGT-0001")
    h.emulator.agent_update(crm["public_id"], job_title="Giám đốc chi nhánh")
    await h.settle()
    (crm,) = h.crm_by_ref("AGT-0001")
    assert contact_from_wire(crm).job_title == "Giám đốc chi nhánh"
    row = h.row("AGT-0001")
    assert row is not None and row["job_title"] == "Giám đốc chi nhánh"
    assert_mirrored(h)


def refuse_add_more_with(word: str) -> Hooked:
    """A server that validates add-more and refuses the whole batch (-9999, HTTP 200) when any
    contact in it has `word` in its name."""
    async def hook(ex: Exchange, send: Send) -> httpx.Response:
        if ex.path.endswith("/contacts/add-more") and any(
                word in (c.get("fullName") or "") for c in ex.body or []):
            return httpx.Response(200, json={"status_code": -9999,
                                             "message": "request_invalid", "payload": None})
        return await send()
    return Hooked(hook)


async def test_a_contact_the_crm_refuses_holds_back_none_of_its_batch(
        make_harness: MakeHarness) -> None:
    """A -9999 refuses the whole add-more batch for one contact in it: the others are created
    all the same (the batch is halved down to the refused one), the refused row is in error
    with the server's reason, and the cycle completes (before: the whole batch stayed pending,
    was sent again together after every wait, and every cycle failed)."""
    transport = refuse_add_more_with("REJECT")
    h = make_harness({"contacts": 0, "add_more_delay": 0.02}, transport=transport,
                     batch_size=8)
    rows = app_rows("NEW", 8)
    rows[5]["full_name"] = "Khách REJECT"
    h.insert(*rows)
    r = await h.cycle()
    assert r.status == "partial" and r.exit_code == 3, r.notes
    assert r.counts["created_remote"] == 7 and r.counts["errors"] == 1
    assert len(transport.calls("add-more")) <= 7  # 1 + 2 halvings per level down to one
    bad = h.states()["NEW-0006"]
    assert bad.status == "error" and "refused" in (bad.last_error or "")
    assert "request_invalid" in (bad.last_error or "")
    results = await h.settle(statuses=("ok", "partial"))  # settled: nothing sent again
    assert {k for k in h.crm()} == {r["ref_id"] for r in rows} - {"NEW-0006"}
    assert results[-1].exit_code == 3 and results[-1].rows_in_error == 1

    h.update("NEW-0006", full_name="Khách Đã Sửa")  # the app fixes the row: it goes out
    await h.settle()
    assert first(h.crm()["NEW-0006"], "full_name") == "Khách Đã Sửa"
    assert h.states()["NEW-0006"].status == "synced"


async def test_a_batch_refused_contact_by_contact_waits_for_the_next_cycle(
        make_harness: MakeHarness) -> None:
    """Every contact of a batch refused alone is more likely the server's doing: those rows
    are new rows again, the batches after it wait for the next cycle (no calls burnt), and
    once the server takes them every row is created. Rows refused before go last, so they
    hold back no new one."""
    refusing = {"on": True}

    async def hook(ex: Exchange, send: Send) -> httpx.Response:
        if refusing["on"] and ex.path.endswith("/contacts/add-more"):
            return httpx.Response(200, json={"status_code": -9999,
                                             "message": "request_invalid", "payload": None})
        return await send()

    transport = Hooked(hook)
    h = make_harness({"contacts": 0, "add_more_delay": 0.02}, transport=transport,
                     batch_size=4)
    rows = app_rows("NEW", 8)
    h.insert(*rows)
    r = await h.cycle()
    assert r.status == "partial" and r.exit_code == 3, r.notes
    assert "request_invalid" in " ".join(r.notes)
    assert len(transport.calls("add-more")) == 7  # the first batch only: 1 + 2 + 4
    first_four = {x["ref_id"] for x in rows[:4]}
    states = h.states()
    assert set(states) == first_four  # the others were not sent
    assert all(s.status == "error" and s.base is None for s in states.values())

    r = await h.cycle()  # the four never sent go first now
    sent = {c["refId"] for ex in transport.calls("add-more")[7:] for c in ex.body}
    assert sent == {x["ref_id"] for x in rows[4:]}

    refusing["on"] = False
    await h.settle()
    assert set(h.crm()) == {x["ref_id"] for x in rows}
    assert all(s.status == "synced" for s in h.states().values())


async def test_refused_rows_that_fill_a_batch_hold_back_no_later_create(
        make_harness: MakeHarness) -> None:
    """Two rows the CRM refuses, first in key order, fill a batch: the rows after them are
    created all the same, and the refused ones are sent again at most MAX_CREATE_ATTEMPTS
    times, then wait for the app to change them (code review: before, every cycle stopped
    at that batch, and a refused row was sent again every cycle, for good)."""
    transport = refuse_add_more_with("REJECT")
    h = make_harness({"contacts": 0, "add_more_delay": 0.02}, transport=transport,
                     batch_size=2)
    bad = app_rows("AAA", 2)
    for row in bad:
        row["full_name"] = "Khách REJECT"
    good = app_rows("ZZZ", 3)
    h.insert(*bad, *good)
    for _ in range(8):
        await h.cycle()
    assert set(h.crm()) == {g["ref_id"] for g in good}
    sends = Counter(c["refId"] for ex in transport.calls("add-more") for c in ex.body
                    if len(ex.body) == 1)  # the sends of each alone
    assert all(1 <= sends[row["ref_id"]] <= 5 for row in bad), sends  # MAX_CREATE_ATTEMPTS
    before = len(transport.calls("add-more"))
    r = await h.cycle()  # given up: nothing sent until the app changes them
    assert len(transport.calls("add-more")) == before and r.exit_code == 3
    assert all(h.states()[row["ref_id"]].status == "error" for row in bad)


async def test_a_lone_refused_row_is_sent_again_at_most_max_create_attempts_times(
        make_harness: MakeHarness) -> None:
    """One new row, refused alone every time: it may be the server's doing, so it is sent
    again next cycle, but MAX_CREATE_ATTEMPTS times in all, then waits for the app to change
    it (code review: it was sent every cycle, for good)."""
    transport = refuse_add_more_with("REJECT")
    h = make_harness({"contacts": 0}, transport=transport, batch_size=8)
    rows = app_rows("NEW", 1)
    rows[0]["full_name"] = "Khách REJECT"
    h.insert(*rows)
    for _ in range(8):
        assert (await h.cycle()).exit_code == 3
    assert len(transport.calls("add-more")) == 5
    h.update("NEW-0001", full_name="Khách Đã Sửa")
    await h.settle()
    assert first(h.crm()["NEW-0001"], "full_name") == "Khách Đã Sửa"


@pytest.mark.parametrize(("field", "value", "knobs"), [
    # the documented update body names no job title: a server may ignore it (read back: get)
    ("job_title", "Kỹ sư trưởng", {"update_ignores": ("job_title",)}),
    # one that ignores a field its summary shows
    ("address", "12 Lê Lợi, Huế", {"update_ignores": ("address",)}),
    # one that takes "" for "leave as it is": a cleared field
    ("address", None, {"update_ignores_empty": True}),
])
async def test_an_update_the_crm_does_not_take_is_an_error_never_set_back(
        make_harness: MakeHarness, field: str, value: str | None,
        knobs: dict[str, object]) -> None:
    # before: recorded as agreed, the CRM's old value, listed next, read as an agent's edit
    # and pulled over the row's: the app's edit lost, every cycle exiting 0
    h = make_harness({"contacts": 20, "seed": 12, **knobs})
    await h.cycle()
    key = next(k for k, r in sorted(h.rows().items())
               if not k.startswith("crm:") and r[field] and r["phone"])
    crm_before = first(h.crm()[key], field)
    h.update(key, **{field: value, "phone": "0912 000 111"})  # the phone is taken
    for _ in range(3):
        r = await h.cycle()
        assert r.counts["errors"] == 1, (r.counts, r.notes)
        assert h.row(key)[field] == value  # type: ignore[index]
        state = h.states()[key]
        assert state.status == "error"
        assert f"{field} not taken" in (state.last_error or ""), state.last_error
        assert first(h.crm()[key], field) == crm_before
    assert national_phone(first(h.crm()[key], "phone_number")) == "0912000111"
    assert h.row(key)["phone"] == "0912 000 111"  # type: ignore[index]
    assert not h.conflicts()


async def test_a_job_title_update_is_read_back_once_and_agreed(make_harness: MakeHarness) -> None:
    h = make_harness({"contacts": 20, "seed": 12}, concurrency=1)
    await h.cycle()
    keys = [k for k in sorted(h.rows()) if not k.startswith("crm:")][:3]
    for i, key in enumerate(keys):
        h.update(key, job_title=f"Kỹ sư trưởng {i}")
    r = await h.cycle()
    assert r.counts["errors"] == 0 and r.counts["updated_remote"] == 3, r.counts
    # the first read-back showed the server takes a job title: not read back again
    assert r.api_calls.get("update") == 3 and r.api_calls.get("get") == 1, r.api_calls
    assert [first(h.crm()[k], "job_title") for k in keys] == [
        f"Kỹ sư trưởng {i}" for i in range(3)]
    key = keys[0]
    h.update(key, address="12 Lê Lợi, Huế")  # a field update's summary shows: no read-back
    r = await h.cycle()
    assert r.api_calls.get("update") == 1 and not r.api_calls.get("get"), r.api_calls
    r = await h.cycle()
    assert not write_calls(r.api_calls) and not r.counts["errors"], (r.api_calls, r.counts)
    assert_mirrored(h)


@pytest.mark.parametrize("column", ["gender", "ref_code", "birthday"])
async def test_a_clear_no_update_can_send_is_counted_and_the_crms_value_kept(
        make_harness: MakeHarness, column: str) -> None:
    # an update leaves a field it is not sent as it is, and only four texts are sent as "":
    # such a clear cannot reach the CRM. It is counted and logged (before: set back without a
    # word), no call is made for it alone, and the CRM's value comes back: an app writing a
    # row without it (a row that never had it) converges, as before
    h = make_harness({"contacts": 20, "seed": 12}, concurrency=1)
    await h.cycle()
    key = next(k for k, r in sorted(h.rows().items()) if not k.startswith("crm:") and r[column])
    kept = h.row(key)[column]  # type: ignore[index]
    h.update(key, **{column: None})
    r = await h.cycle()
    assert r.counts["clears_not_sent"] == 1 and not r.counts["errors"], r.counts
    assert not write_calls(r.api_calls) and not r.counts["updated_remote"], r.api_calls
    r = await h.cycle()
    assert h.row(key)[column] == kept  # type: ignore[index]
    h.update(key, **{column: None, "address": "12 Lê Lợi, Huế"})  # with another change: sent
    r = await h.cycle()
    assert r.api_calls.get("update") == 1 and r.counts["clears_not_sent"] == 1, r.api_calls
    assert r.counts["updated_remote"] == 1, r.counts
    assert not r.counts["errors"], r.counts
    await h.settle()
    assert first(h.crm()[key], "address") == "12 Lê Lợi, Huế"
    assert h.row(key)[column] == kept  # type: ignore[index]
    assert_mirrored(h)


async def test_a_cleared_job_title_is_read_back_even_after_a_value_was_taken(
        make_harness: MakeHarness) -> None:
    # a server that takes "" for "leave it": a job title set earlier in the cycle showed the
    # server takes job titles, but a clear is read back every time (it was recorded as agreed,
    # and the next listing set the old title back over the row)
    h = make_harness({"contacts": 30, "seed": 12, "update_ignores_empty": True}, concurrency=1)
    await h.cycle()
    keys = [k for k, r in sorted(h.rows().items()) if not k.startswith("crm:") and r["job_title"]]
    set_, cleared = keys[0:6:2], keys[1:6:2]
    for k in set_:
        h.update(k, job_title="Kỹ sư trưởng")
    for k in cleared:
        h.update(k, job_title=None)
    for _ in range(2):
        r = await h.cycle()
        assert r.counts["errors"] == len(cleared), r.counts
    assert [h.row(k)["job_title"] for k in cleared] == [None] * len(cleared)  # type: ignore[index]
    assert all("job_title not taken" in (h.states()[k].last_error or "") for k in cleared)
    assert [first(h.crm()[k], "job_title") for k in set_] == ["Kỹ sư trưởng"] * len(set_)


async def test_a_row_in_error_after_an_update_keeps_the_lagging_listing_read_as_sent(
        make_harness: MakeHarness) -> None:
    # an address update taken, then a listing that lags it, then a job title the CRM does not
    # take: the row is in error, and the lagging listing was read as an agent's edit, setting
    # the address the CRM did take back to the old one
    from .test_engine_identity import _lagging_listing

    transport, lagging = _lagging_listing()
    h = make_harness({"contacts": 30, "seed": 86, "update_ignores": ("job_title",)},
                     transport=transport)
    await h.settle()
    key = sorted(k for k in h.rows() if not k.startswith("crm:"))[3]
    h.update(key, address="12 Lê Lợi, Huế")
    r = await h.cycle()
    assert r.counts["updated_remote"] == 1 and not r.counts["errors"], r.counts
    lagging["on"] = True  # the listing as it was before that update
    h.update(key, job_title="Kỹ sư trưởng")
    r = await h.cycle()
    assert r.counts["errors"] == 1 and h.states()[key].status == "error", r.counts
    for _ in range(2):
        r = await h.cycle()
        assert h.row(key)["address"] == "12 Lê Lợi, Huế", r.counts  # type: ignore[index]
        assert h.row(key)["job_title"] == "Kỹ sư trưởng"  # type: ignore[index]
    assert first(h.crm()[key], "address") == "12 Lê Lợi, Huế"


async def test_a_refid_reused_minutes_after_its_contact_was_deleted_is_not_bound_to_it(
        make_harness: MakeHarness) -> None:
    """An app deletes a row (crm-sync deletes its contact in the CRM), then inserts a row
    with the same refId again a little later; the CRM drops that add-more item (the contract
    allows it) and its `get?ref_id=` answers the earlier, deleted contact (is_deleted true).
    That contact was created by crm-sync minutes before and deleted by crm-sync itself: it is
    not the re-create. The row must keep the app's new values and be sent again; before, the
    row was overwritten with the deleted contact's old values, bound to it, and the next full
    cycle deleted the row as "deleted in the CRM" (the app's insert never reached the CRM)."""
    gone: dict[str, str] = {}

    async def hook(ex: Exchange, send: Send) -> httpx.Response:
        response = await send()
        ref = ex.params.get("ref_id")
        if ex.path.endswith("/contacts/get") and ref in gone and response.json()["payload"] is None:
            # a server whose get also answers a deleted contact: the earlier one
            data = response.json()
            data["payload"] = await _details(gone[ref])
            return httpx.Response(200, json=data, request=response.request)
        return response

    async def _details(public_id: str) -> dict:
        async with httpx.AsyncClient(base_url=h.server.url) as c:
            token = (await c.get("/api/auth", params={"apiKey": "demo-key"})).json()
            r = await c.get(f"/api/contacts/details/{public_id}", headers={
                "Authorization": "Bearer " + token["payload"]["access_token"]})
            return r.json()["payload"]

    transport = Hooked(hook)
    h = make_harness({"contacts": 5, "seed": 91}, transport=transport)
    row = app_rows("REUSE", 1)[0]
    h.insert(row)
    await h.settle()
    first_id = h.states()["REUSE-0001"].public_id
    assert first_id and len(h.crm_by_ref("REUSE-0001")) == 1

    h.delete("REUSE-0001")
    await h.settle()
    assert h.crm_by_ref("REUSE-0001") == []
    gone["REUSE-0001"] = first_id

    h.emulator.config.add_more_drop_rate = 1.0  # the re-create is dropped
    h.insert({**row, "full_name": "Khách mới cùng mã", "phone": "0933111222"})
    await h.cycle()
    sends = len(transport.calls("add-more"))
    await asyncio.sleep(0.6)  # past pending_recheck_seconds: the lookup before a re-send
    await h.cycle()
    await h.cycle(full=True)

    assert h.row("REUSE-0001") is not None, "the app's re-inserted row was deleted"
    assert h.row("REUSE-0001")["full_name"] == "Khách mới cùng mã"
    assert h.states()["REUSE-0001"].public_id != first_id
    assert len(transport.calls("add-more")) > sends  # sent again, after the lookup
