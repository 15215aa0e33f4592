"""Schema migrations (alembic), configured in code: no alembic.ini is needed at runtime.

The scripts live in the package (`sync/migrations/`), found through importlib.resources, so
this works the same from a checkout and from an installed wheel. Our version table is called
`crm_sync_alembic_version` so that an application's own alembic history in the same database
is left alone; autogenerate/compare only ever look at our tables (`include_name`).
"""

from __future__ import annotations

import threading
from importlib.resources import files
from typing import Any

from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Connection, Engine, text
from sqlalchemy.engine import URL

from sync.errors import StoreError
from sync.store import make_engine
from sync.store.schema import TABLE_NAMES, metadata

__all__ = [
    "VERSION_TABLE", "alembic_config", "check_schema", "current_revision", "head_revision",
    "include_name", "is_up_to_date", "schema_diffs", "script_location", "upgrade",
]

VERSION_TABLE = "crm_sync_alembic_version"
# pg_advisory_xact_lock key serialising concurrent upgrades (replicas starting together)
_MIGRATION_LOCK_KEY = 0x63726D5F73796E63  # "crm_sync"
# alembic's `context` and `op` are process-wide proxies: one upgrade at a time per process
_IN_PROCESS = threading.Lock()


def script_location() -> str:
    return str(files("sync").joinpath("migrations"))


def include_name(name: str | None, type_: str, parent_names: Any) -> bool:
    """Alembic filter: only our tables (an application's own tables are none of our business)."""
    return type_ != "table" or name in TABLE_NAMES


def alembic_config(connection: Connection | None = None, url: str | None = None) -> Config:
    cfg = Config()
    cfg.set_main_option("script_location", script_location())
    if url:
        cfg.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    if connection is not None:
        cfg.attributes["connection"] = connection
    return cfg


def upgrade(engine_or_url: Engine | str | URL, revision: str = "head") -> None:
    """Bring the bookkeeping tables to `revision` (default: the newest), in one transaction."""
    own = not isinstance(engine_or_url, Engine)
    engine = make_engine(engine_or_url) if not isinstance(engine_or_url, Engine) else engine_or_url
    try:
        with _IN_PROCESS, engine.begin() as conn:
            if conn.dialect.name == "postgresql":
                conn.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": _MIGRATION_LOCK_KEY})
            elif conn.dialect.name == "sqlite":
                conn.exec_driver_sql("BEGIN IMMEDIATE")  # take the write lock before reading
            command.upgrade(alembic_config(conn), revision)
    finally:
        if own:
            engine.dispose()


def current_revision(engine: Engine) -> str | None:
    """The revision the database is at, None when the tables were never created."""
    with engine.connect() as conn:
        ctx = MigrationContext.configure(conn, opts={"version_table": VERSION_TABLE})
        return ctx.get_current_revision()


def head_revision() -> str:
    head = ScriptDirectory.from_config(alembic_config()).get_current_head()
    if head is None:  # pragma: no cover - the package always ships revisions
        raise StoreError("no migrations found in " + script_location())
    return head


def is_up_to_date(engine: Engine) -> bool:
    return current_revision(engine) == head_revision()


def check_schema(engine: Engine) -> None:
    """Raise StoreError (with the fix) unless the database is at the head revision."""
    current, head = current_revision(engine), head_revision()
    if current != head:
        found = f"at revision {current}" if current else "without the crm-sync tables"
        raise StoreError(
            f"the database {engine.url.render_as_string(hide_password=True)} is {found}, "
            f"expected {head}: run `crm-sync db upgrade`"
        )


def schema_diffs(engine: Engine) -> list[Any]:
    """Differences between the database and `schema.metadata` (empty when they match)."""
    with engine.connect() as conn:
        ctx = MigrationContext.configure(
            conn, opts={"include_name": include_name, "compare_type": True,
                        "version_table": VERSION_TABLE})
        return list(compare_metadata(ctx, metadata))
