"""Whether an existing table can be adopted for a mapping: `check` and every runtime ask
before the first write, so that a table crm-sync cannot write to is refused with the reason
instead of failing every cycle on its first row."""

from __future__ import annotations

import difflib
from collections.abc import Mapping
from typing import Any

import sqlalchemy as sa
from sqlalchemy import Engine

from sync.mapping import MappingSpec
from sync.store.local import column_types
from sync.store.migrate import VERSION_TABLE
from sync.store.schema import TABLE_NAMES, note_outbox

__all__ = ["absent_table_warning", "check_table", "column_scales", "table_warnings"]

LISTED_TABLES = 30  # an ERP's database may hold hundreds: the closest name matters most

# What an existing column's reflected type may be for each mapped type.
_COMPATIBLE: dict[str, tuple[type[Any], ...]] = {
    "text": (sa.String, sa.Text, sa.Enum),
    "integer": (sa.Integer, sa.BigInteger, sa.SmallInteger, sa.Numeric),
    "number": (sa.Float, sa.Numeric, sa.Integer),
    "date": (sa.Date, sa.DateTime, sa.String),
    "boolean": (sa.Boolean, sa.Integer, sa.SmallInteger),
    "json": (sa.JSON, sa.Text, sa.String),
    "timestamp": (sa.DateTime, sa.String),
}


def _reflected(engine: Engine, table: str) -> tuple[sa.Inspector, dict[str, Any]] | None:
    """The table's inspector and reflected columns by name; None when there is no table."""
    insp = sa.inspect(engine)
    if not insp.has_table(table):
        return None
    return insp, {c["name"]: c for c in insp.get_columns(table)}


def check_table(engine: Engine, spec: MappingSpec) -> list[str]:
    """Problems that stop an existing table from being adopted; [] when fine or absent."""
    found = _reflected(engine, spec.table)
    if found is None:
        return []
    insp, existing = found
    mapped = column_types(spec)
    problems = []
    for name, kind in mapped.items():
        col = existing.get(name)
        if col is None:
            problems.append(f"table {spec.table!r}: column {name!r} ({kind}) is missing")
        elif not isinstance(col["type"], _COMPATIBLE[kind]):
            problems.append(f"table {spec.table!r}: column {name!r} is {col['type']}, "
                            f"which cannot hold {kind}")
    key = existing.get(spec.key_column)
    if key is not None and engine.dialect.name == "postgresql" and isinstance(
            key["type"], sa.CHAR) and not isinstance(key["type"], sa.VARCHAR):
        problems.append(f"table {spec.table!r}: key column {spec.key_column!r} is "
                        f"{key['type']}, which PostgreSQL pads with spaces: its keys would "
                        "never match the CRM's refIds (use VARCHAR or TEXT)")
    pk = insp.get_pk_constraint(spec.table).get("constrained_columns") or []
    rowid = _rowid_alias(engine, spec.table)
    for name, col in existing.items():
        if name not in mapped and _needs_a_value(col, rowid):
            problems.append(f"table {spec.table!r}: column {name!r} is NOT NULL without a "
                            "default, and the mapping gives it no value: contacts pulled "
                            "from the CRM could not be inserted (give it a default, allow "
                            "NULL, or map it)")
    if (spec.key_column in existing and pk != [spec.key_column]
            and not _unique(engine, insp, spec.table, spec.key_column)):
        problems.append(f"table {spec.table!r}: key column {spec.key_column!r} must be the "
                        "primary key or unique")
    return problems


def absent_table_warning(engine: Engine, spec: MappingSpec) -> str | None:
    """When the mapped table does not exist: what the first sync does with it, the database's
    own tables and the closest name. A mistyped `table:` otherwise gets a new table that the
    whole CRM is pulled into, and the real table is never synced. None when it exists."""
    insp = sa.inspect(engine)
    if insp.has_table(spec.table):
        return None
    ours = set(TABLE_NAMES) | {VERSION_TABLE} | _notes_tables(engine, insp, spec)
    tables = sorted(t for t in insp.get_table_names() if t not in ours)
    text = (f"table {spec.table!r} does not exist: the first `sync` creates it and pulls every "
            "CRM contact into it; ")
    if not tables:
        return text + "the database has no tables of its own yet"
    text += "the database has tables: " + ", ".join(tables[:LISTED_TABLES])
    if len(tables) > LISTED_TABLES:
        text += f" (and {len(tables) - LISTED_TABLES} more)"
    by_lower = {t.lower(): t for t in tables}  # `Customers` is as close as `customers`
    close = difflib.get_close_matches(spec.table.lower(), list(by_lower), n=1)
    return text + (f": did you mean {by_lower[close[0]]!r}?" if close else "")


def _notes_tables(engine: Engine, insp: sa.Inspector, spec: MappingSpec) -> set[str]:
    """The notes tables crm-sync made: this mapping's and those the outbox names (other
    tenants', earlier mappings'); not candidates for the contacts table."""
    found = {spec.notes_table} if spec.notes_table else set()
    if insp.has_table(note_outbox.name) and "notes_table" in {
            c["name"] for c in insp.get_columns(note_outbox.name)}:  # since migration 0007
        with engine.connect() as conn:
            found |= set(conn.scalars(sa.select(note_outbox.c.notes_table).distinct()))
    return found


def column_scales(engine: Engine, spec: MappingSpec) -> dict[str, int]:
    """The number columns of an existing table that keep only so many decimals: PostgreSQL
    rounds a number to an INTEGER (0) or NUMERIC(p,s) column's scale (SQLite keeps what it is
    given). The converter reads the CRM's values of their fields rounded the same way."""
    return {name: scale for name, (scale, _) in _scaled(engine, spec).items()}


def table_warnings(engine: Engine, spec: MappingSpec) -> list[str]:
    """What an existing table does to some CRM values: a number column that keeps fewer
    decimals than the CRM's value holds it rounded (`column_scales`); the CRM keeps its own
    until the field is edited locally, which sends the column's value."""
    out = []
    for name, (scale, col) in _scaled(engine, spec).items():
        keeps = (f"{scale} decimals" if scale > 0 else "no decimals" if scale == 0
                 else f"multiples of {10 ** -scale}")
        out.append(f"table {spec.table!r}: column {name!r} is {col}, which keeps {keeps}: a "
                   "CRM value with more is stored rounded, and the field is synced at that "
                   "precision (the CRM keeps its own until the field is edited locally; give "
                   "the column a larger scale, or make it TEXT, to keep them all)")
    return out


def _scaled(engine: Engine, spec: MappingSpec) -> dict[str, tuple[int, Any]]:
    """column_scales, with each column's reflected type."""
    found = _reflected(engine, spec.table) if engine.dialect.name == "postgresql" else None
    if found is None:
        return {}
    existing = found[1]
    out = {}
    for name, kind in column_types(spec).items():
        col = existing[name]["type"] if name in existing else None
        if kind != "number" or col is None or isinstance(col, sa.Float):
            continue
        scale = 0 if isinstance(col, sa.Integer) else getattr(col, "scale", None)
        if scale is not None:  # NUMERIC without a scale keeps every decimal
            out[name] = (int(scale), col)
    return out


def _unique(engine: Engine, insp: sa.Inspector, table: str, column: str) -> bool:
    """Whether a unique constraint or a unique index covers exactly this column (not a
    partial index: ON CONFLICT on the column cannot use one)."""
    if any(u["column_names"] == [column] for u in insp.get_unique_constraints(table)):
        return True
    if any(ix.get("unique") and ix["column_names"] == [column]
           and not any(k.endswith("_where") for k in ix.get("dialect_options", {}))
           for ix in insp.get_indexes(table)):
        return True
    if engine.dialect.name != "sqlite":
        return False
    # SQLAlchemy does not reflect a column's own UNIQUE on SQLite: its automatic index
    with engine.connect() as conn:
        quote = conn.dialect.identifier_preparer.quote
        for ix in conn.exec_driver_sql(f"PRAGMA index_list({quote(table)})").all():
            if ix[2] and not ix[4]:  # unique, not partial
                cols = conn.exec_driver_sql(f"PRAGMA index_info({quote(ix[1])})").all()
                if [c[2] for c in cols] == [column]:
                    return True
    return False


def _rowid_alias(engine: Engine, table: str) -> str | None:
    """SQLite: the column that is the rowid (a lone primary key declared exactly INTEGER),
    which takes a value of its own."""
    if engine.dialect.name != "sqlite":
        return None
    with engine.connect() as conn:
        quote = conn.dialect.identifier_preparer.quote
        pk = [c for c in conn.exec_driver_sql(f"PRAGMA table_info({quote(table)})").all()
              if c[5]]
    return str(pk[0][1]) if len(pk) == 1 and str(pk[0][2]).upper() == "INTEGER" else None


def _needs_a_value(col: Mapping[str, Any], rowid: str | None) -> bool:
    """A reflected column that an INSERT naming only the mapped columns would fail on."""
    if col.get("nullable", True) or col.get("default") is not None:
        return False
    if col.get("autoincrement") is True or col.get("identity") or col.get("computed"):
        return False
    return bool(col["name"] != rowid)
