"""The three-way merge: base (last agreed) vs local row vs CRM, per field, as plain data.

Pure: no I/O, no clock, no logging. `plan_contact` looks at one contact's three versions and
returns the actions that bring both sides to one agreed version; the engine carries them out
(or, in a dry run, prints them). A version that is None means "absent on that side": for `base`
that the contact was never synced; for `remote` that its deletion in the CRM was confirmed.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Literal

from sync.record import Fields, FieldValue


class Policy(StrEnum):
    """Who wins when both sides changed one field to different values."""

    REMOTE_WINS = "remote_wins"
    LOCAL_WINS = "local_wins"
    NEWEST_WINS = "newest_wins"
    MANUAL = "manual"


class Direction(StrEnum):
    """Which way a field may flow. `pull`: the CRM is the source; `push`: the table is."""

    BOTH = "both"
    PULL = "pull"
    PUSH = "push"


Resolution = Literal["local", "remote", "manual"]


@dataclass(frozen=True, slots=True)
class Conflict:
    """Both sides changed `field` differently since `base`; `resolution` says who won."""

    field: str
    base: FieldValue
    local: FieldValue
    remote: FieldValue
    resolution: Resolution


@dataclass(frozen=True, slots=True)
class FieldMerge:
    """The result of merging one contact's fields."""

    merged: Fields  # the new agreed version, saved as the next base
    to_local: Fields  # field -> value to write into the local row
    to_remote: Fields  # field -> value to send to the CRM
    conflicts: tuple[Conflict, ...] = ()

    @property
    def manual(self) -> bool:
        return any(c.resolution == "manual" for c in self.conflicts)


def same_fields(a: Fields, b: Fields) -> bool:
    """Equal as `merge_fields` reads them: a field missing from a version counts as None."""
    return all(a.get(k) == b.get(k) for k in a.keys() | b.keys())


def _winner(policy: Policy, local_is_newer: bool | None) -> Resolution:
    if policy is Policy.LOCAL_WINS:
        return "local"
    if policy is Policy.MANUAL:
        return "manual"
    if policy is Policy.NEWEST_WINS and local_is_newer:
        return "local"
    return "remote"


def merge_fields(
    base: Fields | None,
    local: Fields,
    remote: Fields,
    *,
    policy: Policy = Policy.REMOTE_WINS,
    directions: Mapping[str, Direction] | None = None,
    local_is_newer: bool | None = None,
    unagreed: Collection[str] = (),
) -> FieldMerge:
    """Merge per field. A field missing from a version counts as None in that version.

    `local_is_newer` decides `newest_wins` conflicts; None (unknown) lets the CRM win.
    `unagreed`: fields the base holds no agreed value for (mapped, re-pointed or re-typed
    since): the CRM's value is taken whatever the policy, unless the field is push-only, and
    a local value it replaces is recorded as a conflict the CRM won. Such a column may hold
    what it held before the field was unmapped: stale, never to be sent over the CRM's.
    """
    base = base or {}
    directions = directions or {}
    merged: Fields = {}
    to_local: Fields = {}
    to_remote: Fields = {}
    conflicts: list[Conflict] = []
    for name in sorted(base.keys() | local.keys() | remote.keys()):
        b, lv, rv = base.get(name), local.get(name), remote.get(name)
        direction = directions.get(name, Direction.BOTH)
        if lv == rv:
            merged[name] = lv
        elif name in unagreed and direction is not Direction.PUSH:
            merged[name] = to_local[name] = rv
            if lv is not None:
                conflicts.append(Conflict(name, None, lv, rv, "remote"))
        elif direction is Direction.PULL or (direction is Direction.BOTH and lv == b):
            merged[name] = to_local[name] = rv
        elif direction is Direction.PUSH or rv == b:
            merged[name] = to_remote[name] = lv
        else:
            won = _winner(policy, local_is_newer)
            conflicts.append(Conflict(name, b, lv, rv, won))
            if won == "local":
                merged[name] = to_remote[name] = lv
            elif won == "remote":
                merged[name] = to_local[name] = rv
            else:  # manual: nobody writes; the base stays so the conflict stays visible
                merged[name] = b
    return FieldMerge(merged, to_local, to_remote, tuple(conflicts))


# --- actions: what the engine must do, as plain data -------------------------------------------


@dataclass(frozen=True, slots=True)
class PullCreate:
    """Insert a local row from the CRM's version."""

    key: str
    fields: Fields


@dataclass(frozen=True, slots=True)
class PullUpdate:
    """Update these columns of an existing local row."""

    key: str
    changes: Fields


@dataclass(frozen=True, slots=True)
class LocalDelete:
    """The CRM deleted the contact (confirmed): delete the row, keep a tombstone."""

    key: str


@dataclass(frozen=True, slots=True)
class PushCreate:
    """Create the contact in the CRM (through add-more) from the local row."""

    key: str
    fields: Fields


@dataclass(frozen=True, slots=True)
class PushUpdate:
    """Send `fields` to the CRM; `changed` names the fields that differ there.

    `fields` is what the CRM holds afterwards: the merged version, except that a field in a
    manual conflict keeps the CRM's own value. Save the plan's SaveBase, not these, as the base.
    """

    key: str
    fields: Fields
    changed: frozenset[str]


@dataclass(frozen=True, slots=True)
class PushDelete:
    """The app deleted the row: delete the contact in the CRM, keep a tombstone."""

    key: str


@dataclass(frozen=True, slots=True)
class SaveBase:
    """Record `fields` as the version both sides agree on."""

    key: str
    fields: Fields


@dataclass(frozen=True, slots=True)
class DropState:
    """Both sides are gone: forget the contact's bookkeeping."""

    key: str


@dataclass(frozen=True, slots=True)
class RecordConflicts:
    key: str
    conflicts: tuple[Conflict, ...]


@dataclass(frozen=True, slots=True)
class ReadOnlyEdit:
    """The app changed a contact the API cannot update (no refId): reported, never sent."""

    key: str
    fields: tuple[str, ...]


Action = (PullCreate | PullUpdate | LocalDelete | PushCreate | PushUpdate | PushDelete | SaveBase
          | DropState | RecordConflicts | ReadOnlyEdit)


@dataclass(frozen=True, slots=True)
class ContactPlan:
    key: str
    actions: tuple[Action, ...] = field(default=())

    @property
    def is_noop(self) -> bool:
        return not self.actions


DELETED = "(contact deleted)"  # the `field` of a conflict about the whole contact


def plan_contact(
    key: str,
    base: Fields | None,
    local: Fields | None,
    remote: Fields | None,
    *,
    policy: Policy = Policy.REMOTE_WINS,
    directions: Mapping[str, Direction] | None = None,
    local_is_newer: bool | None = None,
    read_only: bool = False,
    unagreed: Collection[str] = (),
) -> ContactPlan:
    """Decide what to do with one contact. See the module docstring for what None means, and
    `merge_fields` for `unagreed`."""
    acts: list[Action] = []
    if local is None and remote is None:
        if base is not None:
            acts.append(DropState(key))
    elif local is None:
        assert remote is not None
        if base is None:
            acts += [PullCreate(key, remote), SaveBase(key, remote)]
        elif read_only:  # pull-only: the CRM keeps its contact, and the mirror gets it back
            acts += [ReadOnlyEdit(key, ("(row deleted)",)), PullCreate(key, remote)]
        elif same_fields(remote, base):
            acts.append(PushDelete(key))
        else:  # deleted here, edited there: recorded whoever wins
            won: Resolution = ("local" if policy is Policy.LOCAL_WINS
                               else "manual" if policy is Policy.MANUAL else "remote")
            acts.append(RecordConflicts(key, (Conflict(DELETED, None, DELETED, None, won),)))
            if won == "remote":  # keep the edit, nothing is lost
                acts += [PullCreate(key, remote), SaveBase(key, remote)]
            elif won == "local":
                acts.append(PushDelete(key))
    elif remote is None:
        if base is None:
            if read_only:
                return ContactPlan(key)
            acts += [PushCreate(key, local), SaveBase(key, local)]
        elif same_fields(local, base):
            acts.append(LocalDelete(key))
        elif policy in (Policy.REMOTE_WINS, Policy.NEWEST_WINS):
            acts += [LocalDelete(key), RecordConflicts(
                key, (Conflict(DELETED, None, None, DELETED, "remote"),))]
        elif policy is Policy.LOCAL_WINS and not read_only:
            acts += [PushCreate(key, local), SaveBase(key, local), RecordConflicts(
                key, (Conflict(DELETED, None, None, DELETED, "local"),))]
        else:
            acts.append(RecordConflicts(key, (Conflict(DELETED, None, None, DELETED, "manual"),)))
    else:
        acts += _plan_both(key, base, local, remote, policy, directions, local_is_newer,
                           read_only, unagreed)
    return ContactPlan(key, tuple(acts))


def _plan_both(
    key: str,
    base: Fields | None,
    local: Fields,
    remote: Fields,
    policy: Policy,
    directions: Mapping[str, Direction] | None,
    local_is_newer: bool | None,
    read_only: bool,
    unagreed: Collection[str],
) -> list[Action]:
    m = merge_fields(base, local, remote, policy=policy, directions=directions,
                     local_is_newer=local_is_newer, unagreed=unagreed)
    acts: list[Action] = []
    merged = m.merged
    if read_only and m.to_remote:
        # The CRM cannot take it; its version stays the agreed one for those fields.
        acts.append(ReadOnlyEdit(key, tuple(sorted(m.to_remote))))
        merged = {**merged, **{k: remote.get(k) for k in m.to_remote}}
    if m.to_local:
        acts.append(PullUpdate(key, m.to_local))
    if m.to_remote and not read_only:
        # A manual conflict is left alone on both sides: the CRM keeps its own value.
        sent = {**merged, **{c.field: remote.get(c.field) for c in m.conflicts
                             if c.resolution == "manual"}}
        acts.append(PushUpdate(key, sent, frozenset(m.to_remote)))
    if m.conflicts:
        acts.append(RecordConflicts(key, m.conflicts))
    if base is None or not same_fields(merged, base):
        acts.append(SaveBase(key, merged))
    return acts


def deletions_allowed(n_deletions: int, n_known: int, max_fraction: float) -> bool:
    """The delete guard: refuse to propagate more than `max_fraction` of known contacts.

    A handful of deletions is always allowed, so small tables can still delete.
    """
    if n_deletions <= 0:
        return True
    if n_known <= 0:
        return False
    # a ratio, not int(n_known * max_fraction): 100 * 0.29 == 28.999999999999996
    return n_deletions <= 1 or n_deletions / n_known <= max_fraction
