"""The driver directly, without SQLAlchemy's per-row handling, for the two hottest bulk paths.

For each row of an executemany SQLAlchemy builds a parameter dict and runs every column
through its generic bind machinery: about 10 µs a row, a twentieth of a 100k import on SQLite.
`Positional` compiles the statement once (SQLAlchemy still writes the SQL) and hands the
driver plain tuples, applying only the bind processors the columns' types do have (the same
functions SQLAlchemy would call), so what is stored is the same.

Only for qmark placeholders (SQLite); `Positional.of` answers None for the others, which keep
the ordinary path. `MultiValues` does the same for a multi-row INSERT with RETURNING (the
local insert, which must learn which keys it took), as one statement with flat parameters.

`driver_rows` reads the other way: the change-detection pass reads every row of the local
table each cycle, and SQLAlchemy's Row objects cost about 0.6 µs a row; it returns the
driver's own tuples (SQLite and PostgreSQL).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from operator import itemgetter
from typing import Any

from sqlalchemy import Column, Connection, Dialect, Insert, Select, bindparam
from sqlalchemy.exc import DBAPIError
from sqlalchemy.sql import ClauseElement
from sqlalchemy.sql.compiler import SQLCompiler

_NOTHING: Any = object()


class Bound:
    """A compiled statement and its columns' bind processors (the functions SQLAlchemy would
    call). Each column's last value is remembered by identity: a value the rows share (a
    save's `updated_at`, a None) is processed once, not once a row."""

    def __init__(self, sql: str, names: Sequence[str],
                 processors: Sequence[Callable[[Any], Any] | None]) -> None:
        self.sql, self.names, processors = sql, tuple(names), tuple(processors)
        self._processors = dict(zip(self.names, processors, strict=True))
        self._convert = tuple((i, p) for i, p in enumerate(processors) if p is not None)

    def _values(self, rows: Sequence[Mapping[str, Any]], *, strict: bool
                ) -> Iterator[list[Any]]:
        names = self.names
        return self._processed([row[n] for n in names] if strict else [row.get(n) for n in names]
                               for row in rows)

    def _processed(self, rows: Iterable[list[Any]]) -> Iterator[list[Any]]:
        """Each row's values (in the order of `names`) through the columns' processors."""
        convert = self._convert
        last: list[tuple[Any, Any]] = [(_NOTHING, None)] * len(convert)
        for values in rows:
            for k, (i, process) in enumerate(convert):
                value = values[i]
                seen, out = last[k]
                if value is not seen:
                    out = process(value)
                    last[k] = (value, out)
                values[i] = out
            yield values


class Positional(Bound):
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
        return cls(str(compiled), order, [compiled.binds[n].type.dialect_impl(dialect)
                                          .bind_processor(dialect)
                                          for n in order])

    def execute(self, conn: Connection, rows: Sequence[Mapping[str, Any]]) -> None:
        conn.exec_driver_sql(self.sql, [tuple(v) for v in self._values(rows, strict=True)])

    def execute_tuples(self, conn: Connection, names: Sequence[str],
                       rows: Sequence[tuple[Any, ...]], shared: Mapping[str, Any]) -> None:
        """Rows as tuples of `names`, of columns without a bind processor (else ValueError);
        `shared`: the values of the other columns, the same in every row (processed once)."""
        if sorted([*names, *shared]) != sorted(self.names):
            raise ValueError(f"the columns {[*names, *shared]} are not {self.names}")
        if any(self._processors[n] is not None for n in names):
            raise ValueError("a column of the tuples has a bind processor")
        common = tuple(v if (p := self._processors[n]) is None else p(v)
                       for n, v in shared.items())
        position = {n: i for i, n in enumerate([*names, *shared])}
        pick = itemgetter(*(position[n] for n in self.names))
        conn.exec_driver_sql(self.sql, [pick(row + common) for row in rows])


class MultiValues(Bound):
    """`n` rows in one INSERT .. VALUES (..), (..) .. RETURNING, the rows keyed by `names`."""

    def __init__(self, sql: str, names: Sequence[str], n: int,
                 processors: Sequence[Callable[[Any], Any] | None]) -> None:
        super().__init__(sql, names, processors)
        self.n = n

    @classmethod
    def of(cls, columns: Sequence[Column[Any]], n: int, dialect: Dialect,
           statement: Callable[[list[dict[str, Any]]], Insert]) -> MultiValues | None:
        """`statement(values)`: the INSERT of those VALUES (with its ON CONFLICT and
        RETURNING), compiled here; None when the placeholders are not positional or not in
        row order.

        Compiling 500 rows of VALUES takes SQLAlchemy about 85 ms, once per row count and
        process; the statements of one and two rows show what one row's group is, and the
        statement of `n` rows is written from them (checked: the two-row statement must be
        the one-row statement with its group written twice)."""
        if dialect.paramstyle != "qmark":
            return None

        def compiled(rows: int) -> SQLCompiler | None:
            values = [{c.name: bindparam(f"r{j}c{i}", type_=c.type)
                       for i, c in enumerate(columns)} for j in range(rows)]
            out = statement(values).compile(dialect=dialect)
            return out if isinstance(out, SQLCompiler) else None

        one = compiled(1)
        if one is None:
            return None
        # the columns in the order SQLAlchemy wrote them (the table's), the same in every row
        order = [int(name.split("c")[1]) for name in (one.positiontup or ())]

        def in_row_order(c: SQLCompiler | None, rows: int) -> bool:
            return c is not None and c.positiontup == [f"r{j}c{i}" for j in range(rows)
                                                       for i in order]

        if sorted(order) != list(range(len(columns))) or not in_row_order(one, 1):
            return None  # SQLAlchemy wrote the VALUES otherwise: keep its own path
        sql = str(one)
        if n > 1:
            group = "(" + ", ".join("?" * len(columns)) + ")"
            two = compiled(2)
            if (in_row_order(two, 2) and sql.count(group) == 1
                    and str(two) == sql.replace(group, f"{group}, {group}")):
                sql = sql.replace(group, ", ".join([group] * n))
            else:  # written some other way: compile all n rows
                whole = compiled(n)
                if not in_row_order(whole, n):
                    return None
                sql = str(whole)
        ordered = [columns[i] for i in order]
        return cls(sql, [c.name for c in ordered], n,
                   [c.type.dialect_impl(dialect).bind_processor(dialect) for c in ordered])

    def execute(self, conn: Connection, rows: Sequence[Mapping[str, Any]]) -> list[Any]:
        """Insert exactly `n` rows; the rows RETURNING gives, as the driver's tuples (read
        from the driver's cursor: SQLAlchemy's result rows cost about 1 µs a row here)."""
        if len(rows) != self.n:
            raise ValueError(f"{len(rows)} rows for a statement of {self.n}")
        params: list[Any] = []
        for values in self._values(rows, strict=False):
            params += values
        return _fetched(conn, self.sql, params)


def driver_rows(conn: Connection, query: Select[Any]) -> list[tuple[Any, ...]]:
    """The rows of a query of plain values (no bind or result processing needed), as the
    driver's own tuples. The driver's errors are raised as SQLAlchemy's, like every other
    query's."""
    dialect = conn.dialect
    compiled = query.compile(dialect=dialect, compile_kwargs={"render_postcompile": True})
    params = compiled.construct_params()
    sql, args = str(compiled), (params if compiled.positiontup is None
                                else tuple(params[name] for name in compiled.positiontup))
    return _fetched(conn, sql, args)


def _fetched(conn: Connection, sql: str, args: Any) -> list[Any]:
    """Run one statement on the driver's cursor and return its rows as the driver's tuples;
    the driver's errors raised as SQLAlchemy's (an IntegrityError stays one). In
    SQLAlchemy's transaction, begun here if not yet (as its own execute would): else a
    commit-as-you-go caller's commit() would find none, and the rows would be rolled back."""
    dialect = conn.dialect
    if not conn.in_transaction():
        conn.begin()
    cursor = conn.connection.cursor()
    try:
        cursor.execute(sql, args)
        return list(cursor.fetchall())
    except dialect.loaded_dbapi.Error as exc:
        raise DBAPIError.instance(sql, args, exc, dialect.loaded_dbapi.Error,
                                  dialect=dialect) from exc
    finally:
        cursor.close()
