"""Which CRM contact a row follows: the one it was agreed with, whatever else the CRM lists
under the same refId, and wherever in the listing each one comes."""

from __future__ import annotations

import httpx
import pytest

from sync.api.adapter import contact_from_wire

from .conftest import MakeHarness
from .helpers import Exchange, Hooked, Send, assert_mirrored, first


async def test_a_duplicate_listed_chunks_before_the_known_contact_is_not_followed(
        make_harness: MakeHarness) -> None:
    """An agent creates a second contact with a row's refId. Listed newest first, it comes
    chunks before the one the row was agreed with: a full cycle must keep the row on its
    contact (before: it followed the duplicate, the row took its name and phone, and the
    app's next edit, pushed by refId, overwrote the original customer with them)."""
    h = make_harness({"contacts": 700, "seed": 81, "page_size_cap": 100,
                      "order": "updated_desc"})
    await h.settle()
    original = h.emulator.contacts()[20]  # oldest first: listed ~680th, newest first
    key = original["ref_id"]
    pid = original["public_id"]
    h.emulator.agent_create(full_name="Bản Sao Trùng Lặp", ref_id=key, phones=["0911222333"])

    r = await h.cycle(full=True)
    assert r.status == "ok", r.notes
    assert r.counts["duplicates_in_crm"] == 1
    row = h.row(key)
    assert row is not None and row["crm_id"] == pid
    assert row["full_name"] == first(original, "full_name")
    assert h.states()[key].public_id == pid

    h.update(key, address="12 Lê Lợi, Huế")
    await h.settle(full=True)
    crm = contact_from_wire(h.emulator.contacts()[20])
    assert crm.public_id == pid
    assert crm.address == "12 Lê Lợi, Huế"
    assert crm.full_name == first(original, "full_name")
    dup = [c for c in h.emulator.find_by_ref_id(key) if c["public_id"] != pid]
    assert [first(c, "full_name") for c in dup] == ["Bản Sao Trùng Lặp"]  # untouched
    assert h.row(key)["address"] == "12 Lê Lợi, Huế"  # type: ignore[index]


async def test_a_row_follows_another_contact_with_its_refid_once_its_own_is_gone(
        make_harness: MakeHarness) -> None:
    """The contact a row was agreed with is deleted in the CRM and an agent creates a new one
    with the same refId: the row follows the new one (no deletion, no duplicate)."""
    h = make_harness({"contacts": 30, "seed": 82})
    await h.settle()
    original = h.emulator.contacts()[5]
    key, pid = original["ref_id"], original["public_id"]
    h.emulator.agent_delete(pid)
    new = h.emulator.agent_create(full_name="Khách Tạo Lại", ref_id=key, phones=["0911222444"])
    for full in (False, True):
        r = await h.cycle(full=full)
        assert r.status == "ok", r.notes
    row = h.row(key)
    assert row is not None and row["crm_id"] == new and row["full_name"] == "Khách Tạo Lại"
    assert_mirrored(h)


async def test_a_crm_made_contact_given_a_refid_leaves_no_stale_row(
        make_harness: MakeHarness) -> None:
    """Agents give contacts made in the CRM's interface (rows `crm:<id>`) refIds: each row is
    now the refId's, and the `crm:` rows go (before: they stayed for good beside the new ones,
    with the same crm_id, reported every full cycle as duplicates in the CRM). Not deletions:
    the guard lets them through, whatever their number."""
    h = make_harness({"contacts": 10, "seed": 83})  # max_delete_fraction 0.1
    pids = [h.emulator.agent_create(full_name=f"Khách Vãng Lai {i}", phones=[f"09113335{i:02d}"])
            for i in range(4)]
    await h.settle()
    assert all(h.row(f"crm:{pid}") is not None for pid in pids)
    for i, pid in enumerate(pids):
        h.emulator.agent_update(pid, ref_id=f"ERP-7{i}")
    results = await h.settle(full=True)
    assert all(r.status == "ok" for r in results), [r.notes for r in results]
    assert sum(r.counts.get("rekeyed", 0) for r in results) == 4
    rows = h.rows()
    for i, pid in enumerate(pids):
        assert f"crm:{pid}" not in rows
        assert [k for k, r in rows.items() if r["crm_id"] == pid] == [f"ERP-7{i}"]
    last = await h.cycle(full=True)
    assert last.counts.get("duplicates_in_crm", 0) == 0
    assert_mirrored(h)


@pytest.mark.parametrize("message", ["system_busy", "unknown_error", None])
async def test_a_failing_details_lookup_deletes_nothing(make_harness: MakeHarness,
                                                        message: str | None) -> None:
    """A full cycle looks up CRM-made contacts the listing did not show by their id; a -9999
    that is not a "no such contact" (the server busy, no message at all) confirms nothing: no
    row is deleted (before: any -9999 on details counted as gone)."""
    busy = {"on": False}

    async def hook(ex: Exchange, send: Send) -> httpx.Response:
        if busy["on"] and "/contacts/details/" in ex.path:
            return httpx.Response(200, json={"status_code": -9999, "message": message,
                                             "payload": None})
        if busy["on"] and ex.path.endswith("/contacts/list"):
            return httpx.Response(200, json={"status_code": 9999, "payload": {
                "items": [], "page_number": 1, "page_size": 100, "total_items": 0,
                "total_pages": 0, "has_next": False}})
        return await send()

    h = make_harness({"contacts": 10, "seed": 84}, transport=Hooked(hook),
                     max_delete_fraction=1.0)
    pids = [h.emulator.agent_create(full_name=f"Khách Vãng Lai {i}", phones=[f"091133355{i}"])
            for i in range(3)]
    await h.settle()
    before = set(h.rows())
    assert {f"crm:{p}" for p in pids} <= before
    busy["on"] = True
    r = await h.cycle(full=True)
    assert r.counts.get("deleted_local", 0) == 0
    assert set(h.rows()) == before
    assert r.exit_code == 3  # rows it could not settle


def _lagging_listing() -> tuple[Hooked, dict[str, bool]]:
    """A transport whose listing, while `lagging["on"]`, serves each page as it last served
    it before: a CRM whose list lags its writes."""
    stale: dict[str, bytes] = {}
    lagging = {"on": False}

    async def hook(ex: Exchange, send: Send) -> httpx.Response:
        if ex.path.endswith("/contacts/list"):
            page = ex.params.get("page", "1")
            if lagging["on"] and page in stale:
                return httpx.Response(200, content=stale[page],
                                      headers={"content-type": "application/json"})
            response = await send()
            stale[page] = response.content
            return response
        return await send()

    return Hooked(hook), lagging


async def test_a_contact_deleted_here_that_the_listing_still_shows_is_not_pulled_back(
        make_harness: MakeHarness) -> None:
    """The app deletes a row; the cycle deletes its contact in the CRM; the CRM's listing
    lags and shows it a while longer. It is taken for that lag, not for a new CRM contact
    (before: pulled back as a new row, there until the next full cycle)."""
    transport, lagging = _lagging_listing()
    h = make_harness({"contacts": 30, "seed": 85}, transport=transport)
    await h.settle()
    key = sorted(k for k in h.rows() if not k.startswith("crm:"))[3]
    pid = h.row(key)["crm_id"]  # type: ignore[index]
    h.delete(key)
    r = await h.cycle()
    assert r.counts["deleted_remote"] == 1 and h.emulator.find_by_ref_id(key) == []
    lagging["on"] = True  # the listing as it was before the delete, twice
    for full in (False, True):
        r = await h.cycle(full=full)
        assert r.status == "ok", r.notes
        assert h.row(key) is None
        assert r.counts.get("listed_after_delete") == 1
    lagging["on"] = False
    await h.settle(full=True)
    assert h.row(key) is None and pid not in {c["public_id"] for c in h.emulator.contacts()}
    assert_mirrored(h)


async def test_an_update_the_listing_lags_does_not_set_the_apps_edit_back(
        make_harness: MakeHarness) -> None:
    """The app edits a row, the cycle pushes it; the CRM's listing lags the update and serves
    the old copy for a while. Quick cycles take those bytes, which the push superseded, for
    that lag: the row keeps the app's edit and nothing is sent again (before: the old value
    was pulled over the edit, and came back when the listing caught up). An agent's edit of
    another field in the same cycle is merged the same way."""
    transport, lagging = _lagging_listing()
    h = make_harness({"contacts": 30, "seed": 86}, transport=transport)
    await h.settle()
    key, other = sorted(k for k in h.rows() if not k.startswith("crm:"))[3:5]
    h.update(key, job_title="Trưởng phòng kinh doanh")
    h.update(other, job_title="Kế toán trưởng")
    h.emulator.agent_update(h.crm()[other]["public_id"], address="12 Lê Lợi, Huế")
    r = await h.cycle()
    assert r.counts["updated_remote"] == 2 and r.counts["updated_local"] == 1, r.counts
    lagging["on"] = True  # the listing as it was before those updates
    for _ in range(2):
        r = await h.cycle()
        assert r.status == "ok", r.notes
        assert not r.counts.get("updated_local") and not r.counts.get("updated_remote")
        assert h.row(key)["job_title"] == "Trưởng phòng kinh doanh"  # type: ignore[index]
        assert h.row(other)["job_title"] == "Kế toán trưởng"  # type: ignore[index]
        assert h.row(other)["address"] == "12 Lê Lợi, Huế"  # type: ignore[index]
    lagging["on"] = False
    await h.settle()
    assert first(h.crm()[key], "job_title") == "Trưởng phòng kinh doanh"
    assert first(h.crm()[other], "job_title") == "Kế toán trưởng"
    assert_mirrored(h)


async def test_an_edit_undone_while_the_listing_lags_reaches_the_crm(
        make_harness: MakeHarness) -> None:
    """The app sets a job title, the cycle pushes it; while the listing still serves the copy
    from before that update, the app sets the title back. The next cycle pushes the row as it
    is, and the CRM must end with the app's value: the update is diffed against the version
    the CRM holds (the one sent), not against the superseded listed copy, else the field the
    app set back to the old listed value is left out of the body, the CRM keeps the first
    push's value, and once the listing catches up it is pulled over the app's edit."""
    transport, lagging = _lagging_listing()
    h = make_harness({"contacts": 30, "seed": 86}, transport=transport)
    await h.settle()
    key = sorted(k for k in h.rows() if not k.startswith("crm:"))[3]
    before = h.row(key)["job_title"]  # type: ignore[index]
    h.update(key, job_title="Trưởng phòng kinh doanh")
    r = await h.cycle()
    assert r.counts["updated_remote"] == 1, r.counts
    lagging["on"] = True  # the listing as it was before that update
    h.update(key, job_title=before)  # the app sets it back
    r = await h.cycle()
    assert r.status == "ok", r.notes
    assert r.counts["updated_remote"] == 1, r.counts  # the row's value is pushed
    lagging["on"] = False
    await h.settle()
    assert h.row(key)["job_title"] == before  # type: ignore[index]
    assert first(h.crm()[key], "job_title") == before
    assert_mirrored(h)


async def test_an_update_whose_answer_is_lost_while_the_listing_lags_keeps_the_apps_edits(
        make_harness: MakeHarness) -> None:
    """The app sets a job title; the cycle pushes it (the listing then lags that update). The
    app then sets the address; the next cycle's update reaches the CRM but its answer is lost
    (the CRM took it: as a process killed between the push and the save of its state, it
    stays `pushing`). While the listing still serves the copy from before the first update,
    no cycle may set the app's job title back, nor lose it once the listing catches up."""
    transport, lagging = _lagging_listing()
    lose_answer = {"on": False}

    async def hook(ex: Exchange, send: Send) -> httpx.Response:
        if lose_answer["on"] and ex.path.endswith("/contacts/update"):
            await send()  # the CRM takes the update, the answer never comes back
            return httpx.Response(500, text="<html>Internal Server Error</html>")
        return await transport.hook(ex, send)  # type: ignore[misc]

    h = make_harness({"contacts": 30, "seed": 86}, transport=Hooked(hook))
    await h.settle()
    key = sorted(k for k in h.rows() if not k.startswith("crm:"))[3]
    h.update(key, job_title="Trưởng phòng kinh doanh")
    assert (await h.cycle()).counts["updated_remote"] == 1
    lagging["on"] = True  # the listing as it was before that update
    h.update(key, address="12 Lê Lợi, Huế")
    lose_answer["on"] = True
    r = await h.cycle()
    assert r.status == "failed" and h.states()[key].status == "pushing", r.notes
    lose_answer["on"] = False
    for _ in range(2):
        await h.cycle()
        assert h.row(key)["job_title"] == "Trưởng phòng kinh doanh"  # type: ignore[index]
        assert h.row(key)["address"] == "12 Lê Lợi, Huế"  # type: ignore[index]
    lagging["on"] = False
    await h.settle()
    assert h.row(key)["job_title"] == "Trưởng phòng kinh doanh"  # type: ignore[index]
    assert first(h.crm()[key], "job_title") == "Trưởng phòng kinh doanh"
    assert_mirrored(h)


async def test_an_update_the_crm_applies_to_a_duplicate_is_not_taken_as_done(
        make_harness: MakeHarness) -> None:
    """An agent makes a second contact with a row's refId; update identifies a contact only
    by refId, and this server applies it to the NEWEST contact with that refId (the contract
    does not say which one). The app's edit then lands on the duplicate (whose publicId the
    update's summary names) while the contact the row follows keeps its old value. Before:
    the update was recorded as agreed, the next full cycle read the old value as the CRM's
    and set the row back: the app's edit lost from the table, the duplicate changed, exit 0."""
    from sync.emulator.model import summary
    from sync.emulator.parse import api_patch

    async def newest(ex: Exchange, send: Send) -> httpx.Response:
        if ex.path.endswith("/contacts/update"):
            emu = h.emulator
            with emu.lock:
                found = emu.store.find("ref_id", ex.body["refId"])
                if len(found) > 1:
                    patch = api_patch(ex.body, emu.layout_by_code)
                    patch.pop("ref_id", None)
                    emu.edit(found[-1], patch, by_agent=False)
                    return httpx.Response(200, json={"status_code": 9999,
                                                     "payload": summary(found[-1])})
        return await send()

    h = make_harness({"contacts": 20, "seed": 82}, transport=Hooked(newest))
    await h.settle()
    original = h.emulator.contacts()[5]
    key, pid = original["ref_id"], original["public_id"]
    h.emulator.agent_create(full_name="Bản Sao Trùng Lặp", ref_id=key, phones=["0911222333"])
    await h.settle(full=True)

    h.update(key, address="12 Lê Lợi, Huế")
    codes = [(await h.cycle()).exit_code for _ in range(2)]
    codes.append((await h.cycle(full=True)).exit_code)
    codes.append((await h.cycle(full=True)).exit_code)

    dup = [c for c in h.emulator.find_by_ref_id(key) if c["public_id"] != pid]
    assert h.row(key)["address"] == "12 Lê Lợi, Huế", (  # type: ignore[index]
        f"the app's edit was set back (exit codes {codes}); the duplicate got it: "
        f"{[first(c, 'address') for c in dup]}")
