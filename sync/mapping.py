"""The field mapping model: which CRM attribute lives in which column, of which type.

Pure: no I/O. `mapping_file.py` loads the YAML (with file and line in every error);
`transform.py` converts one field's values; `convert.py` turns rows and CRM contacts into
canonical Fields and back. The reference of every key is mappings/README.md.

The rules a mapping must follow (exactly one source per entry, a column type that can hold
the attribute, one-to-one value maps, ...) live in `mapping_rules.py`, called from the
validators here.
"""

from __future__ import annotations

from functools import cached_property
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from sync import mapping_rules as rules
from sync import scalars as sc
from sync import transform as tf
from sync.merge import Direction
from sync.record import (
    CUSTOM_PREFIX,
    DYNAMIC_PREFIX,
    FieldValue,
    norm_text,
)

ColumnType = Literal["text", "integer", "number", "date", "boolean", "json"]
ListFormat = Literal["json", "delimited"]
TagFormat = ListFormat
PhoneFormat = Literal["national", "e164"]
# Standard fields whose canonical value is a collection; they need a json or delimited column.
LIST_FIELDS = frozenset({"tags", "phones", "emails"})
DYNAMIC_TYPES = rules.DYNAMIC_TYPES


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
        return str(rules.identifier(v))

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
        sc.date_pattern(v)
        return v

    @field_validator("values", mode="before")
    @classmethod
    def _values_text(cls, v: object) -> object:
        return rules.values_text(v)

    @model_validator(mode="after")
    def _consistent(self) -> FieldMap:
        rules.check_field(self)
        return self

    # --- what the entry means -------------------------------------------------------------------
    # Cached: the model is frozen, and the converter asks these for every field of every contact.

    @cached_property
    def source(self) -> str:
        if self.custom is not None:
            return f"custom field {self.custom!r}"
        if self.dynamic is not None:
            return f"dynamic attribute {self.dynamic!r} ({self.field_type})"
        return f"{self.field} field"

    @cached_property
    def name(self) -> str:
        """The canonical field name the merge sees."""
        if self.custom is not None:
            return CUSTOM_PREFIX + self.custom
        if self.dynamic is not None:
            return DYNAMIC_PREFIX + self.dynamic
        return str(self.field)

    @cached_property
    def crm_kind(self) -> sc.Kind:
        """The kind of the value the CRM holds."""
        if self.field is not None:
            return rules.STANDARD_KIND.get(self.field, "text")
        if self.dynamic is not None:
            return rules.DYNAMIC_KIND.get(self.field_type or "", "text")
        return "text"

    @cached_property
    def kind(self) -> sc.Kind:
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

    @cached_property
    def allowed_types(self) -> tuple[ColumnType, ...]:
        return rules.allowed_types(self)

    @cached_property
    def is_list(self) -> bool:
        return self.kind in sc.LIST_KINDS

    @cached_property
    def is_date(self) -> bool:
        return self.kind == "date"

    @cached_property
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
        return sc.date_pattern(self.date_format)

    @cached_property
    def forward(self) -> dict[str, str]:
        """folded local value -> CRM value."""
        return {sc.fold(k): v for k, v in self.values.items()}

    @cached_property
    def backward(self) -> dict[str, str]:
        """folded CRM value -> local value."""
        return {sc.fold(v): k for k, v in self.values.items()}

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
        return rules.identifier(v)

    @model_validator(mode="after")
    def _unique(self) -> MappingSpec:
        rules.check_spec(self)
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
