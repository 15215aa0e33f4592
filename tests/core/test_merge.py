"""The pure three-way merge (sync/merge.py): every case of the field matrix, every case of the
presence matrix, and the properties the engine relies on (convergence, idempotence, nothing lost).

The expected values come from small oracles written plainly from the rules in architecture.md
("The sync algorithm"), not from the code under test, plus hand-written rows for the cases that
matter most, so that the oracles are not the only check.
"""

from __future__ import annotations

import itertools
from fractions import Fraction
from typing import Any

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from sync.merge import (
    DELETED,
    Conflict,
    ContactPlan,
    Direction,
    DropState,
    FieldMerge,
    LocalDelete,
    Policy,
    PullCreate,
    PullUpdate,
    PushCreate,
    PushDelete,
    PushUpdate,
    ReadOnlyEdit,
    RecordConflicts,
    SaveBase,
    deletions_allowed,
    merge_fields,
    plan_contact,
)
from sync.record import Fields, FieldValue

REMOTE, LOCAL, NEWEST, MANUAL = (Policy.REMOTE_WINS, Policy.LOCAL_WINS, Policy.NEWEST_WINS,
                                 Policy.MANUAL)
BOTH, PULL, PUSH = Direction.BOTH, Direction.PULL, Direction.PUSH

# (id, policy, local_is_newer): every way a conflict can be decided
POLICIES = [
    ("remote_wins", REMOTE, None),
    ("local_wins", LOCAL, None),
    ("newest_local_newer", NEWEST, True),
    ("newest_remote_newer", NEWEST, False),
    ("newest_unknown", NEWEST, None),
    ("manual", MANUAL, None),
]


def same(a: Fields | None, b: Fields | None) -> bool:
    """Equal as the merge reads them: a missing field counts as None."""
    if a is None or b is None:
        return a is b
    return all(a.get(k) == b.get(k) for k in a.keys() | b.keys())


# ================================================================================================
# 1. merge_fields: the field matrix
# ================================================================================================

F = "email"
B, X, Y = "an@example.vn", "an.nguyen@example.vn", "nguyen.an@example.vn"
ABSENT = object()  # the key is missing from the dict (counts as None)
NOWRITE = object()

BASE_STATES: dict[str, Any] = {
    "base=B": {F: B},
    "base=None": {F: None},
    "base-lacks-field": {},
    "never-synced": None,  # the whole base is None
}
SIDE_STATES = ["same", "X", "Y", "None", "absent"]


def side(state: str, base: Fields | None) -> Fields:
    if state == "same":
        return dict(base or {})
    if state == "absent":
        return {}
    return {F: {"X": X, "Y": Y, "None": None}[state]}


def winner(policy: Policy, local_is_newer: bool | None) -> str:
    return {
        REMOTE: "remote",
        LOCAL: "local",
        NEWEST: "local" if local_is_newer is True else "remote",
        MANUAL: "manual",
    }[policy]


def field_oracle(b: FieldValue, lv: FieldValue, rv: FieldValue, policy: Policy,
                 local_is_newer: bool | None, direction: Direction
                 ) -> tuple[FieldValue, Any, Any, str | None]:
    """(merged, value written to local or NOWRITE, value sent to the CRM or NOWRITE, resolution).

    The rules, as written in the architecture: a write only ever happens where the two sides
    differ; `pull`: the CRM's value always wins, silently; `push`: the local value always wins,
    silently; otherwise unchanged -> nothing, only local changed -> push, only remote changed ->
    pull, both to the same value -> nothing, both differently -> conflict decided by the policy.
    """
    if lv == rv:
        return lv, NOWRITE, NOWRITE, None
    if direction == PULL:
        return rv, rv, NOWRITE, None
    if direction == PUSH:
        return lv, NOWRITE, lv, None
    local_changed, remote_changed = lv != b, rv != b
    if local_changed and not remote_changed:
        return lv, NOWRITE, lv, None
    if remote_changed and not local_changed:
        return rv, rv, NOWRITE, None
    won = winner(policy, local_is_newer)
    if won == "local":
        return lv, NOWRITE, lv, won
    if won == "remote":
        return rv, rv, NOWRITE, won
    return b, NOWRITE, NOWRITE, won  # manual: nobody writes, the base stays the agreed value


def expected_merge(base: Fields | None, local: Fields, remote: Fields, policy: Policy,
                   local_is_newer: bool | None, direction: Direction) -> FieldMerge:
    present = F in (base or {}) or F in local or F in remote
    b, lv, rv = (base or {}).get(F), local.get(F), remote.get(F)
    merged, to_l, to_r, res = field_oracle(b, lv, rv, policy, local_is_newer, direction)
    return FieldMerge(
        merged={F: merged} if present else {},
        to_local={} if to_l is NOWRITE else {F: to_l},
        to_remote={} if to_r is NOWRITE else {F: to_r},
        conflicts=() if res is None else (Conflict(F, b, lv, rv, res),),  # type: ignore[arg-type]
    )


FIELD_MATRIX = [
    pytest.param(bs, ls, rs, pol, newer, id=f"{bid}|L={ls}|R={rs}|{pid}")
    for (bid, bs), ls, rs, (pid, pol, newer) in itertools.product(
        BASE_STATES.items(), SIDE_STATES, SIDE_STATES, POLICIES)
]


@pytest.mark.parametrize(("base", "ls", "rs", "policy", "newer"), FIELD_MATRIX)
def test_merge_fields_matrix(base: Fields | None, ls: str, rs: str, policy: Policy,
                             newer: bool | None) -> None:
    """Each row is checked in every direction (both, pull, push): 4*5*5*6*3 cases in all."""
    local, remote = side(ls, base), side(rs, base)
    wrong = {}
    for direction in Direction:
        got = merge_fields(base, local, remote, policy=policy, directions={F: direction},
                           local_is_newer=newer)
        want = expected_merge(base, local, remote, policy, newer, direction)
        if got != want or got.manual != any(c.resolution == "manual" for c in want.conflicts):
            wrong[direction.value] = (got, want)
        # nothing is written where it already is
        assert all(local.get(k) != v for k, v in got.to_local.items())
        assert all(remote.get(k) != v for k, v in got.to_remote.items())
    assert not wrong, wrong


def test_field_matrix_is_complete() -> None:
    assert len(FIELD_MATRIX) * len(Direction) == 4 * 5 * 5 * 6 * 3


def C(field: str, b: FieldValue, lv: FieldValue, rv: FieldValue, res: str) -> Conflict:
    return Conflict(field, b, lv, rv, res)  # type: ignore[arg-type]


NAME, PHONE, EMAIL, TAGS = "full_name", "phone", "email", "tags"
AN: Fields = {NAME: "Nguyễn Văn An", PHONE: "0393123456", EMAIL: "an@example.vn",
      TAGS: frozenset({"Khách lẻ"})}

# Hand-written rows: (id, base, local, remote, kwargs, merged, to_local, to_remote, conflicts)
HAND_ROWS: list[tuple[str, Fields | None, Fields, Fields, dict[str, Any], Fields, Fields, Fields,
                      tuple[Conflict, ...]]] = [
    ("unchanged", AN, AN, AN, {}, AN, {}, {}, ()),
    ("only-local-changed-pushes", AN, {**AN, EMAIL: "an.nguyen@example.vn"}, AN, {},
     {**AN, EMAIL: "an.nguyen@example.vn"}, {}, {EMAIL: "an.nguyen@example.vn"}, ()),
    ("only-remote-changed-pulls", AN, AN, {**AN, PHONE: "0912345678"}, {},
     {**AN, PHONE: "0912345678"}, {PHONE: "0912345678"}, {}, ()),
    ("both-changed-to-same-value", AN, {**AN, PHONE: "0912345678"}, {**AN, PHONE: "0912345678"},
     {}, {**AN, PHONE: "0912345678"}, {}, {}, ()),
    ("different-fields-each-side-no-conflict", AN, {**AN, EMAIL: "x@example.vn"},
     {**AN, PHONE: "0912345678", TAGS: frozenset({"VIP"})}, {},
     {**AN, EMAIL: "x@example.vn", PHONE: "0912345678", TAGS: frozenset({"VIP"})},
     {PHONE: "0912345678", TAGS: frozenset({"VIP"})}, {EMAIL: "x@example.vn"}, ()),
    ("conflict-remote-wins-by-default", AN, {**AN, NAME: "Nguyễn Văn Anh"},
     {**AN, NAME: "Nguyễn Văn Ân"}, {}, {**AN, NAME: "Nguyễn Văn Ân"}, {NAME: "Nguyễn Văn Ân"},
     {}, (C(NAME, "Nguyễn Văn An", "Nguyễn Văn Anh", "Nguyễn Văn Ân", "remote"),)),
    ("conflict-local-wins", AN, {**AN, NAME: "L"}, {**AN, NAME: "R"}, {"policy": LOCAL},
     {**AN, NAME: "L"}, {}, {NAME: "L"}, (C(NAME, "Nguyễn Văn An", "L", "R", "local"),)),
    ("local-wins-ignores-timestamps", AN, {**AN, NAME: "L"}, {**AN, NAME: "R"},
     {"policy": LOCAL, "local_is_newer": False}, {**AN, NAME: "L"}, {}, {NAME: "L"},
     (C(NAME, "Nguyễn Văn An", "L", "R", "local"),)),
    ("remote-wins-ignores-timestamps", AN, {**AN, NAME: "L"}, {**AN, NAME: "R"},
     {"policy": REMOTE, "local_is_newer": True}, {**AN, NAME: "R"}, {NAME: "R"}, {},
     (C(NAME, "Nguyễn Văn An", "L", "R", "remote"),)),
    ("newest-wins-local-newer", AN, {**AN, NAME: "L"}, {**AN, NAME: "R"},
     {"policy": NEWEST, "local_is_newer": True}, {**AN, NAME: "L"}, {}, {NAME: "L"},
     (C(NAME, "Nguyễn Văn An", "L", "R", "local"),)),
    ("newest-wins-remote-newer", AN, {**AN, NAME: "L"}, {**AN, NAME: "R"},
     {"policy": NEWEST, "local_is_newer": False}, {**AN, NAME: "R"}, {NAME: "R"}, {},
     (C(NAME, "Nguyễn Văn An", "L", "R", "remote"),)),
    ("newest-wins-unknown-lets-crm-win", AN, {**AN, NAME: "L"}, {**AN, NAME: "R"},
     {"policy": NEWEST}, {**AN, NAME: "R"}, {NAME: "R"}, {},
     (C(NAME, "Nguyễn Văn An", "L", "R", "remote"),)),
    ("manual-nobody-writes-base-stays", AN, {**AN, NAME: "L", EMAIL: "l@x.vn"},
     {**AN, NAME: "R", PHONE: "0912345678"}, {"policy": MANUAL},
     {**AN, EMAIL: "l@x.vn", PHONE: "0912345678"}, {PHONE: "0912345678"}, {EMAIL: "l@x.vn"},
     (C(NAME, "Nguyễn Văn An", "L", "R", "manual"),)),
    ("local-cleared-a-field-pushes-none", AN, {**AN, EMAIL: None}, AN, {}, {**AN, EMAIL: None},
     {}, {EMAIL: None}, ()),
    ("local-dropped-the-key-pushes-none", AN, {k: v for k, v in AN.items() if k != EMAIL}, AN,
     {}, {**AN, EMAIL: None}, {}, {EMAIL: None}, ()),
    ("crm-dropped-the-key-pulls-none", AN, AN, {k: v for k, v in AN.items() if k != TAGS}, {},
     {**AN, TAGS: None}, {TAGS: None}, {}, ()),
    ("cleared-vs-edited-is-a-conflict", AN, {**AN, EMAIL: None}, {**AN, EMAIL: "r@x.vn"}, {},
     {**AN, EMAIL: "r@x.vn"}, {EMAIL: "r@x.vn"}, {}, (C(EMAIL, "an@example.vn", None, "r@x.vn",
                                                         "remote"),)),
    ("never-synced-fill-each-side-in", None, {NAME: "An", EMAIL: "an@example.vn"},
     {NAME: "An", PHONE: "0393123456"}, {},
     {NAME: "An", EMAIL: "an@example.vn", PHONE: "0393123456"}, {PHONE: "0393123456"},
     {EMAIL: "an@example.vn"}, ()),
    ("never-synced-disagreement-is-a-conflict", None, {NAME: "L"}, {NAME: "R"}, {"policy": LOCAL},
     {NAME: "L"}, {}, {NAME: "L"}, (C(NAME, None, "L", "R", "local"),)),
    ("direction-pull-crm-wins-silently", AN, {**AN, PHONE: "0911111111"},
     {**AN, PHONE: "0922222222"}, {"policy": LOCAL, "directions": {PHONE: PULL}},
     {**AN, PHONE: "0922222222"}, {PHONE: "0922222222"}, {}, ()),
    ("direction-pull-reverts-a-local-only-edit", AN, {**AN, PHONE: "0911111111"}, AN,
     {"directions": {PHONE: PULL}}, AN, {PHONE: "0393123456"}, {}, ()),
    ("direction-push-local-wins-silently", AN, {**AN, NAME: "L"}, {**AN, NAME: "R"},
     {"directions": {NAME: PUSH}}, {**AN, NAME: "L"}, {}, {NAME: "L"}, ()),
    ("direction-push-reverts-a-crm-only-edit", AN, AN, {**AN, NAME: "R"},
     {"directions": {NAME: PUSH}}, AN, {}, {NAME: "Nguyễn Văn An"}, ()),
    ("unlisted-field-defaults-to-both", AN, {**AN, NAME: "L"}, {**AN, PHONE: "0912345678"},
     {"directions": {EMAIL: PULL}}, {**AN, NAME: "L", PHONE: "0912345678"},
     {PHONE: "0912345678"}, {NAME: "L"}, ()),
    ("tags-compare-as-sets", AN, {**AN, TAGS: frozenset({"Khách lẻ"})}, AN, {}, AN, {}, {}, ()),
    ("all-empty", None, {}, {}, {}, {}, {}, {}, ()),
]


@pytest.mark.parametrize(("base", "local", "remote", "kwargs", "merged", "to_local", "to_remote",
                          "conflicts"), [pytest.param(*r[1:], id=r[0]) for r in HAND_ROWS])
def test_merge_fields_hand_rows(base: Fields | None, local: Fields, remote: Fields,
                                kwargs: dict[str, Any], merged: Fields, to_local: Fields,
                                to_remote: Fields, conflicts: tuple[Conflict, ...]) -> None:
    got = merge_fields(base, local, remote, **kwargs)
    assert got == FieldMerge(merged, to_local, to_remote, conflicts)


def test_merge_fields_does_not_mutate_its_inputs() -> None:
    base, local, remote = dict(AN), {**AN, NAME: "L"}, {**AN, NAME: "R"}
    copies = (dict(base), dict(local), dict(remote))
    merge_fields(base, local, remote, policy=MANUAL)
    assert (base, local, remote) == copies


# --- the merge is per field: a multi-field merge is the union of single-field merges ------------

FIELDS = [NAME, PHONE, EMAIL, TAGS]
VALUES: st.SearchStrategy[FieldValue] = st.sampled_from(["a", "b", "c", None])
RECORDS: st.SearchStrategy[Fields] = st.dictionaries(st.sampled_from(FIELDS), VALUES,
                                                  max_size=len(FIELDS))
DIRECTIONS = st.dictionaries(st.sampled_from(FIELDS), st.sampled_from(list(Direction)),
                             max_size=2)


@given(st.none() | RECORDS, RECORDS, RECORDS, st.sampled_from(POLICIES), DIRECTIONS)
def test_merge_fields_is_per_field(base: Fields | None, local: Fields, remote: Fields,
                                   pol: tuple[str, Policy, bool | None],
                                   directions: dict[str, Direction]) -> None:
    _, policy, newer = pol
    whole = merge_fields(base, local, remote, policy=policy, directions=directions,
                         local_is_newer=newer)
    merged: Fields = {}
    to_local: Fields = {}
    to_remote: Fields = {}
    conflicts: list[Conflict] = []
    for name in sorted((base or {}).keys() | local.keys() | remote.keys()):
        def one(d: Fields | None, name: str = name) -> Fields:
            return {name: d[name]} if d and name in d else {}
        part = merge_fields(one(base) if base is not None else None, one(local), one(remote),
                            policy=policy, directions=directions, local_is_newer=newer)
        merged |= part.merged
        to_local |= part.to_local
        to_remote |= part.to_remote
        conflicts += part.conflicts
    assert whole == FieldMerge(merged, to_local, to_remote, tuple(conflicts))


# ================================================================================================
# 2. plan_contact: the presence matrix
# ================================================================================================

K = "KH-000123"
BASE: Fields = dict(AN)
LOCAL_STATES: dict[str, Fields | None] = {
    "absent": None,
    "unchanged": BASE,
    "changed": {**BASE, EMAIL: "an.nguyen@example.vn"},
}
REMOTE_STATES: dict[str, Fields | None] = {
    "absent": None,
    "unchanged": BASE,
    "changed-other-field": {**BASE, PHONE: "0912345678"},
    "changed-same-field-same-value": {**BASE, EMAIL: "an.nguyen@example.vn"},
    "changed-same-field-clash": {**BASE, EMAIL: "nguyen.an@example.vn"},
}


def shape(a: object) -> tuple[Any, ...]:
    """An action as comparable data; a conflict is reduced to (field, resolution) here (its
    values are checked by dedicated tests)."""
    name = type(a).__name__
    if isinstance(a, RecordConflicts):
        return (name, tuple((c.field, c.resolution) for c in a.conflicts))
    if isinstance(a, PullCreate | PushCreate | SaveBase):
        return (name, a.fields)
    if isinstance(a, PullUpdate):
        return (name, a.changes)
    if isinstance(a, PushUpdate):
        return (name, a.fields, a.changed)
    if isinstance(a, ReadOnlyEdit):
        return (name, a.fields)
    return (name,)


def expected_plan(base: Fields | None, local: Fields | None, remote: Fields | None,
                  policy: Policy, newer: bool | None, read_only: bool) -> list[tuple[Any, ...]]:
    """The rules of the presence matrix, written plainly."""
    if local is None and remote is None:  # gone on both sides: forget it (if ever known)
        return [("DropState",)] if base is not None else []
    if local is None:
        assert remote is not None
        if base is None:  # new in the CRM
            return [("PullCreate", remote), ("SaveBase", remote)]
        if read_only:  # pull-only: the CRM keeps its contact; the mirror row comes back
            return [("ReadOnlyEdit", ("(row deleted)",)), ("PullCreate", remote)]
        if same(remote, base):  # deleted here, untouched there
            return [("PushDelete",)]
        # deleted here, edited there: a conflict, recorded whoever wins
        if policy == MANUAL:
            return [("RecordConflicts", ((DELETED, "manual"),))]
        if policy == LOCAL:
            return [("RecordConflicts", ((DELETED, "local"),)), ("PushDelete",)]
        # remote_wins, and newest_wins (a deletion has no timestamp): the edit survives
        return [("RecordConflicts", ((DELETED, "remote"),)), ("PullCreate", remote),
                ("SaveBase", remote)]
    if remote is None:
        if base is None:  # new here; a read-only contact cannot be created through the API
            return [] if read_only else [("PushCreate", local), ("SaveBase", local)]
        if same(local, base):  # deleted in the CRM, untouched here
            return [("LocalDelete",)]
        # deleted in the CRM, edited here
        if policy in (REMOTE, NEWEST):
            return [("LocalDelete",), ("RecordConflicts", ((DELETED, "remote"),))]
        if policy == LOCAL and not read_only:
            return [("PushCreate", local), ("SaveBase", local),
                    ("RecordConflicts", ((DELETED, "local"),))]
        return [("RecordConflicts", ((DELETED, "manual"),))]
    # present on both sides: merge field by field
    merged: Fields = {}
    to_local: Fields = {}
    to_remote: Fields = {}
    conflicts: list[tuple[str, str]] = []
    for f in sorted((base or {}).keys() | local.keys() | remote.keys()):
        b = (base or {}).get(f)
        m, tl, tr, res = field_oracle(b, local.get(f), remote.get(f), policy, newer, BOTH)
        merged[f] = m
        if tl is not NOWRITE:
            to_local[f] = tl
        if tr is not NOWRITE:
            to_remote[f] = tr
        if res is not None:
            conflicts.append((f, res))
    acts: list[tuple[Any, ...]] = []
    if read_only and to_remote:  # reported, never sent; the CRM's value stays the agreed one
        acts.append(("ReadOnlyEdit", tuple(sorted(to_remote))))
        merged |= {f: remote.get(f) for f in to_remote}
    if to_local:
        acts.append(("PullUpdate", to_local))
    if to_remote and not read_only:
        acts.append(("PushUpdate", merged, frozenset(to_remote)))
    if conflicts:
        acts.append(("RecordConflicts", tuple(conflicts)))
    if base is None or not same(merged, base):
        acts.append(("SaveBase", merged))
    return acts


PRESENCE_MATRIX = []
for (bid, base_), (lid, local_), (rid, remote_), (pid, pol, newer), ro in itertools.product(
        [("base", BASE), ("no-base", None)], LOCAL_STATES.items(), REMOTE_STATES.items(),
        POLICIES, [False, True]):
    PRESENCE_MATRIX.append(pytest.param(
        base_, local_, remote_, pol, newer, ro,
        id=f"{bid}|L={lid}|R={rid}|{pid}|{'read_only' if ro else 'rw'}"))


@pytest.mark.parametrize(("base", "local", "remote", "policy", "newer", "read_only"),
                         PRESENCE_MATRIX)
def test_plan_contact_presence_matrix(base: Fields | None, local: Fields | None,
                                      remote: Fields | None, policy: Policy, newer: bool | None,
                                      read_only: bool) -> None:
    plan = plan_contact(K, base, local, remote, policy=policy, local_is_newer=newer,
                        read_only=read_only)
    assert plan.key == K
    assert all(a.key == K for a in plan.actions)
    assert [shape(a) for a in plan.actions] == expected_plan(base, local, remote, policy, newer,
                                                             read_only)
    assert plan.is_noop == (not plan.actions)


def test_presence_matrix_is_complete() -> None:
    assert len(PRESENCE_MATRIX) == 2 * 3 * 5 * 6 * 2


# --- hand-written plans for the cases that matter most (full actions, not shapes) -------------

L_EDIT: Fields = {**BASE, EMAIL: "an.nguyen@example.vn"}
R_EDIT: Fields = {**BASE, PHONE: "0912345678"}
BOTH_EDITS: Fields = {**BASE, EMAIL: "an.nguyen@example.vn", PHONE: "0912345678"}
R_CLASH: Fields = {**BASE, EMAIL: "nguyen.an@example.vn"}

PLAN_ROWS: list[tuple[str, Fields | None, Fields | None, Fields | None, dict[str, Any],
                      tuple[object, ...]]] = [
    ("converged", BASE, BASE, BASE, {}, ()),
    ("converged-read-only", BASE, BASE, BASE, {"read_only": True}, ()),
    ("new-in-crm", None, None, BASE, {}, (PullCreate(K, BASE), SaveBase(K, BASE))),
    ("new-in-crm-read-only", None, None, BASE, {"read_only": True},
     (PullCreate(K, BASE), SaveBase(K, BASE))),
    ("new-local-row", None, BASE, None, {}, (PushCreate(K, BASE), SaveBase(K, BASE))),
    ("new-local-row-read-only-is-left-alone", None, BASE, None, {"read_only": True}, ()),
    ("gone-both-sides", BASE, None, None, {}, (DropState(K),)),
    ("never-known-nowhere", None, None, None, {}, ()),
    ("deleted-locally", BASE, None, BASE, {}, (PushDelete(K),)),
    ("deleted-in-crm", BASE, BASE, None, {}, (LocalDelete(K),)),
    ("local-edit", BASE, L_EDIT, BASE, {},
     (PushUpdate(K, L_EDIT, frozenset({EMAIL})), SaveBase(K, L_EDIT))),
    ("crm-edit", BASE, BASE, R_EDIT, {},
     (PullUpdate(K, {PHONE: "0912345678"}), SaveBase(K, R_EDIT))),
    ("edits-on-both-sides-different-fields", BASE, L_EDIT, R_EDIT, {},
     (PullUpdate(K, {PHONE: "0912345678"}), PushUpdate(K, BOTH_EDITS, frozenset({EMAIL})),
      SaveBase(K, BOTH_EDITS))),
    ("same-edit-on-both-sides", BASE, L_EDIT, L_EDIT, {}, (SaveBase(K, L_EDIT),)),
    ("clash-remote-wins", BASE, L_EDIT, R_CLASH, {},
     (PullUpdate(K, {EMAIL: "nguyen.an@example.vn"}),
      RecordConflicts(K, (C(EMAIL, "an@example.vn", "an.nguyen@example.vn",
                            "nguyen.an@example.vn", "remote"),)),
      SaveBase(K, R_CLASH))),
    ("clash-local-wins", BASE, L_EDIT, R_CLASH, {"policy": LOCAL},
     (PushUpdate(K, L_EDIT, frozenset({EMAIL})),
      RecordConflicts(K, (C(EMAIL, "an@example.vn", "an.nguyen@example.vn",
                            "nguyen.an@example.vn", "local"),)),
      SaveBase(K, L_EDIT))),
    ("clash-manual-records-only", BASE, L_EDIT, R_CLASH, {"policy": MANUAL},
     (RecordConflicts(K, (C(EMAIL, "an@example.vn", "an.nguyen@example.vn",
                            "nguyen.an@example.vn", "manual"),)),)),
    ("read-only-local-edit-is-reported-not-sent", BASE, L_EDIT, BASE, {"read_only": True},
     (ReadOnlyEdit(K, (EMAIL,)),)),
    ("read-only-crm-edit-is-pulled", BASE, L_EDIT, R_EDIT, {"read_only": True},
     (ReadOnlyEdit(K, (EMAIL,)), PullUpdate(K, {PHONE: "0912345678"}), SaveBase(K, R_EDIT))),
    ("first-sync-match-equal", None, BASE, BASE, {}, (SaveBase(K, BASE),)),
    ("first-sync-match-fills-in-both-sides", None, {NAME: "An", EMAIL: "an@example.vn"},
     {NAME: "An", PHONE: "0393123456"}, {},
     (PullUpdate(K, {PHONE: "0393123456"}),
      PushUpdate(K, {NAME: "An", EMAIL: "an@example.vn", PHONE: "0393123456"},
                 frozenset({EMAIL})),
      SaveBase(K, {NAME: "An", EMAIL: "an@example.vn", PHONE: "0393123456"}))),
]


@pytest.mark.parametrize(("base", "local", "remote", "kwargs", "actions"),
                         [pytest.param(*r[1:], id=r[0]) for r in PLAN_ROWS])
def test_plan_contact_hand_rows(base: Fields | None, local: Fields | None, remote: Fields | None,
                                kwargs: dict[str, Any], actions: tuple[object, ...]) -> None:
    assert plan_contact(K, base, local, remote, **kwargs) == ContactPlan(K, actions)  # type: ignore[arg-type]


# --- delete vs edit: what the conflict record says -------------------------------------------

@pytest.mark.parametrize("policy", [REMOTE, MANUAL, NEWEST])
def test_delete_vs_edit_marker_names_the_deleting_side_local(policy: Policy) -> None:
    plan = plan_contact(K, BASE, None, R_EDIT, policy=policy)
    [rc] = [a for a in plan.actions if isinstance(a, RecordConflicts)]
    [c] = rc.conflicts
    assert (c.field, c.local, c.remote) == (DELETED, DELETED, None)


@pytest.mark.parametrize("policy", [REMOTE, MANUAL, NEWEST])
def test_delete_vs_edit_marker_names_the_deleting_side_remote(policy: Policy) -> None:
    plan = plan_contact(K, BASE, L_EDIT, None, policy=policy)
    [rc] = [a for a in plan.actions if isinstance(a, RecordConflicts)]
    [c] = rc.conflicts
    assert (c.field, c.local, c.remote) == (DELETED, None, DELETED)


@pytest.mark.parametrize("newer", [True, False, None])
def test_newest_wins_delete_vs_edit_ignores_timestamps(newer: bool | None) -> None:
    """A deletion carries no timestamp: newest_wins behaves as remote_wins (pinned, see report)."""
    assert plan_contact(K, BASE, None, R_EDIT, policy=NEWEST, local_is_newer=newer) == \
        plan_contact(K, BASE, None, R_EDIT, policy=REMOTE)
    assert plan_contact(K, BASE, L_EDIT, None, policy=NEWEST, local_is_newer=newer) == \
        plan_contact(K, BASE, L_EDIT, None, policy=REMOTE)


# --- a field missing from a version counts as None: also for whole-contact comparisons -------

WITH_NONE: Fields = {**BASE, "note": None}

@pytest.mark.parametrize("policy", [
REMOTE, NEWEST, MANUAL, LOCAL])
def test_local_delete_of_untouched_contact_with_none_field(policy: Policy) -> None:
    assert plan_contact(K, WITH_NONE, None, BASE, policy=policy).actions == (PushDelete(K),)
    assert plan_contact(K, BASE, None, WITH_NONE, policy=policy).actions == (PushDelete(K),)


@pytest.mark.parametrize("policy", [REMOTE, NEWEST, MANUAL, LOCAL])
def test_crm_delete_of_untouched_contact_with_none_field(policy: Policy) -> None:
    assert plan_contact(K, BASE, WITH_NONE, None, policy=policy).actions == (LocalDelete(K),)
    assert plan_contact(K, WITH_NONE, BASE, None, policy=policy).actions == (LocalDelete(K),)


def test_none_field_vs_missing_field_is_no_change_when_both_present() -> None:
    plan = plan_contact(K, WITH_NONE, BASE, BASE)
    assert plan.is_noop
    plan = plan_contact(K, BASE, WITH_NONE, BASE)
    assert not any(isinstance(a, PullUpdate | PushUpdate | RecordConflicts) for a in plan.actions)


# --- a field with no agreed value (mapped, re-pointed or re-typed since) ------------------------

JOB = "job_title"


@pytest.mark.parametrize("policy", list(Policy))
@pytest.mark.parametrize("remote_value", [None, "Kế toán trưởng"])
def test_an_unagreed_field_takes_the_crms_value_whatever_the_policy(
        policy: Policy, remote_value: str | None) -> None:
    """A column mapped again holds what it held before it was unmapped: stale. The CRM's
    value is taken (even an agent's clear), and the column's is recorded, never pushed."""
    base = {k: v for k, v in BASE.items() if k != JOB}  # rebased: no agreed job title
    local = {**BASE, JOB: "Kế toán"}
    remote = {**BASE, JOB: remote_value}
    m = merge_fields(base, local, remote, policy=policy, unagreed={JOB})
    assert m.to_local == {JOB: remote_value} and m.to_remote == {}
    assert m.merged[JOB] == remote_value
    assert m.conflicts == (Conflict(JOB, None, "Kế toán", remote_value, "remote"),)
    plan = plan_contact(K, base, local, remote, policy=policy, unagreed={JOB})
    assert not any(isinstance(a, PushUpdate) for a in plan.actions)


def test_an_unagreed_field_an_empty_column_takes_records_nothing() -> None:
    base = {k: v for k, v in BASE.items() if k != JOB}
    m = merge_fields(base, {**BASE, JOB: None}, {**BASE, JOB: "Thợ xây"}, unagreed={JOB})
    assert m.to_local == {JOB: "Thợ xây"} and not m.conflicts and not m.to_remote


def test_an_unagreed_push_only_field_is_sent_from_the_table() -> None:
    base = {k: v for k, v in BASE.items() if k != JOB}
    m = merge_fields(base, {**BASE, JOB: "Kế toán"}, {**BASE, JOB: None}, unagreed={JOB},
                     directions={JOB: Direction.PUSH})
    assert m.to_remote == {JOB: "Kế toán"} and not m.to_local and not m.conflicts


def test_without_unagreed_a_missing_base_field_merges_as_none() -> None:
    """A base that never held the field (not named unagreed): as before, a local value
    against an empty CRM is a local edit, sent."""
    base = {k: v for k, v in BASE.items() if k != JOB}
    m = merge_fields(base, {**BASE, JOB: "Kế toán"}, {**BASE, JOB: None})
    assert m.to_remote == {JOB: "Kế toán"} and not m.to_local


# --- a push never sends the CRM a value it should not get -------------------------------------

def test_push_update_keeps_crm_value_of_manual_conflict_field() -> None:
    local = {**BASE, NAME: "L", EMAIL: "an.nguyen@example.vn"}
    remote = {**BASE, NAME: "R"}
    plan = plan_contact(K, BASE, local, remote, policy=MANUAL)
    [push] = [a for a in plan.actions if isinstance(a, PushUpdate)]
    assert push.changed == {EMAIL}
    assert push.fields[NAME] == "R"


# ================================================================================================
# 3. properties
# ================================================================================================


@st.composite
def versions(draw: st.DrawFn, with_directions: bool = True) -> dict[str, Any]:
    """One contact's three versions, often sharing values so that every branch is reached."""
    base = draw(st.none() | RECORDS)

    def a_side() -> Fields | None:
        kind = draw(st.sampled_from(["absent", "base", "edited", "fresh"]))
        if kind == "absent":
            return None
        if kind in ("base", "edited") and base is not None:
            d = dict(base)
            if kind == "edited":
                d |= draw(st.dictionaries(st.sampled_from(FIELDS), VALUES, min_size=1,
                                          max_size=2))
                for k in draw(st.lists(st.sampled_from(FIELDS), max_size=1)):
                    d.pop(k, None)
            return d
        return draw(RECORDS)

    local, remote = a_side(), a_side()
    if draw(st.booleans()) and local is not None and remote is None and base is not None:
        remote = dict(local)  # both sides made the same edit
    _, policy, newer = draw(st.sampled_from(POLICIES))
    # fields whose mapping changed since the base was agreed: the rebased base lacks them
    unagreed = frozenset(draw(st.lists(st.sampled_from(FIELDS), max_size=2))
                         if base is not None else ())
    if base is not None:
        base = {k: v for k, v in base.items() if k not in unagreed}
    return dict(base=base, local=local, remote=remote, policy=policy, local_is_newer=newer,
                read_only=draw(st.booleans()), unagreed=unagreed,
                directions=draw(DIRECTIONS) if with_directions else {})


def plan_of(v: dict[str, Any]) -> ContactPlan:
    return plan_contact(K, v["base"], v["local"], v["remote"], policy=v["policy"],
                        directions=v["directions"], local_is_newer=v["local_is_newer"],
                        read_only=v["read_only"], unagreed=v.get("unagreed", ()))


DROPPED = "dropped"


def run(plan: ContactPlan, base: Fields | None, local: Fields | None, remote: Fields | None
        ) -> tuple[Fields | None, Fields | None, Fields | None]:
    """Carry a plan out on plain dicts, as the engine does. A delete (with its tombstone) or a
    DropState also forgets the contact's bookkeeping."""
    for a in plan.actions:
        if isinstance(a, PullCreate):
            assert local is None
            local = dict(a.fields)
        elif isinstance(a, PullUpdate):
            assert local is not None
            local = {**local, **a.changes}
        elif isinstance(a, LocalDelete):
            assert local is not None
            local = None
            base = None
        elif isinstance(a, PushCreate):
            assert remote is None
            remote = dict(a.fields)
        elif isinstance(a, PushUpdate):
            assert remote is not None
            remote = {**remote, **a.fields}  # the merged contact is sent whole
        elif isinstance(a, PushDelete):
            assert remote is not None
            remote = None
            base = None
        elif isinstance(a, SaveBase):
            base = dict(a.fields)
        elif isinstance(a, DropState):
            base = None
    return base, local, remote


def has_manual(plan: ContactPlan) -> bool:
    return any(c.resolution == "manual" for a in plan.actions if isinstance(a, RecordConflicts)
               for c in a.conflicts)


SETTINGS = settings(max_examples=150, deadline=None)


@SETTINGS
@given(versions())
def test_convergence(v: dict[str, Any]) -> None:
    """Without a manual conflict and on a writable contact, one cycle makes both sides equal
    to the saved base."""
    plan = plan_of(v)
    if v["read_only"] or has_manual(plan):
        return
    base, local, remote = run(plan, v["base"], v["local"], v["remote"])
    assert same(local, remote)
    saves = [a for a in plan.actions if isinstance(a, SaveBase)]
    if saves:
        assert same(local, saves[-1].fields)
    if local is not None:
        assert same(base, local)  # what is agreed is what both sides hold


@SETTINGS
@given(versions())
def test_second_cycle_after_convergence_does_nothing(v: dict[str, Any]) -> None:
    plan = plan_of(v)
    if v["read_only"] or has_manual(plan):
        return
    base, local, remote = run(plan, v["base"], v["local"], v["remote"])
    again = plan_contact(K, base, local, remote, policy=v["policy"], directions=v["directions"],
                         local_is_newer=v["local_is_newer"], read_only=v["read_only"])
    assert again.is_noop, again


@SETTINGS
@given(RECORDS, st.sampled_from(POLICIES), DIRECTIONS, st.booleans())
def test_plan_of_agreed_versions_is_a_noop(m: Fields, pol: tuple[str, Policy, bool | None],
                                           directions: dict[str, Direction],
                                           read_only: bool) -> None:
    _, policy, newer = pol
    plan = plan_contact(K, m, dict(m), dict(m), policy=policy, directions=directions,
                        local_is_newer=newer, read_only=read_only)
    assert plan.is_noop


@SETTINGS
@given(versions(with_directions=False))
def test_nothing_is_lost_without_a_tombstone_or_a_conflict(v: dict[str, Any]) -> None:
    """Every value a side changed since the base either survives on some side, or the plan
    deletes that side (a tombstone keeps it), or a conflict records it."""
    plan = plan_of(v)
    base = v["base"]
    _, local_after, remote_after = run(plan, base, v["local"], v["remote"])
    conflicted = {c.field for a in plan.actions if isinstance(a, RecordConflicts)
                  for c in a.conflicts}
    for name, before, delete_type in (("local", v["local"], LocalDelete),
                                      ("remote", v["remote"], PushDelete)):
        if before is None:
            continue
        tombstoned = any(isinstance(a, delete_type) for a in plan.actions)
        for f in before.keys() | (base or {}).keys():
            value = before.get(f)
            if value == (base or {}).get(f):
                continue  # not an edit of this side
            kept = any(s is not None and s.get(f) == value for s in (local_after, remote_after))
            assert kept or tombstoned or f in conflicted or DELETED in conflicted, (name, f)


@SETTINGS
@given(versions())
def test_writes_only_where_the_target_differs(v: dict[str, Any]) -> None:
    for a in plan_of(v).actions:
        if isinstance(a, PullUpdate):
            assert a.changes
            assert all(v["local"].get(k) != x for k, x in a.changes.items())
        if isinstance(a, PushUpdate):
            assert a.changed
            assert all(v["remote"].get(k) != a.fields.get(k) for k in a.changed)


@SETTINGS
@given(versions())
def test_read_only_never_writes_the_crm(v: dict[str, Any]) -> None:
    v["read_only"] = True
    acts = plan_of(v).actions
    assert not any(isinstance(a, PushCreate | PushUpdate) for a in acts)


@SETTINGS
@given(versions())
@example({"base": {NAME: "a"}, "local": {NAME: "b", EMAIL: "c"}, "remote": {NAME: "c"},
          "policy": MANUAL, "local_is_newer": None, "read_only": False, "directions": {}})
def test_push_update_changes_nothing_it_does_not_name(v: dict[str, Any]) -> None:
    for a in plan_of(v).actions:
        if isinstance(a, PushUpdate):
            unnamed = (a.fields.keys() | v["remote"].keys()) - a.changed
            assert all(a.fields.get(k) == v["remote"].get(k) for k in unnamed)


# ================================================================================================
# 4. the delete guard
# ================================================================================================

GUARD_ROWS = [
    # (n_deletions, n_known, max_fraction, allowed)
    (0, 0, 0.1, True),  # nothing to delete: always fine
    (0, 100, 0.0, True),
    (0, 10, 0.1, True),
    (-1, 10, 0.1, True),
    (1, 0, 0.5, False),  # deletions out of nothing known: an API hiccup, refuse
    (5, 0, 1.0, False),
    (1, 1, 0.1, True),  # one deletion is always allowed, so a small table can still delete
    (1, 3, 0.1, True),
    (1, 1000, 0.0, True),
    (2, 3, 0.5, False),
    (2, 10, 0.1, False),
    (1, 10, 0.1, True),
    (2, 19, 0.1, False),  # 2/19 > 0.1
    (2, 20, 0.1, True),  # exactly the fraction
    (10, 100, 0.1, True),
    (11, 100, 0.1, False),
    (50, 100, 0.5, True),
    (51, 100, 0.5, False),
    (100, 100, 1.0, True),
    (101, 100, 1.0, False),
    (100, 100, 0.99, False),  # an empty listing of a big table
    (100_000, 100_000, 0.1, False),
]

@pytest.mark.parametrize(("n", "known", "fraction", "allowed"), [
    *[pytest.param(*r, id=f"{r[0]}of{r[1]}@{r[2]}") for r in GUARD_ROWS],
    pytest.param(29, 100, 0.29, True, id="29of100@0.29"),
    pytest.param(57, 100, 0.57, True, id="57of100@0.57"),
    pytest.param(30, 100, 0.29, False, id="30of100@0.29"),
])
def test_deletions_allowed(n: int, known: int, fraction: float, allowed: bool) -> None:
    assert deletions_allowed(n, known, fraction) is allowed


@given(st.integers(0, 2000), st.integers(0, 2000), st.integers(0, 100))
@example(29, 100, 29)
def test_deletions_allowed_is_exactly_the_fraction(n: int, known: int, percent: int) -> None:
    fraction = percent / 100
    if n <= 0:
        want = True
    elif known <= 0:
        want = False
    else:
        want = n <= 1 or Fraction(n, known) <= Fraction(percent, 100)
    assert deletions_allowed(n, known, fraction) is want


@given(st.integers(1, 5000), st.integers(1, 5000), st.floats(0, 1))
def test_deletions_allowed_is_monotone(n: int, known: int, fraction: float) -> None:
    if deletions_allowed(n, known, fraction):
        assert deletions_allowed(n - 1, known, fraction)
        assert deletions_allowed(n, known + 1, fraction)
        assert deletions_allowed(n, known, min(1.0, fraction + 0.01))
