"""Conversions between local rows, CRM contacts and canonical Fields, driven by a mapping.

Pure: no I/O. Both sides are projected onto the same canonical Fields so that the merge
compares like with like, and a value that round-trips is never seen as a change.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Mapping
from dataclasses import replace
from datetime import date, datetime
from typing import Any

from sync.mapping import FieldMap, MappingSpec
from sync.record import (
    CUSTOM_PREFIX,
    Contact,
    CustomEntry,
    DynamicValue,
    Fields,
    FieldValue,
    Item,
    norm_email,
    norm_gender,
    norm_multiline,
    norm_phone,
    norm_tags,
    norm_text,
    parse_date,
)

DEFAULT_KIND = "personal"


class RowError(ValueError):
    """A local value that cannot be converted; the message names the column."""


def _norm_number(value: object) -> str | None:
    text = norm_text(value)
    if text is None:
        return None
    try:
        num = float(text.replace(",", "."))
    except ValueError:
        return text
    return str(int(num)) if num.is_integer() else repr(num)


def canon(f: FieldMap, value: object) -> FieldValue:
    """A value in the CRM's vocabulary to its canonical form for field `f`."""
    name = f.field or ""
    if f.is_list:
        items: Iterable[object] = (
            () if value is None else value if isinstance(value, list | tuple | set | frozenset)
            else [value])
        if name in ("phones", "emails"):
            norm = norm_phone if name == "phones" else norm_email
            return tuple(dict.fromkeys(v for v in (norm(i) for i in items) if v))
        return norm_tags(items)
    if value is None or value == "":
        return None
    if f.is_date:
        return parse_date(value)
    if name == "phone":
        return norm_phone(value)
    if name in ("email", "owner_email"):
        return norm_email(value)
    if name == "gender":
        return norm_gender(value)
    if name == "note" or f.field_type == "multi_text":
        return norm_multiline(value)
    if f.field_type == "number":
        return _norm_number(value)
    return norm_text(value)


class Converter:
    """Applies one MappingSpec. Build once per cycle; the methods are hot."""

    def __init__(self, spec: MappingSpec):
        self.spec = spec
        self.fields = spec.fields
        self.claimed = spec.claimed_custom
        self._reverse = {f.name: {v: k for k, v in f.values.items()} for f in spec.fields}

    # --- local row -> canonical ---------------------------------------------------------------

    def row_fields(self, row: Mapping[str, Any]) -> Fields:
        out: Fields = {}
        for f in self.fields:
            raw = row.get(f.column)
            try:
                out[f.name] = canon(f, self._from_column(f, raw))
            except (ValueError, TypeError) as exc:
                raise RowError(f"column {f.column!r}: {exc}") from None
        spec = self.spec
        if spec.ref_code_column:
            out["ref_code"] = norm_text(row.get(spec.ref_code_column))
        if spec.custom_fields_column:
            extra = _json(row.get(spec.custom_fields_column))
            if extra is not None and not isinstance(extra, dict):
                raise RowError(f"column {spec.custom_fields_column!r}: not a JSON object")
            for label, value in (extra or {}).items():
                key = norm_text(label)
                if key and key not in self.claimed:
                    out[CUSTOM_PREFIX + key] = norm_text(value)
        return out

    def _from_column(self, f: FieldMap, raw: object) -> object:
        if raw is None or raw == "":
            return f.default
        if f.is_list:
            if f.format == "delimited" and isinstance(raw, str):
                return [p for p in raw.split(f.separator)]
            return _json(raw)
        if f.is_date and isinstance(raw, str) and f.column_type == "text":
            return datetime.strptime(raw.strip(), f.date_format).date()
        if isinstance(raw, bool | int | float) and not f.is_date:
            raw = str(raw).lower() if isinstance(raw, bool) else str(raw)
        if f.values:
            return f.values.get(str(raw), raw)
        return raw

    # --- canonical -> local row ---------------------------------------------------------------

    def row_values(self, fields: Mapping[str, FieldValue]) -> dict[str, Any]:
        """Column values for the fields present in `fields` (a full record or just changes)."""
        out: dict[str, Any] = {}
        for f in self.fields:
            if f.name in fields:
                out[f.column] = self._to_column(f, fields[f.name])
        spec = self.spec
        if spec.ref_code_column and "ref_code" in fields:
            out[spec.ref_code_column] = fields["ref_code"]
        if spec.custom_fields_column and any(k.startswith(CUSTOM_PREFIX) for k in fields):
            extra = {k[len(CUSTOM_PREFIX):]: v for k, v in sorted(fields.items())
                     if k.startswith(CUSTOM_PREFIX) and k[len(CUSTOM_PREFIX):] not in self.claimed
                     and v is not None}
            out[spec.custom_fields_column] = extra or None
        return out

    def _to_column(self, f: FieldMap, value: FieldValue) -> Any:
        if value is None or value == frozenset() or value == ():
            return None
        if isinstance(value, frozenset | tuple):
            items = sorted(value) if isinstance(value, frozenset) else list(value)
            return f.separator.join(items) if f.format == "delimited" else items
        if isinstance(value, date):
            return value if f.column_type == "date" else value.strftime(f.date_format)
        value = self._reverse[f.name].get(str(value), value)
        kind = f.column_type
        try:
            if kind == "integer":
                return int(float(str(value)))
            if kind == "number":
                return float(str(value))
            if kind == "boolean":
                return str(value).lower() in ("1", "true", "yes", "on", "có")
        except ValueError:
            raise RowError(f"column {f.column!r}: CRM value {value!r} is not a {kind}") from None
        return value

    # --- CRM contact -> canonical ---------------------------------------------------------------

    def remote_fields(self, c: Contact) -> Fields:
        out: Fields = {}
        for f in self.fields:
            out[f.name] = canon(f, self._from_contact(f, c))
        if self.spec.ref_code_column:
            out["ref_code"] = c.ref_code
        if self.spec.custom_fields_column:
            for entry in c.custom:
                name = CUSTOM_PREFIX + entry.label
                if entry.label not in self.claimed and name not in out:
                    out[name] = norm_text(entry.value)
        return out

    @staticmethod
    def _from_contact(f: FieldMap, c: Contact) -> object:
        if f.custom:
            return next((e.value for e in c.custom if e.label == f.custom), None)
        if f.dynamic:
            dv = c.dynamic.get(f.dynamic)
            if dv is None:
                return None
            return list(dv.values) if f.is_list else (dv.values[0] if dv.values else None)
        name = f.field
        if name in ("phone", "email"):
            items = c.phones if name == "phone" else c.emails
            return items[0].value if items else None
        if name in ("phones", "emails"):
            return [i.value for i in (c.phones if name == "phones" else c.emails)]
        return getattr(c, str(name))

    # --- canonical -> CRM contact to push -------------------------------------------------------

    def to_contact(self, ref_id: str | None, fields: Fields, previous: Contact | None) -> Contact:
        """The contact to send: `previous` (the CRM's last version) with the mapped fields set.

        What the mapping does not cover (a second phone, unmapped custom entries, dynamic
        attributes) is carried over from `previous`, because update replaces whole lists.
        """
        c = previous or Contact(ref_id=ref_id)
        changes: dict[str, Any] = {"ref_id": ref_id or c.ref_id}
        custom = {e.label: e for e in c.custom}
        dynamic = dict(c.dynamic)
        for f in self.fields:
            if f.name not in fields:
                continue
            v = fields[f.name]
            if f.custom:
                _set_custom(custom, f.custom, v)
            elif f.dynamic:
                vals = (tuple(sorted(v)) if isinstance(v, frozenset)
                        else () if v is None else (_wire_text(v),))
                dynamic[f.dynamic] = DynamicValue(str(f.field_type), vals)
            elif f.field in ("phone", "email"):
                key = "phones" if f.field == "phone" else "emails"
                changes[key] = _set_first(changes.get(key, getattr(c, key)), v)
            elif f.field in ("phones", "emails"):
                assert isinstance(v, tuple | type(None))
                changes[str(f.field)] = _set_all(getattr(c, str(f.field)), v or ())
            else:
                changes[str(f.field)] = v
        if self.spec.ref_code_column and "ref_code" in fields:
            changes["ref_code"] = fields["ref_code"]
        if self.spec.custom_fields_column:
            for name, v in fields.items():
                label = name[len(CUSTOM_PREFIX):]
                if name.startswith(CUSTOM_PREFIX) and label not in self.claimed:
                    _set_custom(custom, label, v)
            # labels the table dropped from its JSON column are removed in the CRM too
            known = {n[len(CUSTOM_PREFIX):] for n in fields if n.startswith(CUSTOM_PREFIX)}
            for label in [lb for lb in custom if lb not in known and lb not in self.claimed]:
                del custom[label]
        changes["custom"] = tuple(custom.values())
        changes["dynamic"] = dynamic
        return replace(c, **changes)


def _set_custom(custom: dict[str, CustomEntry], label: str, v: FieldValue) -> None:
    if v is None:
        custom.pop(label, None)
    else:
        old = custom.get(label)
        custom[label] = CustomEntry(label, _wire_text(v), old.key if old else None)


def _wire_text(v: FieldValue) -> str:
    return v.strftime("%d/%m/%Y") if isinstance(v, date) else str(v)


def _set_first(items: tuple[Item, ...], v: FieldValue) -> tuple[Item, ...]:
    rest = tuple(i for i in items[1:] if i.value != v)
    if v is None:
        return rest
    kind = items[0].kind if items else DEFAULT_KIND
    return (Item(str(v), kind), *rest)


def _set_all(items: tuple[Item, ...], values: tuple[str, ...]) -> tuple[Item, ...]:
    kinds = {i.value: i.kind for i in items}
    return tuple(Item(v, kinds.get(v, DEFAULT_KIND)) for v in values)


def _json(raw: object) -> Any:
    if isinstance(raw, str):
        try:
            return json.loads(raw)
        except json.JSONDecodeError as exc:
            raise ValueError(f"not valid JSON ({exc.msg})") from None
    return raw


_EMAIL = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s]+$")
_PHONE = re.compile(r"^\+?\d{8,15}$")


def validate_for_push(fields: Fields) -> list[str]:
    """What the CRM would refuse or silently drop; each problem names the field."""
    problems = []
    if not fields.get("full_name"):
        problems.append("full_name is empty: the CRM requires a name")
    for name in ("email", "owner_email"):
        v = fields.get(name)
        if isinstance(v, str) and not _EMAIL.match(v):
            problems.append(f"{name} {v!r} is not an email address")
    for v in [fields.get("phone"), *(fields.get("phones") or ())]:  # type: ignore[misc]
        if isinstance(v, str) and not _PHONE.match(v):
            problems.append(f"phone {v!r} is not a phone number")
    return problems
