"""Per-field value transforms: a column's value, a CRM value and the canonical value, one mapped
field (`FieldMap`) at a time: value maps, date formats in text columns, phone formats, lists in
JSON or delimited columns, defaults. The values themselves are parsed by `scalars.py`.

Pure: no I/O. A value that does not fit raises ValueError naming it; the converter turns that
into a RowError naming the column.
"""

from __future__ import annotations

import json
from datetime import date, datetime
from typing import TYPE_CHECKING, Any

from sync.record import FieldValue, norm_text
from sync.scalars import (
    LIST_KINDS,
    canon_value,
    fold,
    format_phone,
    literal,
    parse_bool,
    parse_integer,
    parse_number,
    to_crm_text,
)

if TYPE_CHECKING:
    from sync.mapping import FieldMap


def from_column(f: FieldMap, raw: object) -> FieldValue:
    """A column's value to the canonical value (the default reads as no value)."""
    value = _from_column(f, raw)
    return None if value is not None and value == f.canonical_default else value


def _from_column(f: FieldMap, raw: object) -> FieldValue:
    if raw is None or (isinstance(raw, str) and not raw.strip()):
        return None
    if isinstance(raw, bytes | bytearray | memoryview):  # SQLite keeps what an app binds
        raise ValueError("holds bytes (a BLOB), not text or a number: write it as text")
    if f.kind in LIST_KINDS:
        items = _list_from_column(f, raw)
        return canon_value(f.kind, [_map(f, i) for i in items] if f.values else items)
    if f.values:
        return canon_value(f.kind, _map(f, literal(raw)))
    if f.kind == "date" and f.column_type == "text" and not isinstance(raw, date):
        try:
            return datetime.strptime(str(raw).strip(), f.strftime).date()
        except ValueError:
            raise ValueError(f"{raw!r} is not a date in the format {f.date_format!r}") from None
    if f.kind == "date" and isinstance(raw, str):  # a date column read back as text
        try:
            return date.fromisoformat(raw.strip()[:10])
        except ValueError:  # Python's own message may not name the value ("day is out of...")
            raise ValueError(f"{raw!r} is not a date (yyyy-mm-dd)") from None
    return canon_value(f.kind, raw)


def _list_from_column(f: FieldMap, raw: object) -> list[Any]:
    if isinstance(raw, str):
        if f.format == "delimited":
            return raw.split(f.separator)
        try:
            raw = json.loads(raw)
        except json.JSONDecodeError as exc:
            raise ValueError(f"not valid JSON ({exc.msg})") from None
    if not isinstance(raw, list):
        raise ValueError(f"{raw!r} is not a JSON array")
    bad = next((i for i in raw if i is None or isinstance(i, dict | list)), False)
    if bad is not False:
        raise ValueError(f"list item {bad!r} is not a plain value")
    return raw


def column_items(f: FieldMap, raw: object) -> dict[FieldValue, object]:
    """A list column's canonical items, each with the item the column holds that reads as it
    (the first, trimmed): what a problem with one item shows the user."""
    out: dict[FieldValue, object] = {}
    if raw is None or (isinstance(raw, str) and not raw.strip()):
        return out
    for item in _list_from_column(f, raw):
        value = canon_value(f.kind, [_map(f, item)] if f.values else [item])
        for v in value if isinstance(value, tuple | frozenset) else ():
            out.setdefault(v, item.strip() if isinstance(item, str) else item)
    return out


def json_object(raw: object) -> dict[str, Any]:
    """A JSON column holding an object (the unclaimed custom fields); None reads as {}."""
    if raw is None or (isinstance(raw, str) and not raw.strip()):
        return {}
    if isinstance(raw, str):
        try:
            raw = json.loads(raw)
        except json.JSONDecodeError as exc:
            raise ValueError(f"not valid JSON ({exc.msg})") from None
    if not isinstance(raw, dict):
        raise ValueError("not a JSON object")
    return raw


def _map(f: FieldMap, value: object) -> object:
    """Local literal -> CRM value through `values`; unmapped values pass through."""
    text = literal(value)
    return f.forward.get(fold(text), text) if text is not None else None


def to_column(f: FieldMap, value: FieldValue) -> Any:
    """A canonical value to what the column gets (no value: the default, if any)."""
    if value is None:
        return None if f.default is None else to_column(f, f.canonical_default)
    if f.kind in LIST_KINDS:
        assert isinstance(value, tuple | frozenset)
        items = sorted(value) if isinstance(value, frozenset) else list(value)
        if f.values:
            items = [f.backward.get(fold(i), i) for i in items]
        if f.kind == "phones":
            items = [format_phone(i, f.phone_format) for i in items]
        if f.format == "delimited":
            bad = next((i for i in items if f.separator in i), None)
            if bad is not None:
                raise ValueError(f"{bad!r} contains the separator {f.separator!r}")
            return f.separator.join(items)
        return items if f.column_type == "json" else json.dumps(items, ensure_ascii=False)
    if f.values:
        text = to_crm_text(value)
        return _typed(f, f.backward.get(fold(text), text))
    if isinstance(value, date):
        return value if f.column_type == "date" else value.strftime(f.strftime)
    if f.kind == "phone" and isinstance(value, str):
        return format_phone(value, f.phone_format)
    if f.column_type == "text" and not isinstance(value, str):
        return to_crm_text(value)
    return value


def _typed(f: FieldMap, text: str) -> Any:
    kind = f.column_type
    if kind == "integer":
        return parse_integer(text)
    if kind == "number":
        return parse_number(text)
    if kind == "boolean":
        return parse_bool(text)
    return text


def from_crm(f: FieldMap, value: object) -> FieldValue:
    """A value as the CRM holds it to the canonical value (the default reads as no value)."""
    if f.values:
        if f.kind in LIST_KINDS and isinstance(value, list | tuple | set | frozenset):
            value = [_crm_side(f, v) for v in value]
        elif f.kind not in LIST_KINDS:
            value = _crm_side(f, value)
    out = canon_value(f.kind, value)
    return None if out is not None and out == f.canonical_default else out


def _crm_side(f: FieldMap, value: object) -> object:
    """A CRM value in the map's own spelling; a local word found in the CRM is read as mapped."""
    text = norm_text(value)
    if text is None:
        return None
    key = fold(text)
    if key in f.backward:
        return f.forward[fold(f.backward[key])]
    return f.forward.get(key, text)
