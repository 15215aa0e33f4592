"""What the CLI prints: a cycle's account, a dry run's plan, the status page."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping
from typing import Any

from rich.console import Console
from rich.table import Table

from sync.cycle import CycleResult
from sync.merge import (
    Action,
    LocalDelete,
    PullCreate,
    PullUpdate,
    PushCreate,
    PushDelete,
    PushUpdate,
    ReadOnlyEdit,
    RecordConflicts,
)

LABELS = {
    "pulled": "CRM contacts read (listed, or looked up one by one)",
    "unchanged": "listed contacts unchanged on both sides (skipped)",
    "created_local": "new rows from the CRM",
    "updated_local": "rows updated from the CRM",
    "deleted_local": "rows deleted (deleted in the CRM)",
    "created_remote": "contacts sent to the CRM (add-more)",
    "updated_remote": "contacts updated in the CRM",
    "deleted_remote": "contacts deleted in the CRM",
    "conflicts": "conflicts (both sides changed a field)",
    "errors": "rows in error",
    "pending_create": "creates awaiting the CRM (asynchronous)",
    "duplicates_in_crm": "CRM contacts sharing a refId (reported, not touched)",
    "listed_after_delete": "contacts deleted here that the CRM still lists (not pulled back)",
    "rekeyed": "rows whose CRM contact now has a refId of its own (row replaced)",
    "custom_labels_ignored": "rows with custom fields in the JSON column that a column holds "
                             "(ignored there; see the log)",
    "read_only_edits": "local edits to read-only contacts (not sent)",
    "clears_not_sent": "rows clearing a field no update can clear (the CRM's value comes back)",
    "skipped_changed_during_cycle": "rows changed by an app during the cycle (next cycle)",
    "unlisted_edits_not_found": "edited rows the CRM did not return (left to a full cycle)",
    "notes_sent": "notes sent to agents (add-note)",
    "notes_failed": "notes that cannot be sent (see status)",
    "notes_unknown": "notes maybe delivered, held as unknown (crm-sync notes resend)",
    "notes_deferred": "notes to retry next cycle",
    "notes_waiting": "notes waiting for their contact's create",
    "notes_to_send": "notes that would be sent",
    "notes_to_fail": "notes that would fail",
}


# a run's details every cycle has (not worth a line in `status`)
_ROUTINE = frozenset({"unchanged"})


def print_cycle(console: Console, result: CycleResult, title: str | None = None) -> None:
    head = title or (f"{result.kind} run {result.run_id}" if result.run_id else "dry run")
    console.print(f"[bold]{head}[/]: [{_colour(result.status)}]{result.status}[/] "
                  f"in {result.duration_s:.2f}s, {sum(result.api_calls.values())} API calls "
                  f"({_calls(result.api_calls)})")
    for key, value in result.counts.items():
        if value:
            console.print(f"  {value:>7}  {LABELS.get(key, key)}")
    for note in result.notes:
        console.print(f"  [yellow]! {note}[/]")
    # the exit code counts every row in error and every open conflict, not this cycle's only;
    # a failed cycle's is 1, whatever else there is
    code = " (exit code 3)" if result.exit_code == 3 else ""
    if result.rows_in_error:
        console.print(f"  [yellow]! {result.rows_in_error} row(s) in error in all{code}: "
                      "`crm-sync status` names them[/]")
    if result.open_conflicts:
        console.print(f"  [yellow]! {result.open_conflicts} open conflict(s){code}: "
                      "`crm-sync status` shows them[/]")


def print_plan(console: Console, actions: Iterable[Action]) -> None:
    acts = list(actions)
    if not acts:
        console.print("Nothing to do: both sides agree.")
        return
    table = Table("direction", "action", "contact", "details", title="Plan (nothing applied)")
    rows = [row for row in map(_describe, acts) if row]
    for row in rows:
        table.add_row(*row)
    console.print(table)
    kinds = Counter(f"{action} ({direction})" for direction, action, _, _ in rows)
    console.print(", ".join(f"{n} {k}" for k, n in sorted(kinds.items())) or
                  "Only bookkeeping to record: nothing would change on either side.")


def _describe(a: Action) -> tuple[str, str, str, str] | None:
    if isinstance(a, PullCreate):
        return ("CRM -> table", "insert", a.key, str(a.fields.get("full_name") or ""))
    if isinstance(a, PullUpdate):
        return ("CRM -> table", "update", a.key, _changes(a.changes))
    if isinstance(a, LocalDelete):
        return ("CRM -> table", "delete", a.key, "deleted in the CRM")
    if isinstance(a, PushCreate):
        return ("table -> CRM", "create", a.key, str(a.fields.get("full_name") or ""))
    if isinstance(a, PushUpdate):
        return ("table -> CRM", "update", a.key,
                _changes({k: a.fields.get(k) for k in sorted(a.changed)}))
    if isinstance(a, PushDelete):
        return ("table -> CRM", "delete", a.key, "deleted in the table")
    if isinstance(a, RecordConflicts):
        return ("both", "conflict", a.key, ", ".join(
            f"{c.field}: local={c.local!r} crm={c.remote!r} -> {c.resolution}"
            for c in a.conflicts))
    if isinstance(a, ReadOnlyEdit):
        return ("none", "read-only", a.key, "local edits not sent: " + ", ".join(a.fields))
    return None


def _changes(fields: Mapping[str, Any]) -> str:
    text = ", ".join(f"{k}={_short(v)}" for k, v in fields.items())
    return text if len(text) < 120 else text[:117] + "..."


def _short(v: Any) -> str:
    if isinstance(v, frozenset):
        return "{" + ", ".join(sorted(v)) + "}"
    return repr(v) if not isinstance(v, str) else v


def _calls(calls: Mapping[str, int]) -> str:
    return ", ".join(f"{k} {v}" for k, v in sorted(calls.items())) or "none"


def _colour(status: str) -> str:
    return {"ok": "green", "partial": "yellow"}.get(status, "red")


def print_status(console: Console, status: Mapping[str, Any]) -> None:
    console.print(f"[bold]tenant[/] {status['tenant']}   [bold]database[/] {status['database']}")
    states = status["states"]
    console.print("contacts: " + (", ".join(f"{v} {k}" for k, v in sorted(states.items()))
                                  or "none yet"))
    console.print(f"open conflicts: {status['open_conflicts']}   rows in error: "
                  f"{status['rows_in_error']}   pending creates: "
                  f"{states.get('pending_create', 0)}")
    runs = Table("run", "kind", "started", "status", "CRM contacts read", "CRM writes",
                 "rows written", "errors", "api calls", title="last runs")
    for r in status["runs"]:
        pushed = r["created_remote"] + r["updated_remote"] + r["deleted_remote"]
        local = r["created_local"] + r["updated_local"] + r["deleted_local"]
        runs.add_row(str(r["id"]), r["kind"], str(r["started_at"])[:19], r["status"],
                     str(r["pulled"]), str(pushed), str(local), str(r["errors"]),
                     str(r["api_calls"]))
    console.print(runs)
    last = status["runs"][0] if status["runs"] else {}
    if last.get("status") in ("failed", "refused") and last.get("message"):
        console.print(f"run {last['id']} {last['status']}: {last['message']}")
    if notable := [f"{n} {LABELS.get(k, k)}" for k, n in (last.get("details") or {}).items()
                   if k not in _ROUTINE]:
        console.print(f"run {last['id']} also: " + "; ".join(notable))
    for e in status["errors"]:
        console.print(f"  [red]error[/] {e['key']}: {e['last_error']}")
    if count := status.get("read_only_edits_count"):
        console.print(f"read-only contacts with local edits not sent: {count}")
    for r in status.get("read_only_edits", []):
        console.print(f"  [yellow]read-only[/] {r['key']}: {r['last_error']}")
    notes = status.get("notes") or {}
    if notes:
        console.print("notes: " + ", ".join(f"{v} {k}" for k, v in notes.items()))
    for n in status.get("note_problems", []):
        console.print(f"  [red]note {n['note_id']}[/] {n['status']}: {n['last_error']}")
    for c in status["conflicts"]:
        console.print(f"  [yellow]conflict[/] {c['key']}.{c['field']}: local={c['local_value']!r}"
                      f" crm={c['remote_value']!r} ({c['resolution']})")
