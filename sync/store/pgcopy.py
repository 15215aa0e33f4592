"""PostgreSQL bulk inserts through COPY into a temporary staging table (psycopg).

A first import into PostgreSQL is limited by the cycle's own process, and most of what it does
there is psycopg's executemany: Python for every row of every statement (binding, pipelining,
reading each result). COPY hands the rows over in one stream, formatted by psycopg's C code.
The rows go into a temporary table with the target's columns (`CREATE TEMP TABLE .. AS SELECT
.. WITH NO DATA`: the same types, so PostgreSQL parses each value as it would for the target),
then one `INSERT .. SELECT` moves them: the target's ON CONFLICT and RETURNING work as for any
INSERT, in the caller's transaction, so an error leaves nothing of the batch behind.

The staging table lives for one transaction (ON COMMIT DROP): made from the target as it is
then (a column altered since cannot go through a stale copy of its type), whatever session a
transaction pooler hands over, and emptied before each use (two batches in one transaction).
A rollback takes everything back. Values go through the columns' bind processors (the
functions SQLAlchemy would call), so the values stored are those an executemany stores; the
text of a `json` or `numeric` column can differ (COPY keeps a float's every digit, and JSON
as the serialiser wrote it).
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import sqlalchemy as sa
from sqlalchemy import Connection, Dialect, Insert
from sqlalchemy.dialects import postgresql
from sqlalchemy.exc import DBAPIError

from sync.store.bulk import Bound

__all__ = ["MIN_ROWS", "Staged", "usable"]

# From this many rows an insert goes through COPY; fewer cost less as they are (the staging
# table's round trips).
MIN_ROWS = 100
_TEMP_ALLOWED = "crm_sync_temp_tables"  # the connection's info key


def usable(conn: Connection) -> bool:
    """Whether this connection can COPY this way: PostgreSQL through psycopg (3), as a user
    who may create temporary tables (PostgreSQL grants it to everyone unless an administrator
    revoked it; asked once per connection)."""
    if conn.dialect.name != "postgresql" or conn.dialect.driver != "psycopg":
        return False
    info = conn.connection.info
    if _TEMP_ALLOWED not in info:
        info[_TEMP_ALLOWED] = bool(conn.scalar(sa.text(
            "SELECT has_database_privilege(current_database(), 'TEMPORARY')")))
    return bool(info[_TEMP_ALLOWED])


class Staged(Bound):
    """An INSERT of rows of `names` into `table` through a staging table. `finish(insert)`
    gives the statement its ON CONFLICT and RETURNING; `extra` names columns the SELECT
    fills from parameters of the execution, the same for every row (a save's `updated_at`)."""

    def __init__(self, table: sa.Table, names: Sequence[str], dialect: Dialect,
                 finish: Callable[[Insert], Insert], extra: Sequence[str] = ()) -> None:
        columns = [table.c[n] for n in names]
        super().__init__("", names, [c.type.dialect_impl(dialect).bind_processor(dialect)
                                     for c in columns])
        tag = hashlib.sha1(repr((table.fullname, tuple(names))).encode()).hexdigest()[:16]
        # named in pg_temp, so that no table of the search path can stand in for it
        stage = sa.table(f"crm_sync_stage_{tag}", *(sa.column(n) for n in names),
                         schema="pg_temp")
        quote = dialect.identifier_preparer.quote
        name = f"pg_temp.{quote(stage.name)}"
        source = sa.select(*columns).compile(dialect=dialect)
        # Run without parameters, so a `%` in a name must not stay doubled as the compiler
        # escaped it for psycopg's placeholders.
        self.create = (f"CREATE TEMPORARY TABLE IF NOT EXISTS {name} ON COMMIT DROP AS "
                       f"{source} WITH NO DATA; TRUNCATE {name}").replace("%%", "%")
        self.copy = (f"COPY {name} ({', '.join(quote(n) for n in names)}) FROM STDIN"
                     ).replace("%%", "%")
        picked = [*(stage.c[n] for n in names),
                  *(sa.bindparam(n, type_=table.c[n].type) for n in extra)]
        insert = postgresql.insert(table).from_select([*names, *extra], sa.select(*picked))
        self.statement = finish(insert)

    def execute(self, conn: Connection, rows: Sequence[Mapping[str, Any]],
                params: Mapping[str, Any] | None = None) -> list[Any]:
        """Insert rows given as mappings of `names` (a missing one is NULL); the rows
        RETURNING gives."""
        return self._run(conn, self._values(rows, strict=False), params)

    def execute_tuples(self, conn: Connection, rows: Sequence[tuple[Any, ...]],
                       params: Mapping[str, Any] | None = None) -> list[Any]:
        """Insert rows given as tuples in the order of `names`."""
        values = self._processed(list(r) for r in rows) if self._convert else rows
        return self._run(conn, values, params)

    def _run(self, conn: Connection, values: Any, params: Mapping[str, Any] | None
             ) -> list[Any]:
        driver = conn.connection.driver_connection
        dbapi = conn.dialect.loaded_dbapi
        try:
            with driver.cursor() as cursor:  # type: ignore[union-attr]
                cursor.execute(self.create)
                with cursor.copy(self.copy) as copy:
                    for row in values:
                        copy.write_row(row)
        except dbapi.Error as exc:  # raised as SQLAlchemy raises every other driver error
            if getattr(exc, "sqlstate", None) == "42501":  # TEMPORARY revoked: ask again
                conn.connection.info.pop(_TEMP_ALLOWED, None)
            raise DBAPIError.instance(self.copy, None, exc, dbapi.Error,
                                      dialect=conn.dialect) from exc
        result = conn.execute(self.statement, dict(params or {}))
        return list(result.fetchall()) if result.returns_rows else []
