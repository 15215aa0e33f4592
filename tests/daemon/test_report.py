"""The cycle's account on the command line: exit code 3 comes with the reason, even when this
cycle itself met no bad row (the count is of the whole store)."""

from __future__ import annotations

from datetime import UTC, datetime

from rich.console import Console

from sync.cycle import CycleResult
from sync.report import print_cycle


def _printed(**kw: int) -> tuple[CycleResult, str]:
    at = datetime(2026, 11, 27, tzinfo=UTC)
    result = CycleResult(run_id=7, kind="sync", status="ok", counts={"pulled": 3},
                         api_calls={"list": 1}, started_at=at, finished_at=at, **kw)
    console = Console(record=True, width=200)
    print_cycle(console, result)
    return result, console.export_text()


def test_rows_in_error_and_open_conflicts_are_named_with_the_exit_code() -> None:
    result, out = _printed(rows_in_error=2, open_conflicts=1)
    assert result.exit_code == 3
    assert "2 row(s) in error in all (exit code 3): `crm-sync status` names them" in out
    assert "1 open conflict(s) (exit code 3)" in out


def test_a_clean_store_prints_neither() -> None:
    result, out = _printed()
    assert result.exit_code == 0
    assert "sync run 7: ok" in out and "in error" not in out and "conflict" not in out


def test_a_dry_runs_plan_counts_what_would_happen_in_words() -> None:
    from sync.merge import PullCreate, PushCreate, SaveBase
    from sync.report import print_plan

    at = datetime(2026, 11, 27, tzinfo=UTC)
    result = CycleResult(run_id=None, kind="dry_run", status="ok", counts={}, api_calls={},
                         started_at=at, finished_at=at)
    plan = [PullCreate("KH-1", {"full_name": "Lê Văn A"}), SaveBase("KH-1", {}),
            PullCreate("KH-2", {}), PushCreate("APP-1", {"full_name": "Ngô B"})]
    console = Console(record=True, width=200)
    print_cycle(console, result)
    print_plan(console, plan)
    out = console.export_text()
    assert "dry run: ok" in out and "dry_run run" not in out
    assert "1 create (table -> CRM), 2 insert (CRM -> table)" in out
    assert "PullCreate" not in out and "SaveBase" not in out
