"""The field mapping model: which CRM attribute lives in which column, of which type.

Pure: no I/O. `mapping_file.py` loads the YAML (with file and line in every error);
`convert.py` turns rows and CRM contacts into canonical Fields and back.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from sync.merge import Direction
from sync.record import CUSTOM_PREFIX, DYNAMIC_PREFIX, STANDARD_FIELDS

ColumnType = Literal["text", "integer", "number", "date", "boolean", "json"]
TagFormat = Literal["json", "delimited"]
# Standard fields whose canonical value is a collection; they need a json or delimited column.
LIST_FIELDS = frozenset({"tags", "phones", "emails"})
DYNAMIC_TYPES = frozenset({"single_text", "multi_text", "number", "date", "radio", "select",
                           "checkbox"})


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
    direction: Direction = Direction.BOTH
    format: TagFormat = "json"  # list fields: a JSON array or a delimited text column
    separator: str = ","
    date_format: str = "%Y-%m-%d"  # date fields kept in a text column
    values: dict[str, str] = Field(default_factory=dict)  # local value -> CRM value
    default: Any = None  # written locally when the CRM has no value

    @model_validator(mode="after")
    def _one_source(self) -> FieldMap:
        given = [k for k in ("field", "custom", "dynamic") if getattr(self, k)]
        if len(given) != 1:
            raise ValueError("give exactly one of `field`, `custom` or `dynamic`")
        if self.field and self.field not in STANDARD_FIELDS:
            raise ValueError(f"unknown standard field {self.field!r}; known: "
                             + ", ".join(sorted(STANDARD_FIELDS)))
        if self.dynamic:
            if not self.field_type:
                raise ValueError("a dynamic attribute needs its `field_type`")
            if self.field_type not in DYNAMIC_TYPES:
                raise ValueError(f"unknown field_type {self.field_type!r}; known: "
                                 + ", ".join(sorted(DYNAMIC_TYPES)))
        return self

    @property
    def name(self) -> str:
        """The canonical field name the merge sees."""
        if self.custom:
            return CUSTOM_PREFIX + self.custom
        if self.dynamic:
            return DYNAMIC_PREFIX + self.dynamic
        return str(self.field)

    @property
    def is_list(self) -> bool:
        return self.field in LIST_FIELDS or self.field_type == "checkbox"

    @property
    def is_date(self) -> bool:
        return self.field == "birthday" or self.field_type == "date"

    @property
    def column_type(self) -> ColumnType:
        if self.type:
            return self.type
        if self.is_list:
            return "json" if self.format == "json" else "text"
        if self.is_date:
            return "date"
        if self.field_type == "number":
            return "number"
        return "text"


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

    @model_validator(mode="after")
    def _unique(self) -> MappingSpec:
        seen: set[tuple[str, str]] = set()
        reserved = {c for c in (self.key_column, self.ref_code_column, self.crm_id_column,
                                self.custom_fields_column, self.updated_at_column) if c}
        for f in self.fields:
            if f.column in reserved:
                raise ValueError(f"column {f.column!r} is reserved for the key/bookkeeping")
            for pair in (("column", f.column), ("field", f.name)):
                if pair in seen:
                    raise ValueError(f"{pair[0]} {pair[1]!r} is mapped twice")
                seen.add(pair)
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
        base = self.direction
        out = {f.name: (f.direction if f.direction is not Direction.BOTH else base)
               for f in self.fields}
        if self.ref_code_column:
            out["ref_code"] = base
        return out

    @property
    def claimed_custom(self) -> frozenset[str]:
        return frozenset(f.custom for f in self.fields if f.custom)
