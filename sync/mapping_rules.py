"""The rules a mapping must follow, checked when it is loaded (mapping.py calls them from its
validators). Each failure names the key it is about, so that mapping_file can give its line.

Every check that can be made without the database or the CRM is made here, so that a mapping
that loads is one that cannot silently corrupt data: exactly one source per entry, a column
type that can hold the attribute, one-to-one value maps, a round-tripping date format, a
default that fits its column, no key that does not apply to the entry, no column used twice.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING

from pydantic_core import PydanticCustomError

from sync import scalars as sc
from sync.merge import Direction
from sync.record import GENDERS, STANDARD_FIELDS

if TYPE_CHECKING:
    from sync.mapping import ColumnType, FieldMap, MappingSpec

DYNAMIC_KIND: dict[str, sc.Kind] = {
    "single_text": "text", "multi_text": "multiline", "number": "number", "date": "date",
    "radio": "text", "select": "text", "checkbox": "set"}
DYNAMIC_TYPES = frozenset(DYNAMIC_KIND)
STANDARD_KIND: dict[str, sc.Kind] = {
    "full_name": "text", "address": "text", "job_title": "text", "passport": "text",
    "note": "multiline", "phone": "phone", "phones": "phones", "email": "email",
    "emails": "emails", "owner_email": "email", "gender": "gender", "birthday": "date",
    "tags": "set"}
MAPPABLE_FIELDS = frozenset(STANDARD_KIND)
assert STANDARD_FIELDS - {"ref_code"} == MAPPABLE_FIELDS
MAX_IDENTIFIER_BYTES = 63  # PostgreSQL truncates longer names silently


def mapping_error(key: str, message: str) -> PydanticCustomError:
    """A validation error that names the key it is about (mapping_file turns it into a line)."""
    return PydanticCustomError("mapping", message.replace("{", "(").replace("}", ")"),
                               {"key": key})


def identifier(value: str | None) -> str | None:
    if value is None:
        return None
    if not value.strip() or value != value.strip() or re.search(r"[\x00-\x1f]", value):
        raise ValueError(f"{value!r} is not a usable table or column name")
    if len(value.encode()) > MAX_IDENTIFIER_BYTES:
        raise ValueError(f"{value!r} is longer than {MAX_IDENTIFIER_BYTES} bytes")
    return value


def values_text(v: object) -> object:
    """`values:` as text on both sides (YAML may give numbers or booleans), one-to-one."""
    if not isinstance(v, dict):
        return v  # pydantic says what is wrong
    out: dict[str, str] = {}
    for k, val in v.items():
        if k is None or val is None or isinstance(k, list | dict) or isinstance(val,
                                                                            list | dict):
            raise ValueError(f"{k!r}: {val!r}: both sides of a value map must be plain "
                             "values")
        key, value = sc.literal(k), sc.literal(val)
        if not key or not value:
            raise ValueError("a value map cannot map from or to an empty value")
        out[key] = value
    for side, words in (("local", list(out)), ("CRM", list(out.values()))):
        folded = [sc.fold(w) for w in words]
        dup = next((w for w, f in zip(words, folded, strict=True) if folded.count(f) > 1),
                   None)
        if dup is not None:
            raise ValueError(f"the value map is not one-to-one: {side} value {dup!r} "
                             "appears twice")
    return out


def allowed_types(f: FieldMap) -> tuple[ColumnType, ...]:
    """The column types that can hold what the entry maps."""
    crm = f.crm_kind
    if crm in sc.LIST_KINDS:
        return ("json", "text")
    if f.values:
        return ("text", "integer", "number", "boolean")
    if crm == "date":
        return ("date", "text")
    if crm == "number":
        return ("number", "integer", "text")
    if crm == "text" and f.field_type in ("radio", "select"):
        return ("text", "integer", "number")  # what is pushed must be one of the options
    if crm == "text" and f.field is None:
        return ("text", "integer", "number", "date", "boolean")
    return ("text",)


def check_field(f: FieldMap) -> None:
    given = [k for k in ("field", "custom", "dynamic") if getattr(f, k) is not None]
    if len(given) != 1:
        raise mapping_error(given[1] if len(given) > 1 else "column",
                            "give exactly one of `field`, `custom` or `dynamic`")
    if f.field is not None and f.field not in MAPPABLE_FIELDS:
        hint = (" (the refCode has its own key: ref_code_column)" if f.field == "ref_code"
                else "")
        raise mapping_error("field", f"unknown standard field {f.field!r}{hint}; known: "
                            + ", ".join(sorted(MAPPABLE_FIELDS)))
    if f.dynamic is not None and f.field_type not in DYNAMIC_TYPES:
        said = ("a dynamic attribute needs its `field_type`" if f.field_type is None
                else f"unknown field_type {f.field_type!r}")
        raise mapping_error("field_type", f"{said}, one of: {', '.join(sorted(DYNAMIC_TYPES))}")
    if f.dynamic is None and f.field_type is not None:
        raise mapping_error("field_type", "field_type applies to dynamic attributes only")
    _check_type(f)
    _check_values(f)
    _check_applicable(f)
    if f.default is not None:
        try:
            default = f.canonical_default
        except (ValueError, TypeError) as exc:
            raise mapping_error("default", f"default {f.default!r} does not fit column "
                                f"{f.column!r} ({f.column_type}): {exc}") from None
        if default is None:
            raise mapping_error("default", "default must be a value (omit it for none)")


def _check_type(f: FieldMap) -> None:
    allowed = allowed_types(f)
    if f.type is not None and f.type not in allowed:
        raise mapping_error("type", f"a {f.source} cannot be kept in a {f.type} column;"
                            f" possible types: {', '.join(allowed)}")


def _check_values(f: FieldMap) -> None:
    if not f.values:
        return
    if f.crm_kind not in ("text", "gender", "set"):
        raise mapping_error("values", f"a values map does not apply to a {f.source}")
    if f.crm_kind == "gender":
        bad = sorted(set(f.values.values()) - GENDERS)
        if bad:
            raise mapping_error("values", f"gender values map to male, female or other; "
                                f"not {', '.join(map(repr, bad))}")
    col = f.column_type
    for key in f.values if col in ("integer", "number", "boolean") else ():
        try:
            spelled = sc.literal(sc.canon_value(col, key))
        except ValueError as exc:
            raise mapping_error("values", f"local value {key!r} does not fit the {col} "
                                f"column: {exc}") from None
        if spelled != key:
            raise mapping_error("values", f"write the local value {key!r} as {spelled!r}, "
                                f"the way the {col} column gives it back")


def _check_applicable(f: FieldMap) -> None:
    given = f.model_fields_set
    is_list = f.kind in sc.LIST_KINDS
    rules = {
        "format": (is_list, "format applies to list fields (tags, phones, emails, checkbox)"),
        "separator": (is_list and f.format == "delimited",
                      "separator applies to list fields with format: delimited"),
        "date_format": (f.kind == "date" and f.column_type == "text",
                        "date_format applies to dates kept in a text column (type: text)"),
        "phone_format": (f.kind in ("phone", "phones"),
                         "phone_format applies to the phone and phones fields"),
    }
    for key, (ok, why) in rules.items():
        if key in given and not ok:
            raise mapping_error(key, why)
    if is_list and f.format == "delimited" and f.type == "json":
        raise mapping_error("format", "a delimited list is kept in a text column, not json")


def check_spec(spec: MappingSpec) -> None:
    if "." in spec.table:
        raise mapping_error("table", "a table name without a schema: set the schema in the "
                            "database URL (PostgreSQL: options=-csearch_path=...)")
    reserved: dict[str, str] = {}
    for key in ("key_column", "ref_code_column", "crm_id_column", "custom_fields_column",
                "updated_at_column"):
        col = getattr(spec, key)
        if col is not None and col in reserved:
            raise mapping_error(key, f"column {col!r} is already the {reserved[col]}")
        if col is not None:
            reserved[col] = key
    if spec.notes_table is not None and spec.notes_table == spec.table:
        raise mapping_error("notes_table", "the notes table must not be the contacts table")
    columns: dict[str, int] = {}
    names: dict[str, int] = {}
    for i, f in enumerate(spec.fields):
        if f.column in reserved:
            raise mapping_error(f"fields.{i}.column", f"column {f.column!r} is already the "
                                f"{reserved[f.column]}")
        if f.column in columns:
            raise mapping_error(f"fields.{i}.column", f"column {f.column!r} is mapped twice "
                                f"(also by fields[{columns[f.column]}])")
        if f.name in names:
            raise mapping_error(f"fields.{i}", f"the {f.source} is mapped twice (also by "
                                f"fields[{names[f.name]}])")
        columns[f.column], names[f.name] = i, i
        if spec.direction is Direction.PULL and "direction" in f.model_fields_set \
                and f.direction is not Direction.PULL:
            raise mapping_error(f"fields.{i}.direction", "the table is pull-only "
                                "(direction: pull): its fields cannot push")
    for one, many in (("phone", "phones"), ("email", "emails")):
        if one in names and many in names:
            raise mapping_error(f"fields.{names[many]}", f"map either {one} (the first) or "
                                f"{many} (all), not both")
