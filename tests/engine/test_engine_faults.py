"""Scenario 7: with 500s, 429s, malformed answers and tokens that expire every half second,
cycles still converge: both directions, creates, updates and deletes, no duplicate."""

from __future__ import annotations

import pytest

from .conftest import MakeHarness
from .helpers import Hooked, app_rows, assert_mirrored, first

FAULTS = {"error_500_rate": 0.1, "rate_429_rate": 0.05, "malformed_rate": 0.02,
          "retry_after": 0.01, "token_ttl": 0.5}


@pytest.mark.slow
@pytest.mark.parametrize("refused", [401, 200])  # 200: -9999 token_expired in the body
async def test_cycles_converge_under_faults_and_short_tokens(make_harness: MakeHarness,
                                                             refused: int) -> None:
    transport = Hooked()
    h = make_harness({"contacts": 120, "seed": 41, "page_size_cap": 20, "add_more_delay": 0.05,
                      "duplicate_on_resend": True, "token_refused_status": refused, **FAULTS},
                     max_retries=12, backoff_max=0.05, pending_recheck_seconds=0.1,
                     max_delete_fraction=0.2, batch_size=7, transport=transport)
    await h.settle(full=True, max_cycles=30)
    assert len(h.rows()) == 120
    expected_count = 120

    for rnd in range(3):
        keys = sorted(k for k in h.rows() if not k.startswith("crm:"))
        crm = h.crm()
        new = app_rows(f"FLT{rnd}", 12)
        h.insert(*new)
        for i, k in enumerate(keys[:5]):
            h.update(k, job_title=f"Chức danh {rnd}.{i}")
        app_deleted = keys[5:7]
        h.delete(*app_deleted)
        agent_edited = keys[10:15]
        for i, k in enumerate(agent_edited):
            h.emulator.agent_update(crm[k]["public_id"], note=f"Agent ghi chú {rnd}.{i}")
        agent_deleted = keys[20:22]
        for k in agent_deleted:
            h.emulator.agent_delete(crm[k]["public_id"])
        h.emulator.agent_create(full_name="Võ Thị Kim Ngân", ref_id=f"KH-NEW-{rnd}",
                                phones=["0901234567"])
        h.emulator.agent_create(full_name="Đặng Minh Khoa", phones=["+84 902 345 678"])
        expected_count += 12 - 2 - 2 + 2

        await h.settle(full=True, max_cycles=60, pause=0.05)

        assert_mirrored(h)  # field for field, and exactly one CRM contact per ref_id
        rows, crm = h.rows(), h.crm()
        assert len(rows) == expected_count
        assert all(len(h.crm_by_ref(n["ref_id"])) == 1 for n in new)
        assert [first(crm[k], "job_title") for k in keys[:5]] == [
            f"Chức danh {rnd}.{i}" for i in range(5)]
        assert [rows[k]["note"] for k in agent_edited] == [
            f"Agent ghi chú {rnd}.{i}" for i in range(5)]
        assert not any(k in crm or k in rows for k in app_deleted + agent_deleted)
        assert f"KH-NEW-{rnd}" in rows

    faults = h.emulator.fault_counts()
    faulted = sorted({e.path.removeprefix("/api/").split("/delete/")[0] for e in transport.log
                      if e.status != 200})
    print(f"\nfaults injected: {faults}; {len(h.results)} cycles "
          f"({sum(r.status == 'failed' for r in h.results)} failed); auth calls "
          f"{h.emulator.stats()['auth']}; endpoints that saw a fault: {faulted}")
    assert faults["error_500"] > 0 and faults["rate_429"] > 0
    assert h.emulator.stats()["auth"] > len(h.results)  # tokens expired and were renewed
