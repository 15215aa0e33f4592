"""A custom field (more_infomation) an agent removes in the CRM, in the default mapping's JSON
column: the contact must go on syncing afterwards."""

from __future__ import annotations

from .conftest import MakeHarness


async def test_a_contact_whose_custom_field_an_agent_removed_keeps_syncing(
        make_harness: MakeHarness) -> None:
    """The removal is pulled, and the agreed base records the label as None. The row, read
    back, gives no such label at all; once the row's fingerprint matches, the plan is made
    from the base (label None) while the optimistic check re-reads the row (no label): the
    two differ as dicts, so every later change of the contact in the CRM is skipped as "rows
    changed by an app during the cycle (next cycle)", every cycle, exit 0, for good."""
    h = make_harness({"contacts": 0})
    pid = h.emulator.agent_create(full_name="Nguyễn Văn An", ref_id="KH-1", note="n1",
                                  custom={"Kênh": "Zalo", "Màu": "Đỏ"})
    assert (await h.cycle()).status == "ok"
    h.emulator.agent_update(pid, custom={"Kênh": None})  # an agent removes a custom field
    r = await h.cycle()
    assert r.status == "ok" and h.row("KH-1")["custom_fields"] == {"Màu": "Đỏ"}, r.counts

    h.emulator.agent_update(pid, note="n2")  # later, the agent edits the note
    for _ in range(3):
        r = await h.cycle()
        assert r.counts.get("skipped_changed_during_cycle", 0) == 0, r.counts
    assert h.row("KH-1")["note"] == "n2"
