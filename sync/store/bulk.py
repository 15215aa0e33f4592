"""The driver directly, without SQLAlchemy's per-row handling, for the two hottest bulk paths.

For each row of an executemany SQLAlchemy builds a parameter dict and runs every column
through its generic bind machinery: about 10 µs a row, a twentieth of a 100k import on SQLite.
`Positional` compiles the statement once (SQLAlchemy still writes the SQL) and hands the
driver plain tuples, applying only the bind processors the columns' types do have (the same
functions SQLAlchemy would call), so what is stored is the same.

Only for qmark placeholders (SQLite); `Positional.of` answers None for the others, which keep
the ordinary path.

`driver_rows` reads the other way: the change-detection pass reads every row of the local
table each cycle, and SQLAlchemy's Row objects cost about 0.6 µs a row; it returns the
driver's own tuples (SQLite and PostgreSQL).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

from sqlalchemy import Connection, Dialect, Select
from sqlalchemy.exc import DBAPIError
from sqlalchemy.sql import ClauseElement
from sqlalchemy.sql.compiler import SQLCompiler


class Positional:
    def __init__(self, sql: str, names: Sequence[str],
                 processors: Sequence[Callable[[Any], Any] | None]) -> None:
        self.sql, self.names = sql, tuple(names)
        self._convert = tuple((i, p) for i, p in enumerate(processors) if p is not None)

    @classmethod
    def of(cls, stmt: ClauseElement, dialect: Dialect, names: Sequence[str]) -> Positional | None:
        """`stmt` (an INSERT, maybe with ON CONFLICT) compiled for rows keyed by `names`;
        None when the driver's placeholders are not positional."""
        if dialect.paramstyle != "qmark":  # the one tested (SQLite)
            return None
        compiled = stmt.compile(dialect=dialect, column_keys=list(names))
        if not isinstance(compiled, SQLCompiler):
            return None
        order = compiled.positiontup
        if order is None or sorted(order) != sorted(names):
            return None  # a statement with binds of its own: not this shortcut's business
        return cls(str(compiled), order, [compiled.binds[n].type.bind_processor(dialect)
                                          for n in order])

    def execute(self, conn: Connection, rows: Sequence[Mapping[str, Any]]) -> None:
        names, convert = self.names, self._convert
        params: list[tuple[Any, ...]] = []
        for row in rows:
            values = [row[n] for n in names]
            for i, process in convert:
                values[i] = process(values[i])
            params.append(tuple(values))
        conn.exec_driver_sql(self.sql, params)


def driver_rows(conn: Connection, query: Select[Any]) -> list[tuple[Any, ...]]:
    """The rows of a query of plain values (no bind or result processing needed), as the
    driver's own tuples. The driver's errors are raised as SQLAlchemy's, like every other
    query's."""
    dialect = conn.dialect
    compiled = query.compile(dialect=dialect, compile_kwargs={"render_postcompile": True})
    params = compiled.construct_params()
    sql, args = str(compiled), (params if compiled.positiontup is None
                                else tuple(params[name] for name in compiled.positiontup))
    cursor = conn.connection.cursor()
    try:
        cursor.execute(sql, args)
        return list(cursor.fetchall())
    except dialect.loaded_dbapi.Error as exc:
        raise DBAPIError.instance(sql, args, exc, dialect.loaded_dbapi.Error,
                                  dialect=dialect) from exc
    finally:
        cursor.close()
