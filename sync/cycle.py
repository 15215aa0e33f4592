"""The value types of one sync cycle: its options, its running context, its result."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from enum import IntEnum
from typing import Literal

from sync.merge import Action
from sync.record import Contact, Fields
from sync.store.state import SyncState

RunStatus = Literal["ok", "partial", "failed", "refused"]
# The counters a run records; `sync_runs` has a column for each of the first nine.
COUNTERS = ("pulled", "created_local", "updated_local", "deleted_local", "created_remote",
            "updated_remote", "deleted_remote", "conflicts", "errors")


class ExitCode(IntEnum):
    OK = 0
    FAILURE = 1
    CONFIG = 2
    ROWS_NEED_ATTENTION = 3


@dataclass(frozen=True, slots=True)
class CycleOptions:
    full: bool = False  # also reconcile deletions made in the CRM
    dry_run: bool = False  # plan only: no write anywhere
    kind: str = "sync"  # recorded in sync_runs: sync | full | resync | dry_run


@dataclass(slots=True)
class PendingDelete:
    """A deletion waiting for the guard's word at the end of the cycle."""

    key: str
    public_id: str | None
    state: SyncState | None
    row: dict[str, object] | None
    local: Fields | None
    side: Literal["local", "remote"]  # the side where the contact disappeared
    remote: Contact | None = None  # the CRM's latest version, kept in the tombstone
    replaced_by: str | None = None  # the key the contact has now (not a deletion: no guard)


@dataclass(slots=True)
class CycleContext:
    """What one cycle accumulates as it goes; the engine owns it, nothing outlives a cycle."""

    options: CycleOptions
    now: datetime
    run_id: int | None = None
    counts: Counter[str] = field(default_factory=Counter)
    seen_public: set[str] = field(default_factory=set)
    seen_keys: set[str] = field(default_factory=set)
    listing_complete: bool = False
    refused: bool = False  # the delete guard refused a side's deletions
    config_failure: bool = False  # the cycle failed on the configuration (exit 2)
    analyzed_at: int = 0  # rows written when the tables were last ANALYZEd (PostgreSQL)
    # sync_state (this tenant's) / the local table held nothing when the cycle began
    no_states: bool = False
    no_rows: bool = False
    creates: list[tuple[str, Fields, SyncState | None]] = field(default_factory=list)
    pending: list[tuple[SyncState, Fields | None]] = field(default_factory=list)
    vanished: list[tuple[SyncState, dict[str, object] | None, Fields | None]] = field(
        default_factory=list)
    # listed under a key whose agreed contact is another one: decided after the listing
    strangers: dict[str, list[Contact]] = field(default_factory=dict)
    deletes: list[PendingDelete] = field(default_factory=list)
    plan: list[Action] = field(default_factory=list)  # dry run: everything that would be done
    notes: list[str] = field(default_factory=list)  # said to the operator at the end


@dataclass(frozen=True, slots=True)
class CycleResult:
    run_id: int | None
    kind: str
    status: RunStatus
    counts: dict[str, int]
    api_calls: dict[str, int]
    started_at: datetime
    finished_at: datetime
    notes: tuple[str, ...] = ()
    plan: tuple[Action, ...] = ()
    rows_in_error: int = 0
    open_conflicts: int = 0
    config_failure: bool = False  # failed on the configuration (a refused API key)

    @property
    def exit_code(self) -> ExitCode:
        if self.status == "failed" and self.config_failure:
            return ExitCode.CONFIG
        if self.status in ("failed", "refused"):
            return ExitCode.FAILURE
        # rows in error now, or rows this cycle could not settle (a lookup that failed for
        # them alone keeps their status: they are tried again, but they did not sync)
        if self.rows_in_error or self.open_conflicts or self.counts.get("errors"):
            return ExitCode.ROWS_NEED_ATTENTION
        return ExitCode.OK

    @property
    def duration_s(self) -> float:
        return (self.finished_at - self.started_at).total_seconds()


ProgressFn = Callable[[int, int | None], None]
