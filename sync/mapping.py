"""The field mapping model: which CRM attribute lives in which column, of which type.

Pure: no I/O. `mapping_file.py` loads the YAML (with file and line in every error);
`transform.py` converts one field's values; `convert.py` turns rows and CRM contacts into
canonical Fields and back. The reference of every key is mappings/README.md.

Every check that can be made without the database or the CRM is made here, so that a mapping
that loads is one that cannot silently corrupt data: exactly one source per entry, a column
type that can hold the attribute, one-to-one value maps, a round-tripping date format, a
default that fits its column, no key that does not apply to the entry.
"""

from __future__ import annotations

import re
from functools import cached_property
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator
from pydantic_core import PydanticCustomError

from sync import transform as tf
from sync.merge import Direction
from sync.record import (
    CUSTOM_PREFIX,
    DYNAMIC_PREFIX,
    GENDERS,
    STANDARD_FIELDS,
    FieldValue,
    norm_text,
)

ColumnType = Literal["text", "integer", "number", "date", "boolean", "json"]
ListFormat = Literal["json", "delimited"]
TagFormat = ListFormat
PhoneFormat = Literal["national", "e164"]
# Standard fields whose canonical value is a collection; they need a json or delimited column.
LIST_FIELDS = frozenset({"tags", "phones", "emails"})
DYNAMIC_KIND: dict[str, tf.Kind] = {
    "single_text": "text", "multi_text": "multiline", "number": "number", "date": "date",
    "radio": "text", "select": "text", "checkbox": "set"}
DYNAMIC_TYPES = frozenset(DYNAMIC_KIND)
STANDARD_KIND: dict[str, tf.Kind] = {
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


def _identifier(value: str | None) -> str | None:
    if value is None:
        return None
    if not value.strip() or value != value.strip() or re.search(r"[\x00-\x1f]", value):
        raise ValueError(f"{value!r} is not a usable table or column name")
    if len(value.encode()) > MAX_IDENTIFIER_BYTES:
        raise ValueError(f"{value!r} is longer than {MAX_IDENTIFIER_BYTES} bytes")
    return value


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class FieldMap(_Strict):
    """One mapped attribute: exactly one of `field` (standard), `custom` (a `more_infomation`
    label) or `dynamic` (a layout field_code) goes to `column`."""

    column: str = Field(min_length=1)
    field: str | None = None
    custom: str | None = None
    dynamic: str | None = None
    field_type: str | None = None  # dynamic attributes: the layout's type
    type: ColumnType | None = None  # the column's type; inferred when absent
    direction: Direction = Direction.BOTH  # `both` here means: the table's direction
    format: ListFormat = "json"  # list fields: a JSON array or a delimited text column
    separator: str = Field(",", min_length=1)
    date_format: str = "%Y-%m-%d"  # date fields kept in a text column
    phone_format: PhoneFormat = "national"
    values: dict[str, str] = Field(default_factory=dict)  # local value -> CRM value
    default: Any = None  # what the column holds when there is no value

    @field_validator("column")
    @classmethod
    def _column(cls, v: str) -> str:
        return str(_identifier(v))

    @field_validator("custom")
    @classmethod
    def _label(cls, v: str | None) -> str | None:
        if v is None:
            return None
        label = norm_text(v)
        if not label:
            raise ValueError("a custom field label cannot be empty")
        return label

    @field_validator("date_format")
    @classmethod
    def _date_format(cls, v: str) -> str:
        tf.date_pattern(v)
        return v

    @field_validator("values", mode="before")
    @classmethod
    def _values_text(cls, v: object) -> object:
        if not isinstance(v, dict):
            return v  # pydantic says what is wrong
        out: dict[str, str] = {}
        for k, val in v.items():
            if k is None or val is None or isinstance(k, list | dict) or isinstance(val,
                                                                                list | dict):
                raise ValueError(f"{k!r}: {val!r}: both sides of a value map must be plain "
                                 "values")
            key, value = tf.literal(k), tf.literal(val)
            if not key or not value:
                raise ValueError("a value map cannot map from or to an empty value")
            out[key] = value
        for side, words in (("local", list(out)), ("CRM", list(out.values()))):
            folded = [tf.fold(w) for w in words]
            dup = next((w for w, f in zip(words, folded, strict=True) if folded.count(f) > 1),
                       None)
            if dup is not None:
                raise ValueError(f"the value map is not one-to-one: {side} value {dup!r} "
                                 "appears twice")
        return out

    @model_validator(mode="after")
    def _consistent(self) -> FieldMap:
        given = [k for k in ("field", "custom", "dynamic") if getattr(self, k) is not None]
        if len(given) != 1:
            raise mapping_error(given[1] if len(given) > 1 else "column",
                                "give exactly one of `field`, `custom` or `dynamic`")
        if self.field is not None and self.field not in MAPPABLE_FIELDS:
            hint = (" (the refCode has its own key: ref_code_column)" if self.field == "ref_code"
                    else "")
            raise mapping_error("field", f"unknown standard field {self.field!r}{hint}; known: "
                                + ", ".join(sorted(MAPPABLE_FIELDS)))
        if self.dynamic is not None and self.field_type not in DYNAMIC_TYPES:
            raise mapping_error("field_type", "a dynamic attribute needs its `field_type`, one "
                                f"of: {', '.join(sorted(DYNAMIC_TYPES))}")
        if self.dynamic is None and self.field_type is not None:
            raise mapping_error("field_type", "field_type applies to dynamic attributes only")
        self._check_type()
        self._check_values()
        self._check_applicable()
        if self.default is not None:
            try:
                default = self.canonical_default
            except (ValueError, TypeError) as exc:
                raise mapping_error("default", f"default {self.default!r} does not fit column "
                                    f"{self.column!r} ({self.column_type}): {exc}") from None
            if default is None:
                raise mapping_error("default", "default must be a value (omit it for none)")
        return self

    def _check_type(self) -> None:
        allowed = self.allowed_types
        if self.type is not None and self.type not in allowed:
            raise mapping_error("type", f"a {self.source} cannot be kept in a {self.type} column;"
                                f" possible types: {', '.join(allowed)}")

    def _check_values(self) -> None:
        if not self.values:
            return
        if self.crm_kind not in ("text", "gender", "set"):
            raise mapping_error("values", f"a values map does not apply to a {self.source}")
        if self.crm_kind == "gender":
            bad = sorted(set(self.values.values()) - GENDERS)
            if bad:
                raise mapping_error("values", f"gender values map to male, female or other; "
                                    f"not {', '.join(map(repr, bad))}")
        col = self.column_type
        for key in self.values:
            try:
                typed = tf.canon_value(col, key) if col != "text" else key
                spelled = tf.literal(typed)
            except ValueError as exc:
                raise mapping_error("values", f"local value {key!r} does not fit the {col} "
                                    f"column: {exc}") from None
            if spelled != key:
                raise mapping_error("values", f"write the local value {key!r} as {spelled!r}, "
                                    f"the way the {col} column gives it back")

    def _check_applicable(self) -> None:
        given = self.model_fields_set
        is_list = self.kind in tf.LIST_KINDS
        rules = {
            "format": (is_list, "format applies to list fields (tags, phones, emails, checkbox)"),
            "separator": (is_list and self.format == "delimited",
                          "separator applies to list fields with format: delimited"),
            "date_format": (self.kind == "date" and self.column_type == "text",
                            "date_format applies to dates kept in a text column (type: text)"),
            "phone_format": (self.kind in ("phone", "phones"),
                             "phone_format applies to the phone and phones fields"),
        }
        for key, (ok, why) in rules.items():
            if key in given and not ok:
                raise mapping_error(key, why)
        if is_list and self.format == "delimited" and self.type == "json":
            raise mapping_error("format", "a delimited list is kept in a text column, not json")

    # --- what the entry means -------------------------------------------------------------------

    @property
    def source(self) -> str:
        if self.custom is not None:
            return f"custom field {self.custom!r}"
        if self.dynamic is not None:
            return f"dynamic attribute {self.dynamic!r} ({self.field_type})"
        return f"{self.field} field"

    @property
    def name(self) -> str:
        """The canonical field name the merge sees."""
        if self.custom is not None:
            return CUSTOM_PREFIX + self.custom
        if self.dynamic is not None:
            return DYNAMIC_PREFIX + self.dynamic
        return str(self.field)

    @property
    def crm_kind(self) -> tf.Kind:
        """The kind of the value the CRM holds."""
        if self.field is not None:
            return STANDARD_KIND.get(self.field, "text")
        if self.dynamic is not None:
            return DYNAMIC_KIND.get(self.field_type or "", "text")
        return "text"

    @property
    def kind(self) -> tf.Kind:
        """The canonical kind: a typed column narrows free CRM text (custom "90" -> 90)."""
        crm = self.crm_kind
        if self.values or self.field is not None or crm not in ("text", "number"):
            return crm
        if self.type in ("integer", "number", "date", "boolean"):
            return self.type
        if crm == "text" and self.type == "text" and "date_format" in self.model_fields_set \
                and self.field_type in (None, "single_text"):
            return "date"  # a custom date kept as text in its own format
        return crm

    @property
    def allowed_types(self) -> tuple[ColumnType, ...]:
        crm = self.crm_kind
        if crm in tf.LIST_KINDS:
            return ("json", "text")
        if self.values:
            return ("text", "integer", "number", "boolean")
        if crm == "date":
            return ("date", "text")
        if crm == "number":
            return ("number", "integer", "text")
        if crm == "text" and self.field_type in ("radio", "select"):
            return ("text", "integer", "number")  # what is pushed must be one of the options
        if crm == "text" and self.field is None:
            return ("text", "integer", "number", "date", "boolean")
        return ("text",)

    @property
    def is_list(self) -> bool:
        return self.kind in tf.LIST_KINDS

    @property
    def is_date(self) -> bool:
        return self.kind == "date"

    @property
    def column_type(self) -> ColumnType:
        if self.type:
            return self.type
        if self.is_list:
            return "json" if self.format == "json" else "text"
        if self.values:
            return "text"
        if self.crm_kind == "date":
            return "date"
        if self.crm_kind == "number":
            return "number"
        return "text"

    @cached_property
    def strftime(self) -> str:
        return tf.date_pattern(self.date_format)

    @cached_property
    def forward(self) -> dict[str, str]:
        """folded local value -> CRM value."""
        return {tf.fold(k): v for k, v in self.values.items()}

    @cached_property
    def backward(self) -> dict[str, str]:
        """folded CRM value -> local value."""
        return {tf.fold(v): k for k, v in self.values.items()}

    @cached_property
    def canonical_default(self) -> FieldValue:
        return tf._from_column(self, self.default)


class _Directions(dict[str, Direction]):
    default: Direction = Direction.BOTH

    def get(self, key: str, default: Any = None) -> Any:
        return super().get(key, self.default)


class MappingSpec(_Strict):
    """A whole mapping file."""

    table: str = Field("contacts", min_length=1)
    key_column: str = "ref_id"
    ref_code_column: str | None = "ref_code"
    crm_id_column: str | None = "crm_id"
    custom_fields_column: str | None = "custom_fields"  # unmapped custom entries, as JSON
    # optional: a column the app keeps as its last-modified time; `newest_wins` needs it
    updated_at_column: str | None = None
    direction: Direction = Direction.BOTH  # the table's default; a pull-only export says pull
    notes_table: str | None = "contact_notes"  # the notes outbox (add-note); null: no notes
    fields: tuple[FieldMap, ...] = ()

    @field_validator("table", "key_column", "ref_code_column", "crm_id_column",
                     "custom_fields_column", "updated_at_column", "notes_table")
    @classmethod
    def _names(cls, v: str | None) -> str | None:
        return _identifier(v)

    @model_validator(mode="after")
    def _unique(self) -> MappingSpec:
        if "." in self.table:
            raise mapping_error("table", "a table name without a schema: set the schema in the "
                                "database URL (PostgreSQL: options=-csearch_path=...)")
        reserved: dict[str, str] = {}
        for key in ("key_column", "ref_code_column", "crm_id_column", "custom_fields_column",
                    "updated_at_column"):
            col = getattr(self, key)
            if col is not None and col in reserved:
                raise mapping_error(key, f"column {col!r} is already the {reserved[col]}")
            if col is not None:
                reserved[col] = key
        if self.notes_table is not None and self.notes_table == self.table:
            raise mapping_error("notes_table", "the notes table must not be the contacts table")
        columns: dict[str, int] = {}
        names: dict[str, int] = {}
        for i, f in enumerate(self.fields):
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
            if self.direction is Direction.PULL and "direction" in f.model_fields_set \
                    and f.direction is not Direction.PULL:
                raise mapping_error(f"fields.{i}.direction", "the table is pull-only "
                                    "(direction: pull): its fields cannot push")
        for one, many in (("phone", "phones"), ("email", "emails")):
            if one in names and many in names:
                raise mapping_error(f"fields.{names[many]}", f"map either {one} (the first) or "
                                    f"{many} (all), not both")
        return self

    @property
    def columns(self) -> dict[str, ColumnType]:
        cols: dict[str, ColumnType] = {self.key_column: "text"}
        for extra in (self.ref_code_column, self.crm_id_column):
            if extra:
                cols[extra] = "text"
        for f in self.fields:
            cols[f.column] = f.column_type
        if self.custom_fields_column:
            cols[self.custom_fields_column] = "json"
        return cols

    def directions(self) -> dict[str, Direction]:
        """Per canonical field name; a name not listed (an unmapped custom field kept in the
        JSON column) follows the table's direction."""
        base = self.direction
        out = _Directions({f.name: (f.direction if f.direction is not Direction.BOTH else base)
                           for f in self.fields})
        out.default = base
        if self.ref_code_column:
            out["ref_code"] = base
        return out

    @property
    def claimed_custom(self) -> frozenset[str]:
        return frozenset(f.custom for f in self.fields if f.custom)
