"""Scenario 5: an agent's edit and an app's edit to different fields of one contact both
survive; the same field changed on both sides is a conflict, recorded with both values and
resolved per policy."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from sync.merge import Policy
from sync.runtime import build_runtime
from sync.settings import default_mapping_file

from .conftest import MakeHarness
from .helpers import Harness, assert_mirrored, first, write_calls

MAPPING_WITH_UPDATED_AT = (default_mapping_file().read_text(encoding="utf-8")
                           + "updated_at_column: updated_at\n")


async def _pulled(h: Harness) -> list[str]:
    r = await h.cycle()
    assert r.status == "ok", r.notes
    return sorted(k for k in h.rows() if not k.startswith("crm:"))


async def test_edits_to_different_fields_both_survive(make_harness: MakeHarness) -> None:
    h = make_harness({"contacts": 30, "seed": 21})
    keys = await _pulled(h)
    a, b = keys[3], keys[4]
    crm = h.crm()
    h.emulator.agent_update(crm[a]["public_id"], job_title="Trưởng phòng kinh doanh")
    h.emulator.agent_update(crm[b]["public_id"], tags=["Khách sỉ"], custom={"Kênh": "Zalo"})
    h.update(a, address="45 Nguyễn Huệ, Quận 1, TP. Hồ Chí Minh")
    h.update(b, phone="0987 654 321", note="Khách hẹn gọi lại chiều thứ Sáu")

    r = await h.cycle()
    assert r.status == "ok", r.notes
    assert r.counts["conflicts"] == 0 and h.conflicts() == []
    assert write_calls(r.api_calls) == {"update": 2}
    assert r.counts["updated_local"] == 2

    row_a, row_b, crm = h.row(a), h.row(b), h.crm()
    assert row_a is not None and row_b is not None
    assert row_a["job_title"] == "Trưởng phòng kinh doanh"  # the agent's, pulled
    assert first(crm[a], "address") == "45 Nguyễn Huệ, Quận 1, TP. Hồ Chí Minh"  # the app's
    assert first(crm[a], "job_title") == "Trưởng phòng kinh doanh"  # not undone by the push
    assert set(row_b["tags"]) == {"Khách sỉ"} and row_b["custom_fields"]["Kênh"] == "Zalo"
    assert first(crm[b], "note") == "Khách hẹn gọi lại chiều thứ Sáu"
    assert first(crm[b], "phone_number") == "0987654321"
    assert set(crm[b]["tags"]) == {"Khách sỉ"}
    await h.settle()
    assert_mirrored(h)


CASES = {
    # id: (policy, mapping, app's updated_at relative to now, winner, app also edits address)
    "remote_wins": ("remote_wins", None, None, "remote", True),
    "local_wins": ("local_wins", None, None, "local", True),
    "manual": ("manual", None, None, "manual", False),
    "manual-and-another-field-pushed": ("manual", None, None, "manual", True),
    "newest_wins-app-newer": ("newest_wins", MAPPING_WITH_UPDATED_AT, timedelta(hours=1),
                              "local", True),
    "newest_wins-agent-newer": ("newest_wins", MAPPING_WITH_UPDATED_AT, -timedelta(days=400),
                                "remote", True),
}
# "manual-and-another-field-pushed": the push of the other field must carry the CRM's own
# value of the conflicted field (not the base), and the state must stay `conflict`.


@pytest.mark.parametrize("case", list(CASES))
async def test_same_field_conflict_resolved_per_policy(make_harness: MakeHarness,
                                                       case: str) -> None:
    policy, mapping, app_age, winner, other_field = CASES[case]
    h = make_harness({"contacts": 20, "seed": 22}, mapping=mapping, conflict_policy=policy)
    keys = await _pulled(h)
    k, other = keys[2], keys[5]
    original = h.row(k)
    assert original is not None
    pid = original["crm_id"]
    h.emulator.agent_update(pid, note="Agent: khách đổi ý", job_title="Kỹ sư phần mềm")
    app_values: dict[str, object] = {"note": "App: khách hủy đơn"}
    if other_field:
        app_values["address"] = "99 Trần Hưng Đạo, Hà Nội"
    if app_age is not None:
        app_values["updated_at"] = datetime.now(UTC) + app_age
    h.update(k, **app_values)
    h.update(other, job_title="Nhân viên kho")  # an unrelated edit syncs regardless

    r = await h.cycle()
    assert r.counts["conflicts"] == 1
    [c] = h.conflicts()
    assert (c["key"], c["field"], c["policy"]) == (k, "note", policy)
    assert c["base_value"] == original["note"]
    assert (c["local_value"], c["remote_value"]) == ("App: khách hủy đơn", "Agent: khách đổi ý")
    assert c["resolution"] == winner

    row, crm = h.row(k), h.crm()[k]
    assert row is not None
    # the fields only one side changed merge in every case
    assert row["job_title"] == "Kỹ sư phần mềm"
    if other_field:
        assert first(crm, "address") == "99 Trần Hưng Đạo, Hà Nội"
    assert first(h.crm()[other], "job_title") == "Nhân viên kho"
    if winner == "manual":
        assert (row["note"], first(crm, "note")) == ("App: khách hủy đơn", "Agent: khách đổi ý")
        assert c["resolved_at"] is None
        assert h.states()[k].status == "conflict"
        assert (r.status, r.exit_code, r.open_conflicts) == ("partial", 3, 1)
        again = await h.cycle()  # still open, not recorded twice, nothing written
        assert again.exit_code == 3 and len(h.conflicts()) == 1
        assert not write_calls(again.api_calls)
        assert h.states()[k].status == "conflict"
        assert h.row(k)["note"] == "App: khách hủy đơn"  # type: ignore[index]
        assert first(h.crm()[k], "note") == "Agent: khách đổi ý"
        return
    assert c["resolved_at"] is not None
    expected = "App: khách hủy đơn" if winner == "local" else "Agent: khách đổi ý"
    assert (row["note"], first(crm, "note")) == (expected, expected)
    assert r.exit_code == 0 and r.open_conflicts == 0
    assert h.states()[k].status == "synced"
    await h.settle()
    assert len(h.conflicts()) == 1  # not recorded again by later cycles
    assert_mirrored(h)


@pytest.mark.parametrize("fixed_on", ["table", "crm", "policy"])
async def test_a_manual_conflict_closes_once_the_sides_agree(make_harness: MakeHarness,
                                                             fixed_on: str) -> None:
    """An open manual conflict is closed when the merge no longer finds it: one side took the
    other's value, or the operator chose a policy that decides; the exit code is 0 again."""
    h = make_harness({"contacts": 20, "seed": 22}, conflict_policy="manual")
    keys = await _pulled(h)
    k = keys[3]
    pid = h.row(k)["crm_id"]  # type: ignore[index]
    h.emulator.agent_update(pid, note="Agent: khách đổi ý")
    h.update(k, note="App: khách hủy đơn")
    r = await h.cycle()
    assert (r.exit_code, r.open_conflicts, h.states()[k].status) == (3, 1, "conflict")

    if fixed_on == "table":
        h.update(k, note="Agent: khách đổi ý")
    elif fixed_on == "crm":
        h.emulator.agent_update(pid, note="App: khách hủy đơn")
    else:  # the operator restarts it with another policy
        h.rt.close()
        h.rt = build_runtime(h.rt.settings.model_copy(update={"conflict_policy":
                                                            Policy.REMOTE_WINS}),
                             transport=h.rt.transport)
    r = await h.cycle()
    assert (r.exit_code, r.open_conflicts) == (0, 0), r
    [c] = h.conflicts()
    assert c["resolved_at"] is not None and h.states()[k].status == "synced"
    row = h.row(k)
    assert row is not None and row["note"] == first(h.crm()[k], "note")
    await h.settle()
    assert_mirrored(h)
