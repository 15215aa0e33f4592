"""Scenario 8: a dry run lists the plan in both directions and changes nothing: not the table,
not the bookkeeping, not the CRM (its write counters included)."""

from __future__ import annotations

from collections import Counter

from sync.merge import LocalDelete, PullCreate, PullUpdate, PushCreate, PushDelete, PushUpdate

from .conftest import MakeHarness
from .helpers import app_rows, write_calls


async def test_dry_run_plans_both_directions_and_changes_nothing(
        make_harness: MakeHarness) -> None:
    h = make_harness({"contacts": 40, "seed": 51, "add_more_delay": 0.05},
                     max_delete_fraction=0.2)
    await h.cycle()
    keys = sorted(k for k in h.rows() if not k.startswith("crm:"))
    crm = h.crm()
    # CRM side: an edit, a new contact, a deletion
    h.emulator.agent_update(crm[keys[0]]["public_id"], job_title="Trưởng phòng")
    h.emulator.agent_create(full_name="Lý Thị Mai", ref_id="KH-DRY-1", phones=["0903000111"])
    h.emulator.agent_delete(crm[keys[1]]["public_id"])
    # table side: an edit, two new rows, a deletion
    h.update(keys[2], address="7 Hai Bà Trưng, Hà Nội")
    h.insert(*app_rows("DRY", 2))
    h.delete(keys[3])
    before = h.snapshot()

    r = await h.cycle(dry_run=True, full=True)
    assert r.status == "ok", r.notes
    assert r.run_id is None
    assert not write_calls(r.api_calls)
    plan = {(type(a).__name__, a.key) for a in r.plan}
    assert plan >= {
        (PullUpdate.__name__, keys[0]), (PullCreate.__name__, "KH-DRY-1"),
        (LocalDelete.__name__, keys[1]), (PushUpdate.__name__, keys[2]),
        (PushCreate.__name__, "DRY-0001"), (PushCreate.__name__, "DRY-0002"),
        (PushDelete.__name__, keys[3])}, plan
    kinds = Counter(type(a).__name__ for a in r.plan)
    assert kinds["PushCreate"] == 2 and kinds["PushDelete"] == 1 and kinds["LocalDelete"] == 1
    update = next(a for a in r.plan if isinstance(a, PullUpdate) and a.key == keys[0])
    assert update.changes == {"job_title": "Trưởng phòng"}
    push = next(a for a in r.plan if isinstance(a, PushUpdate) and a.key == keys[2])
    assert push.changed == frozenset({"address"})

    after = h.snapshot()
    for part in before:
        assert after[part] == before[part], part

    # and the real cycle does what the dry run listed
    real = await h.cycle(full=True)
    assert real.status == "ok", real.notes
    assert write_calls(real.api_calls) == {"add_more": 1, "update": 1, "delete": 1}
    assert (real.counts["updated_local"], real.counts["created_local"],
            real.counts["deleted_local"]) == (1, 1, 1)


async def test_a_dry_run_says_what_the_delete_guard_will_do(make_harness: MakeHarness) -> None:
    """README: `--dry-run` prints the plan of the next cycle. With more rows deleted from the
    table than CRM_SYNC_MAX_DELETE_FRACTION allows, the real cycle refuses every one of them
    (status refused, exit 1); the dry run listed them all as deletions in the CRM, status ok,
    exit 0: an operator checking the plan is told the opposite of what will happen."""
    h = make_harness({"contacts": 40, "seed": 52}, max_delete_fraction=0.1)
    assert (await h.cycle()).status == "ok"
    keys = sorted(k for k in h.rows() if not k.startswith("crm:"))[:12]
    h.delete(*keys)

    dry = await h.cycle(dry_run=True)
    real = await h.cycle()
    assert real.status == "refused" and real.exit_code == 1 and not real.counts["deleted_remote"]
    deletes = [a for a in dry.plan if isinstance(a, PushDelete)]
    assert (dry.status, dry.exit_code) == (real.status, real.exit_code), (
        dry.status, len(deletes), dry.notes)
    assert not deletes, f"the dry run lists {len(deletes)} deletions the cycle refuses"
