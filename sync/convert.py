"""Conversions between local rows, CRM contacts and canonical Fields, driven by a mapping.

Pure: no I/O. Both sides are projected onto the same canonical Fields so that the merge
compares like with like, and a value that round-trips is never seen as a change.

Field names: a standard field by its name (`phone`), a mapped custom field `custom:<label>`,
a dynamic attribute `dynamic:<field_code>`, a custom field no column claims (kept in the JSON
column) `custom_fields:<label>`, and `@mapping`: a fingerprint of the mapping, equal on both
sides, which the agreed base keeps so that `rebase` can tell which fields the mapping changed
since (their recorded base is dropped: a new or re-pointed column is pulled, never pushed empty).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import replace
from hashlib import blake2b
from operator import attrgetter
from typing import Any

from sync import transform as tf
from sync.mapping import FieldMap, MappingSpec
from sync.merge import Direction
from sync.record import (
    GENDERS,
    Contact,
    CustomEntry,
    DynamicValue,
    Fields,
    FieldValue,
    Item,
    norm_text,
)
from sync.scalars import literal, round_to_scale, to_crm_text
from sync.transform import from_crm as canon

__all__ = ["CRM_KEY_PREFIX", "EXTRA_PREFIX", "MAPPING_KEY", "MAX_KEY_LENGTH", "Converter",
           "RowError", "canon", "key_problem", "validate_for_push"]

DEFAULT_KIND = "personal"
EXTRA_PREFIX = "custom_fields:"  # an unclaimed custom field, kept in the JSON column
MAPPING_KEY = "@mapping"
CRM_KEY_PREFIX = "crm:"  # the local key of a contact without a refId: crm:<public_id>
MAX_KEY_LENGTH = 255  # what sync_state.key holds


class RowError(ValueError):
    """Values that cannot be converted; the message names each column (or the CRM field), its
    problems joined with "; "."""


def _digest(*parts: object) -> str:  # 32 bits: compared only against a handful of others
    return blake2b(repr(parts).encode(), digest_size=4).hexdigest()


class Converter:
    """Applies one MappingSpec. Build once per cycle; the methods are hot."""

    def __init__(self, spec: MappingSpec, scales: Mapping[str, int] | None = None):
        """`scales`: number columns that keep only so many decimals (an adopted PostgreSQL
        table's NUMERIC(p,s) or INTEGER, `store.adoption.column_scales`): the CRM's values of
        their fields are read rounded as the column stores them, so that a pulled row is as
        agreed and the CRM's decimals are kept until the field is edited locally."""
        self.spec = spec
        self.fields = spec.fields
        self.claimed = spec.claimed_custom
        self.extra_col = spec.custom_fields_column
        self._by_name = {f.name: f for f in spec.fields}
        self._pushes = spec.direction is not Direction.PULL
        self.scales: dict[str, int] = {
            f.column: scales[f.column] for f in spec.fields
            if scales and f.column in scales and f.column_type == "number"}
        # fields whose column may refuse a CRM value: checked on the way in, per contact
        self._fit = frozenset(f.name for f in spec.fields if (
            f.values and f.column_type != "text") or (f.is_list and f.format == "delimited"))
        sigs = {f.name: _digest(f.name, f.model_dump(exclude={"direction"}))
                for f in spec.fields}
        if spec.ref_code_column:
            sigs["ref_code"] = _digest("ref_code", spec.ref_code_column)
        if self.extra_col:
            sigs[EXTRA_PREFIX] = _digest(EXTRA_PREFIX, self.extra_col)
        self._sigs = sigs
        self._mapped = frozenset(sigs) - {EXTRA_PREFIX}
        self._pull = tuple((f, f.name, _getter(f), _wire_canonical(f) and f.name not in self._fit,
                            f.name in self._fit, self.scales.get(f.column))
                           for f in spec.fields)
        self._rounded = {name: (f, get, scale) for f, name, get, _, _, scale in self._pull
                         if scale is not None}
        # to_column returns a str value of these fields as it is, and None as None: no value
        # map, no list, no phone format to apply, no default to put in
        self._push = tuple((f, f.name, f.column, not f.values and not f.is_list
                            and f.kind != "phone" and f.default is None) for f in spec.fields)
        self.signature: frozenset[str] = frozenset(sigs.values())
        # a row's fingerprint covers these columns, salted with this mapping (store/local.py):
        # a digest of its signature, not the signature itself, which repeated 190 bytes in
        # every row's stored fingerprint (a store salted that way re-reads each row once)
        self.row_columns = tuple(spec.columns)
        self.row_salt = blake2b(repr(sorted(self.signature)).encode(), digest_size=8).hexdigest()

    # --- local row -> canonical ---------------------------------------------------------------

    def row_fields(self, row: Mapping[str, Any]) -> Fields:
        """The row's canonical Fields. A row that does not read raises RowError naming every
        column that cannot be read and, when the table pushes, what the CRM would refuse of
        the columns that can: the user fixes the row once, not one problem a cycle."""
        out, problems = self._read_row(row)
        if problems:
            if self._pushes:  # a field left out (unread, or no column) is not said empty
                problems += [self._problem(check, row) for check in _push_checks(out, None)
                             if check[0] in out]
            raise RowError("; ".join(problems))
        return out

    def _read_row(self, row: Mapping[str, Any]) -> tuple[Fields, list[str]]:
        """The fields of the columns that read, and a problem for each column that does not."""
        out: Fields = {MAPPING_KEY: self.signature}
        problems: list[str] = []
        for f in self.fields:
            try:
                out[f.name] = tf.from_column(f, row.get(f.column))
            except (ValueError, TypeError) as exc:
                problems.append(f"column {f.column!r}: {exc}")
        spec = self.spec
        if spec.ref_code_column:
            out["ref_code"] = norm_text(row.get(spec.ref_code_column))
        if self.extra_col:
            extra, bad = self._read_extra(row)
            problems += bad
            for label, value in extra.items():
                out[EXTRA_PREFIX + label] = value
        return out, problems

    def _extra(self, row: Mapping[str, Any]) -> dict[str, str]:
        """The JSON column's unclaimed labels, normalised (claimed ones are ignored)."""
        extra, problems = self._read_extra(row)
        if problems:
            raise RowError("; ".join(problems))
        return extra

    def _read_extra(self, row: Mapping[str, Any]) -> tuple[dict[str, str], list[str]]:
        """`_extra`, and a problem for each label that holds no plain value (every one: the
        user fixes them at once)."""
        col = str(self.extra_col)
        try:
            data = tf.json_object(row.get(col))
        except ValueError as exc:
            return {}, [f"column {col!r}: {exc}"]
        out: dict[str, str] = {}
        problems: list[str] = []
        for label, value in data.items():
            key = norm_text(label)
            if isinstance(value, dict | list):
                problems.append(f"column {col!r}: {label!r} holds a {type(value).__name__}, "
                                "not a plain value")
                continue
            text = literal(value)
            if key and key not in self.claimed and text is not None and key not in out:
                out[key] = text
        return out, problems

    # --- canonical -> local row ---------------------------------------------------------------

    def row_values(self, fields: Mapping[str, FieldValue],
                   row: Mapping[str, Any] | None = None) -> dict[str, Any]:
        """Column values for the fields present in `fields`: a full record, or just changes.

        With changes, give the row they apply to: its JSON column keeps the unclaimed custom
        fields the changes do not mention.
        """
        out: dict[str, Any] = {}
        for f, name, column, plain in self._push:
            if name in fields:
                value = fields[name]
                if plain and (value is None or type(value) is str):
                    out[column] = value  # what to_column gives such a field's text or None
                    continue
                try:
                    out[column] = tf.to_column(f, value)
                except (ValueError, TypeError) as exc:
                    raise RowError(f"column {column!r}: {exc}") from None
        spec = self.spec
        if spec.ref_code_column and "ref_code" in fields:
            out[spec.ref_code_column] = fields["ref_code"]
        changed = {k[len(EXTRA_PREFIX):]: v for k, v in fields.items()
                   if k.startswith(EXTRA_PREFIX)}
        full = MAPPING_KEY in fields  # a whole record replaces the JSON object
        if self.extra_col and (changed or full or self._stale(row)):
            extra: dict[str, Any] = {} if full or row is None else dict(self._extra(row))
            for label, v in changed.items():
                if v is None:
                    extra.pop(label, None)
                elif label not in self.claimed:
                    extra[label] = to_crm_text(v)
            out[self.extra_col] = dict(sorted(extra.items())) or None
        return out

    def claimed_in_json(self, row: Mapping[str, Any]) -> list[str]:
        """Labels the row's JSON column holds that a column claims: ignored there (the
        column's value is the field's), which an app writing them should hear of."""
        if not self.extra_col or not self.claimed:
            return []
        try:
            data = tf.json_object(row.get(self.extra_col))
        except ValueError:
            return []
        return sorted({k for k in map(norm_text, data) if k in self.claimed})

    def _stale(self, row: Mapping[str, Any] | None) -> bool:
        """Does the row's JSON column still hold a label a column now claims?"""
        return row is not None and bool(self.claimed_in_json(row))

    # --- CRM contact -> canonical ---------------------------------------------------------------

    def remote_fields(self, c: Contact, *, fallback: Mapping[str, FieldValue] | None = None,
                      unfit: list[str] | None = None) -> Fields:
        """`c` as the merge compares it. A value its column cannot hold raises RowError, unless
        `fallback` (e.g. the agreed base) has a value for that field: it is taken instead, and
        the field's name appended to `unfit`."""
        out: Fields = {MAPPING_KEY: self.signature}
        wire = c.from_wire
        for f, name, get, wire_canonical, fit, scale in self._pull:
            value = get(c)
            if wire and wire_canonical:
                # canonical already (see _WIRE_KINDS); an empty tag set is no value
                out[name] = value or None  # type: ignore[assignment]
                continue
            try:
                out[name] = v = canon(f, value)
                if scale is not None and isinstance(v, float):
                    out[name] = v = _held(f, scale, v)
                if fit:
                    tf.to_column(f, v)
            except (ValueError, TypeError) as exc:
                if fallback is not None and name in fallback:
                    out[name] = fallback[name]
                    if unfit is not None:
                        unfit.append(name)
                    continue
                raise RowError(f"the CRM's {f.source} ({value!r}) does not fit column "
                               f"{f.column!r}: {exc}") from None
        if self.spec.ref_code_column:
            out["ref_code"] = c.ref_code
        if self.extra_col:
            for entry in c.custom:
                name = EXTRA_PREFIX + entry.label
                if entry.label not in self.claimed and name not in out:
                    out[name] = entry.value if wire else norm_text(entry.value)
        return out

    # --- the agreed base, seen through the current mapping --------------------------------------

    def rebase(self, base: Fields) -> Fields:
        """`base` without what the current mapping does not produce (fields no longer mapped,
        custom fields removed) nor what it produces differently since the base was recorded
        (a new, re-pointed or re-typed column): for those, the base was never recorded, so
        the merge pulls the CRM's value instead of pushing an empty column."""
        old = base.get(MAPPING_KEY)
        # a base recorded before fingerprints existed is trusted as is
        known = old if isinstance(old, frozenset) else self.signature
        sigs = self._sigs
        out: Fields = {}
        for name, value in base.items():
            if name == MAPPING_KEY:
                out[name] = value
                continue
            sig = sigs.get(EXTRA_PREFIX if name.startswith(EXTRA_PREFIX) else name)
            if sig is not None and sig in known and (value is not None
                                                     or not name.startswith(EXTRA_PREFIX)):
                out[name] = value
        # a number column that rounds holds the base as rounded now: a base recorded at
        # another scale (or before scales were read) is compared as the column holds it, so
        # that neither the column's re-rounding nor the CRM's decimals read as an edit
        for name, (f, _, scale) in self._rounded.items():
            if isinstance(value := out.get(name), float):
                out[name] = _held(f, scale, value)
        return out

    def unagreed(self, base: Fields) -> frozenset[str]:
        """The mapped fields `rebase`'s result holds no agreed value for (mapped, re-pointed
        or re-typed since it was agreed): the merge takes the CRM's (`merge_fields`)."""
        return self._mapped - base.keys()

    # --- canonical -> CRM contact to push -------------------------------------------------------

    def to_contact(self, ref_id: str | None, fields: Fields, previous: Contact | None) -> Contact:
        """The contact to send: `previous` (the CRM's last version) with the mapped fields set.

        What the mapping does not cover (a second phone, unmapped custom entries, dynamic
        attributes) is carried over from `previous`, because update replaces whole lists.
        """
        c = previous or Contact(ref_id=ref_id)
        changes: dict[str, Any] = {"ref_id": ref_id or c.ref_id}
        custom = list(c.custom)
        dynamic = dict(c.dynamic)
        for f in self.fields:
            if f.name not in fields:
                continue
            v = fields[f.name]
            if previous is not None and f.name in self._rounded and self._rounds_to(
                    f, previous, v):
                continue  # the CRM's own decimals, which the column holds rounded: kept
            if f.custom is not None:
                _set_custom(custom, f.custom, None if v is None else to_crm_text(v))
            elif f.dynamic is not None:
                vals = (() if v is None else tuple(sorted(v)) if isinstance(v, frozenset)
                        else (to_crm_text(v),))
                dynamic[f.dynamic] = DynamicValue(str(f.field_type), vals)
            elif f.field in ("phone", "email"):
                key = "phones" if f.field == "phone" else "emails"
                changes[key] = _set_first(changes.get(key, getattr(c, key)), v)
            elif f.field in ("phones", "emails"):
                assert isinstance(v, tuple | type(None))
                changes[str(f.field)] = _set_all(getattr(c, str(f.field)), v or ())
            elif f.field == "tags":
                changes["tags"] = v or frozenset()
            else:
                changes[str(f.field)] = v
        if self.spec.ref_code_column and "ref_code" in fields:
            changes["ref_code"] = fields["ref_code"]
        if self.extra_col:
            known = {n[len(EXTRA_PREFIX):]: v for n, v in fields.items()
                     if n.startswith(EXTRA_PREFIX)}
            for label, v in known.items():
                if label not in self.claimed:
                    _set_custom(custom, label, None if v is None else to_crm_text(v))
            # labels the table dropped from its JSON column are removed in the CRM too
            custom = [e for e in custom if e.label in self.claimed or e.label in known]
        return replace(c, **changes, custom=tuple(custom), dynamic=dynamic, digest=None,
                       from_wire=False)

    # --- what the CRM would refuse ----------------------------------------------------------------

    def push_problems(self, fields: Fields, row: Mapping[str, Any] | None = None,
                      crm: Contact | None = None) -> list[str]:
        """`validate_for_push`, in the user's words: a value the row holds is named by its
        column, as the column holds it (`column 'sdt': '12-34' is not a phone number`, not
        the normalised `1234`); the others by their field."""
        return [self._problem(check, row) for check in _push_checks(fields, crm)]

    def _problem(self, check: _Check, row: Mapping[str, Any] | None) -> str:
        name, value, why = check
        f = self._by_name.get(name)
        if f is None and value is None:
            return f"{name} is empty: {why}, and the mapping gives it no column"
        if f is None or row is None:
            return _field_problem(check)
        raw = self._held_as(f, value, row)
        if raw is _NOT_HELD:  # a value the merge took from the CRM
            return f"the CRM's {_field_problem(check)}"
        if value is None:
            return f"column {f.column!r} is empty: {why}"
        return f"column {f.column!r}: {raw!r} {why}"

    @staticmethod
    def _held_as(f: FieldMap, value: FieldValue, row: Mapping[str, Any]) -> object:
        """What `row`'s column of `f` holds that reads as `value` (one item of a list), or
        _NOT_HELD when it holds no such thing."""
        raw = row.get(f.column)
        try:
            if f.is_list:
                return tf.column_items(f, raw).get(value, _NOT_HELD)
            return raw if tf.from_column(f, raw) == value else _NOT_HELD
        except (ValueError, TypeError):
            return _NOT_HELD

    def _rounds_to(self, f: FieldMap, c: Contact, value: FieldValue) -> bool:
        _, get, scale = self._rounded[f.name]
        try:
            crm = canon(f, get(c))
        except (ValueError, TypeError):
            return False
        return isinstance(crm, float) and _held(f, scale, crm) == value


def _held(f: FieldMap, scale: int, value: float) -> FieldValue:
    """A number as a column of this scale holds it; the field's default reads as no value,
    rounded or not (as from_crm reads it)."""
    held = round_to_scale(value, scale)
    return None if held == f.canonical_default else held


# The kind of value the adapter already makes of each standard field when it reads the wire
# (sync.api.adapter.contact_from_wire): norm_text, norm_multiline, norm_phone (the first phone),
# norm_email, parse_date, norm_gender with the Vietnamese words read, a set of norm_text-ed
# tags. Each normaliser is idempotent, so canon() of such a value is itself (an empty set
# aside, which canon() makes None).
_WIRE_KINDS: Mapping[str, str] = {
    "full_name": "text", "address": "text", "job_title": "text", "passport": "text",
    "note": "multiline", "phone": "phone", "email": "email", "owner_email": "email",
    "birthday": "date", "gender": "gender", "tags": "set"}


def _wire_canonical(f: FieldMap) -> bool:
    """Is a wire-read Contact's value for `f` already canonical? Only where canon() would apply
    just the adapter's normaliser: no value map, no default, the kind the adapter reads it as
    (a custom entry's value is norm_text-ed), and no check that the column can take it (a
    delimited list). Dynamic attributes are not: the adapter normalises them by the CRM's
    field_type, the mapping by its own."""
    if f.values or f.default is not None or f.dynamic is not None:
        return False
    if f.custom is not None:
        return f.kind == "text"
    return f.field is not None and _WIRE_KINDS.get(f.field) == f.kind


def _getter(f: FieldMap) -> Callable[[Contact], object]:
    """The value `f` reads from a Contact, as the CRM holds it."""
    if f.custom is not None:
        label = f.custom
        return lambda c: next((e.value for e in c.custom if e.label == label), None)
    if f.dynamic is not None:
        code, is_list = f.dynamic, f.is_list

        def dynamic(c: Contact) -> object:
            dv = c.dynamic.get(code)
            if dv is None:
                return None
            return list(dv.values) if is_list else (dv.values[0] if dv.values else None)
        return dynamic
    name = str(f.field)
    if name in ("phone", "email"):
        many = "phones" if name == "phone" else "emails"
        return lambda c: (items[0].value if (items := getattr(c, many)) else None)
    if name in ("phones", "emails"):
        return lambda c: [i.value for i in getattr(c, name)]
    return attrgetter(name)


def _set_custom(custom: list[CustomEntry], label: str, value: str | None) -> None:
    """Set (or remove, for None) the first entry with `label`, keeping its place and key."""
    at = next((i for i, e in enumerate(custom) if e.label == label), None)
    if value is None:
        if at is not None:
            del custom[at]
    elif at is None:
        custom.append(CustomEntry(label, value))
    elif custom[at].value != value:
        custom[at] = CustomEntry(label, value, custom[at].key)


def _set_first(items: tuple[Item, ...], v: FieldValue) -> tuple[Item, ...]:
    rest = tuple(i for i in items[1:] if i.value != v)
    if v is None:
        return rest
    kind = items[0].kind if items else DEFAULT_KIND
    return (Item(str(v), kind), *rest)


def _set_all(items: tuple[Item, ...], values: tuple[str, ...]) -> tuple[Item, ...]:
    kinds = {i.value: i.kind for i in items}
    return tuple(Item(v, kinds.get(v, DEFAULT_KIND)) for v in values)


_EMAIL = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s]+$")
_PHONE = re.compile(r"^\+?\d{8,15}$")


def key_problem(key: str, column: str) -> str | None:
    """Why a new row's key cannot become a contact's refId, or None. The CRM's listing shows
    a refId trimmed, with runs of spaces collapsed: a key not already in that form would
    never be recognised as the contact it created, and every re-send would be another
    contact."""
    if key.startswith(CRM_KEY_PREFIX):
        return (f"{column} {key!r}: keys starting with {CRM_KEY_PREFIX!r} are crm-sync's own, "
                "for contacts made in the CRM without a refId; give the row a key of its own")
    if len(key) > MAX_KEY_LENGTH:
        return (f"{column} {key[:40]!r}...: {len(key)} characters, more than the "
                f"{MAX_KEY_LENGTH} crm-sync's bookkeeping keeps for a key")
    if norm_text(key) != key:
        return (f"{column} {key!r} cannot be a refId: the CRM trims it and collapses its "
                "spaces (blank, leading, trailing or repeated spaces, or control characters)")
    return None


def validate_for_push(fields: Fields, crm: Contact | None = None) -> list[str]:
    """What the CRM would refuse or silently drop; each problem names the field
    (`Converter.push_problems` names the row's columns). `crm`: the CRM's copy an update is
    made from, whose name goes with it when the mapping has none."""
    return [_field_problem(check) for check in _push_checks(fields, crm)]


# (field, the value refused, an item of a list; None: the field has none, why)
_Check = tuple[str, FieldValue, str]
_NOT_HELD = object()  # a refused value the row does not hold
_ITEM_NAME = {"emails": "email", "phones": "phone"}
_NOT_A = {"email": "is not an email address", "owner_email": "is not an email address",
          "emails": "is not an email address", "phone": "is not a phone number",
          "phones": "is not a phone number"}


def _push_checks(fields: Fields, crm: Contact | None) -> list[_Check]:
    name = fields.get("full_name") if "full_name" in fields or crm is None else crm.full_name
    checks: list[_Check] = [] if name else [("full_name", None, "the CRM requires a name")]
    for field, why in _NOT_A.items():
        pattern = _PHONE if field.startswith("phone") else _EMAIL
        value = fields.get(field)
        checks += [(field, v, why) for v in (value if isinstance(value, tuple) else (value,))
                   if isinstance(v, str) and not pattern.match(v)]
    gender = fields.get("gender")
    if gender is not None and gender not in GENDERS:
        checks.append(("gender", gender, "is not male, female or other (map the column's "
                                         "words with `values:` in the mapping)"))
    return checks


def _field_problem(check: _Check) -> str:
    name, value, why = check
    if value is None:
        return f"{name} is empty: {why}"
    return f"{_ITEM_NAME.get(name, name)} {value!r} {why}"
