"""Scenario 6: deletions. CRM deletes arrive only with `full=True`, confirmed by a lookup, and
go to tombstones with the last values; local deletes delete in the CRM; a mass disappearance on
either side trips the guard: refused, exit code 1, nothing deleted."""

from __future__ import annotations

import httpx

from .conftest import MakeHarness
from .helpers import Exchange, Hooked, Send, assert_mirrored, write_calls

N = 50


def _failure(code: str) -> httpx.Response:
    return httpx.Response(200, json={"status_code": -9999, "instance_id": "x",
                                     "key_enabled": False, "payload": None, "message": code})


async def test_crm_deletes_arrive_only_with_full_and_a_confirming_lookup(
        make_harness: MakeHarness) -> None:
    transport = Hooked()
    h = make_harness({"contacts": N, "seed": 31, "page_size_cap": 20}, transport=transport)
    await h.cycle()
    crm = h.crm()
    with_ref = sorted(k for k in crm if not k.startswith("crm:"))[7]
    ui_made = sorted(k for k in crm if k.startswith("crm:"))[0]
    last = {k: h.row(k) for k in (with_ref, ui_made)}
    for k in (with_ref, ui_made):
        h.emulator.agent_delete(crm[k]["public_id"])

    r = await h.cycle()  # a plain cycle believes nothing
    assert r.status == "ok" and r.counts["deleted_local"] == 0
    assert with_ref in h.rows() and ui_made in h.rows()
    assert h.tombstones() == []

    transport.log.clear()
    r = await h.cycle(full=True)
    assert r.status == "ok", r.notes
    assert r.counts["deleted_local"] == 2
    assert not write_calls(r.api_calls)
    assert with_ref not in h.rows() and ui_made not in h.rows()
    assert with_ref not in h.states() and ui_made not in h.states()
    # confirmed one by one, after the listing: by ref_id, or by public_id without one
    lists = [i for i, e in enumerate(transport.log) if e.path.endswith("/contacts/list")]
    lookups = {(e.path.rsplit("/", 1)[-1], tuple(sorted(e.params.items())))
               for e in transport.log[max(lists):] if e.method == "GET" and e.status == 200}
    assert ("get", (("ref_id", with_ref),)) in lookups
    assert (crm[ui_made]["public_id"], ()) in lookups  # details/{public_id}
    stones = {t["key"]: t for t in h.tombstones()}
    assert set(stones) == {with_ref, ui_made}
    for k, row in last.items():
        assert row is not None
        t = stones[k]
        assert (t["side"], t["public_id"]) == ("remote", crm[k]["public_id"])
        assert t["values"]["full_name"] == row["full_name"]
        assert t["values"]["phone"] == row["phone"]
        assert t["values"]["crm_id"] == row["crm_id"]
    await h.settle(full=True)
    assert_mirrored(h)


async def test_eighty_percent_disappearance_in_the_crm_trips_the_guard(
        make_harness: MakeHarness) -> None:
    h = make_harness({"contacts": N, "seed": 32})
    await h.cycle()
    rows_before, states_before = h.rows(), h.states()
    for w in h.emulator.contacts()[: int(N * 0.8)]:
        h.emulator.agent_delete(w["public_id"])

    r = await h.cycle()
    assert r.status == "ok" and r.counts["deleted_local"] == 0
    for _ in range(2):  # and it stays refused: nothing leaks out cycle after cycle
        r = await h.cycle(full=True)
        assert r.status == "refused" and r.exit_code == 1
        assert any("MAX_DELETE_FRACTION" in n for n in r.notes), r.notes
        assert r.counts["deleted_local"] == 0
        assert h.rows() == rows_before
        assert h.states().keys() == states_before.keys()
        assert h.tombstones() == []
    assert not write_calls(h.emulator.stats())


async def test_local_deletes_reach_the_crm(make_harness: MakeHarness) -> None:
    h = make_harness({"contacts": N, "seed": 33})
    await h.cycle()
    keys = sorted(k for k in h.rows() if not k.startswith("crm:"))[10:13]
    ids = {k: h.row(k)["crm_id"] for k in keys}  # type: ignore[index]
    last = {k: h.states()[k].base for k in keys}
    h.delete(*keys)
    r = await h.cycle()
    assert r.status == "ok", r.notes
    assert write_calls(r.api_calls) == {"delete": 3}
    assert r.counts["deleted_remote"] == 3
    for k, pid in ids.items():
        assert h.emulator.contact(pid)["is_deleted"] is True  # type: ignore[index]
        assert h.crm_by_ref(k) == []
        assert k not in h.states()
    stones = {t["key"]: t for t in h.tombstones()}
    assert {k: (stones[k]["side"], stones[k]["public_id"]) for k in keys} == {
        k: ("local", ids[k]) for k in keys}
    for k in keys:  # the last agreed values, nothing lost
        assert stones[k]["values"]["full_name"] == last[k]["full_name"]  # type: ignore[index]
    await h.settle(full=True)
    assert_mirrored(h)


async def test_mass_local_deletion_trips_the_guard(make_harness: MakeHarness) -> None:
    h = make_harness({"contacts": N, "seed": 34})
    await h.cycle()
    crm_before, states_before = h.emulator.contacts(), h.states()
    h.execute("DELETE FROM contacts")
    for full in (False, True):
        r = await h.cycle(full=full)
        assert r.status == "refused" and r.exit_code == 1
        assert any("MAX_DELETE_FRACTION" in n for n in r.notes), r.notes
        assert not write_calls(r.api_calls)
        assert h.emulator.contacts() == crm_before
        assert h.states().keys() == states_before.keys()
        assert h.tombstones() == []
    # the app's deletion is not undone either (the operator decides); only pull-only
    # contacts made in the CRM's interface may come back to the mirror
    assert [k for k in h.rows() if not k.startswith("crm:")] == []


async def test_a_refused_confirming_lookup_deletes_nothing_and_the_cycle_goes_on(
        make_harness: MakeHarness) -> None:
    """A server that answers the confirming lookup of a deletion with a -9999 that does not
    say the contact is missing: that contact is reported and kept; the other deletion of the
    cycle is carried out."""
    refused: set[str] = set()

    async def refuse(ex: Exchange, send: Send) -> httpx.Response:
        if ex.path.endswith("/contacts/get") and ex.params.get("ref_id") in refused:
            return _failure("system_busy")
        return await send()

    h = make_harness({"contacts": N, "seed": 33}, transport=Hooked(refuse))
    await h.cycle()
    crm = h.crm()
    kept, deleted = sorted(k for k in crm if not k.startswith("crm:"))[3:5]
    for k in (kept, deleted):
        h.emulator.agent_delete(crm[k]["public_id"])
    refused.add(kept)

    r = await h.cycle(full=True)
    assert r.status == "partial", r.notes  # the refused lookup is a row in error
    assert r.counts["deleted_local"] == 1 and r.counts["errors"] == 1, r.counts
    assert kept in h.rows() and deleted not in h.rows()
    assert "lookup refused" in (h.states()[kept].last_error or "")

    refused.clear()
    r = await h.cycle(full=True)
    assert r.counts["deleted_local"] == 1 and kept not in h.rows()


async def test_a_confirming_lookup_out_of_retries_deletes_nothing(
        make_harness: MakeHarness) -> None:
    """The confirming lookup of a deletion keeps failing (HTTP 500 past the retries): that
    contact is reported and kept, and the cycle ends."""
    failing: set[str] = set()

    async def fail(ex: Exchange, send: Send) -> httpx.Response:
        if ex.path.endswith("/contacts/get") and ex.params.get("ref_id") in failing:
            return httpx.Response(500, text="<html>Bad Gateway</html>")
        return await send()

    h = make_harness({"contacts": N, "seed": 34}, transport=Hooked(fail))
    await h.cycle()
    crm = h.crm()
    key = sorted(k for k in crm if not k.startswith("crm:"))[2]
    h.emulator.agent_delete(crm[key]["public_id"])
    failing.add(key)

    r = await h.cycle(full=True)
    assert r.status == "partial", r.notes
    assert r.counts["deleted_local"] == 0 and r.counts["errors"] == 1, r.counts
    assert key in h.rows()
    assert "lookup failed" in (h.states()[key].last_error or "")


async def test_a_lookup_answering_a_not_found_code_confirms_the_deletion(
        make_harness: MakeHarness) -> None:
    """A server that answers `get` with -9999 contact_not_found for no match (as `details`
    may): the deletion an agent made is confirmed, not a row in error every full cycle."""

    async def not_found(ex: Exchange, send: Send) -> httpx.Response:
        response = await send()
        if ex.path.endswith("/contacts/get") and ex.payload in (None, []):
            return _failure("contact_not_found")
        return response

    h = make_harness({"contacts": N, "seed": 35}, transport=Hooked(not_found))
    await h.cycle()
    crm = h.crm()
    key = sorted(k for k in crm if not k.startswith("crm:"))[4]
    h.emulator.agent_delete(crm[key]["public_id"])
    r = await h.cycle(full=True)
    assert r.exit_code == 0 and r.counts["deleted_local"] == 1, (r.notes, r.counts)
    assert key not in h.rows()


async def test_a_delete_the_crm_refuses_without_deleting_is_kept_and_sent_again(
        make_harness: MakeHarness) -> None:
    """The CRM answers an app's delete with -9999 system_busy and deletes nothing: the row is
    in error and its bookkeeping kept (no tombstone), and the next cycle deletes it."""
    busy = True

    async def refuse(ex: Exchange, send: Send) -> httpx.Response:
        if busy and ex.method == "DELETE":
            return _failure("system_busy")
        return await send()

    transport = Hooked(refuse)
    h = make_harness({"contacts": N, "seed": 36}, transport=transport)
    await h.cycle()
    key = sorted(k for k in h.crm() if not k.startswith("crm:"))[2]
    h.delete(key)
    r = await h.cycle()
    assert r.exit_code == 3 and r.counts["deleted_remote"] == 0, (r.notes, r.counts)
    assert "delete refused: system_busy" in (h.states()[key].last_error or "")
    assert key in h.crm() and h.tombstones() == []

    busy = False
    r = await h.cycle()
    assert r.exit_code == 0 and r.counts["deleted_remote"] == 1, (r.notes, r.counts)
    assert key not in h.crm() and key not in h.states()
    assert len(transport.calls("/contacts/delete/")) == 2
    assert_mirrored(h)
