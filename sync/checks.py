"""`crm-sync check`: settings, mapping, database and table, and with --online the API key and
the dynamic attribute layout. Each problem raises a ConfigError naming what is wrong."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from pathlib import Path

import sqlalchemy as sa
from sqlalchemy import Engine
from sqlalchemy.exc import SQLAlchemyError

from sync.api.adapter import LayoutField
from sync.errors import ConfigError
from sync.mapping import MappingSpec
from sync.mapping_file import load_mapping, locate
from sync.notes import NotesOutbox
from sync.settings import Settings, require_api_key, unknown_settings
from sync.status import safe_url
from sync.store import driver_message, make_engine, missing_sqlite_file
from sync.store.adoption import absent_table_warning, check_table, table_warnings
from sync.store.local import LocalTable
from sync.store.state import StateStore


def run_checks(settings: Settings, *, online: bool = False) -> list[str]:
    require_api_key(settings, "`sync` and `run` need it to reach the CRM, so `check` does not "
                    "pass without it")
    done = [f"settings (tenant {settings.tenant_id}, CRM {settings.base_url})"]
    done += [f"warning: {w}" for w in unknown_settings()]
    spec = load_mapping(settings.mapping_file)
    kinds = [sum(1 for f in spec.fields if getattr(f, k) is not None)
             for k in ("field", "custom", "dynamic")]
    done.append(f"mapping {settings.mapping_file}: table {spec.table!r}, {len(spec.fields)} "
                f"mapped fields ({kinds[0]} standard, {kinds[1]} custom, {kinds[2]} dynamic)")
    if not any(f.field == "full_name" for f in spec.fields):
        done.append("warning: the mapping has no full_name: rows inserted in the table cannot "
                    "be created in the CRM, which requires a name (updates send the CRM's own)")
    done += _database(settings, spec)
    if online:
        done += asyncio.run(_online(settings, spec))
    return done


def _database(settings: Settings, spec: MappingSpec) -> list[str]:
    """The database's lines. Creates nothing: a missing SQLite file, or a table the mapping
    names that is missing, is what a first sync creates, so only a warning (a typo in either
    would otherwise pass unseen, and the sync fill a new table with the whole CRM)."""
    missing = missing_sqlite_file(settings.database_url)
    if missing is not None:
        return [_missing_file_warning(missing)]
    url = settings.database_url
    db = make_engine(url, create=False)
    try:
        try:
            with db.connect():
                pass
        except SQLAlchemyError as exc:  # the driver's words: host, port, why (not secrets)
            raise ConfigError(f"CRM_SYNC_DATABASE_URL: cannot connect to {safe_url(url)}: "
                              f"{driver_message(exc, url)}") from None
        doing = f"reading the table {spec.table!r}"
        try:
            problems = check_table(db, spec)
            if problems:
                raise ConfigError(
                    f"{settings.mapping_file}: the existing table {spec.table!r} does not fit "
                    "the mapping:\n  " + "\n  ".join(problems) + "\n  (add or alter those "
                    "columns, or map the table's own columns; a table that does not exist is "
                    "created)")
            doing = "reading crm-sync's bookkeeping tables"
            _refuse_another_tenants_table(db, settings, spec)
            if sa.inspect(db).has_table("note_outbox"):  # else the first cycle makes it
                NotesOutbox(db, settings.tenant_id, spec, LocalTable.for_spec(spec)
                            ).refuse_shared()
            StateStore(db, settings.tenant_id).refuse_new_table(spec.table)
            doing = f"reading the table {spec.table!r} and the database's tables"
            absent = absent_table_warning(db, spec)
            warnings = [absent] if absent else table_warnings(db, spec)
        except SQLAlchemyError as exc:  # connected: not a connection problem, say what failed
            raise ConfigError(f"CRM_SYNC_DATABASE_URL: connected to {safe_url(url)}, but "
                              f"{doing} failed: {driver_message(exc, url)}") from None
    finally:
        db.dispose()
    return [*(f"warning: {w}" for w in warnings), f"database {safe_url(url)}"]


def _missing_file_warning(path: Path) -> str:
    text = f"warning: the SQLite file {path} does not exist: the first `sync` creates it"
    folder = path.parent
    while not folder.exists():
        folder = folder.parent
    if not folder.is_dir():  # a file where a folder must be: `sync` could not make it
        raise ConfigError(f"CRM_SYNC_DATABASE_URL: the SQLite file {path} cannot be created: "
                          f"{folder} is a file, not a folder")
    if folder != path.parent:
        text += f" (and its folder {path.parent})"
    return text


def _refuse_another_tenants_table(db: Engine, settings: Settings, spec: MappingSpec) -> None:
    """The cycle's refusal (StateStore.refuse_another_tenants_table), before any cycle."""
    table = LocalTable.for_spec(spec).table
    inspector = sa.inspect(db)
    if not (inspector.has_table("sync_state")
            and inspector.has_table(table.name, schema=table.schema)):
        return  # no bookkeeping or no table yet: the first cycle makes them
    store = StateStore(db, settings.tenant_id)
    if store.is_empty():
        store.refuse_another_tenants_table(table.c[spec.key_column])


def layout_problems(spec: MappingSpec, layout: Mapping[str, LayoutField]
                    ) -> list[tuple[int, str]]:
    """(index in fields, problem): each way the mapping's dynamic attributes disagree with the
    tenant's layout."""
    problems: list[tuple[int, str]] = []
    for i, f in enumerate(spec.fields):
        if f.dynamic is None:
            continue
        where = f"fields[{i}].dynamic (column {f.column!r})"
        have = layout.get(f.dynamic)
        if have is None:
            problems.append((i, f"{where}: dynamic field_code {f.dynamic!r} is not in the tenant's "
                            f"layout; it has: " + (", ".join(
                                f"{c} ({v.field_name}, {v.field_type})"
                                for c, v in sorted(layout.items())) or "none")))
        elif have.field_type != f.field_type:
            problems.append((i, f"{where}: dynamic {f.dynamic!r} ({have.field_name}) is a "
                            f"{have.field_type} in the tenant's layout, the mapping says "
                            f"field_type {f.field_type!r}"))
        elif f.values and have.options:
            missing = sorted(set(f.values.values()) - set(have.options))
            if missing:
                problems.append((i, f"{where}: values maps to {', '.join(map(repr, missing))}, "
                                f"not options of {f.dynamic!r} ({', '.join(have.options)})"))
    return problems


async def _online(settings: Settings, spec: MappingSpec) -> list[str]:
    from sync.api.client import OmiClient

    async with OmiClient(settings.base_url, settings.api_key.get_secret_value(),
                         timeout=settings.read_timeout, max_retries=settings.max_retries) as c:
        await c.authenticate()
        layout = {f.field_code: f for f in await c.layout()}
    problems = layout_problems(spec, layout)
    if problems:
        file = settings.mapping_file
        raise ConfigError("the mapping does not fit the tenant's dynamic attribute layout:\n  "
                          + "\n  ".join(f"{file}:{locate(file, ('fields', i, 'dynamic')) or '?'}"
                                        f": {msg}" for i, msg in problems))
    return [f"API key accepted by {settings.base_url} (fingerprint "
            f"{settings.api_key_fingerprint})", layout_listing(spec, layout)]


def layout_listing(spec: MappingSpec, layout: Mapping[str, LayoutField]) -> str:
    """The tenant's dynamic attributes, one line each, so a code can be copied into the
    mapping (`dynamic: <code>` with its `field_type`), and which of them the mapping maps."""
    if not layout:
        return "dynamic attribute layout: none (the tenant has no dynamic attributes)"
    columns = {f.dynamic: f.column for f in spec.fields if f.dynamic is not None}
    lines = [f"dynamic attribute layout: {len(layout)} field{'s' * (len(layout) != 1)}, " + (
        f"the mapping's {len(columns)} present" if columns else
        "none mapped (`dynamic: <field_code>` with its `field_type` maps one)") + ":"]
    for code, f in layout.items():  # in the tenant's order
        line = f"    {code}: {f.field_name}, {f.field_type}"
        if f.is_required:
            line += ", required"
        if f.options:
            line += f" (options: {', '.join(f.options)})"
        if code in columns:
            line += f"; mapped to column {columns[code]!r}"
        lines.append(line)
    return "\n".join(lines)
