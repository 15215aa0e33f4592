"""The mapped local table: created or adopted from the mapping, read in key order, written
with optimistic checks so that a row an app changes during a cycle is never overwritten."""

from __future__ import annotations

import functools
import hashlib
import math
import sqlite3
from collections.abc import Callable, Collection, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

import msgspec
import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Connection, Engine

from sync.mapping import MappingSpec
from sync.store import pgcopy
from sync.store.bulk import MultiValues


class _AsStored(sa.types.TypeDecorator[Any]):
    """A column whose values SQLite stores as an app wrote them: a value the type cannot read
    (a date `31/02/2020`, JSON `VIP, Khách lẻ`) is returned as it is, so the converter
    reports that row, naming the column, instead of the read failing for every row it is read
    with."""

    def result_processor(self, dialect: Any, coltype: Any) -> Any:
        inner = super().result_processor(dialect, coltype)
        if inner is None:
            return None

        def process(value: Any) -> Any:
            try:
                return inner(value)
            except ValueError:  # json.JSONDecodeError too
                return value

        return process


class _Date(_AsStored):
    impl = sa.Date
    cache_ok = True


class _Json(_AsStored):
    """SQLite's JSON column. A dict, list or text is written by msgspec (a tenth of
    `json.dumps`'s time, which SQLAlchemy calls for every row an import writes): compact, with
    non-ASCII as UTF-8, as readable to any JSON reader. A value msgspec would write `null` into
    (a NaN or infinite float, which `json.dumps` keeps as `NaN`/`Infinity`), one it refuses (a
    lone surrogate, which JSON text may escape and `json.dumps` escapes again), or one of
    another type, is written by SQLAlchemy's own processor as before."""

    impl = sa.JSON
    cache_ok = True

    def bind_processor(self, dialect: Any) -> Any:
        inner = super().bind_processor(dialect)
        if inner is None or getattr(dialect, "_json_serializer", None) is not None:
            return inner  # an engine given its own serializer keeps it

        def process(value: Any) -> Any:
            if type(value) in _MSGSPEC_JSON:
                try:
                    out = _json_encode(value)
                except Exception:  # e.g. a lone surrogate (an app's "\ud83d"): as before
                    return inner(value)
                if b"null" not in out:  # else perhaps a float JSON cannot hold: as before
                    return out.decode("utf-8")
            return inner(value)

        return process


class _Number(sa.types.TypeDecorator[float]):
    """A number column. On PostgreSQL a float is bound as the decimal its repr() spells: an
    adopted NUMERIC column then holds exactly that, as COPY writes it (a float8 parameter is
    cast to numeric with 15 significant digits: 12345678901234.57 became ...234.6, which read
    as an app's edit), and a double precision column the same float as before."""

    impl = sa.Float
    cache_ok = True

    def process_bind_param(self, value: Any, dialect: sa.Dialect) -> Any:
        if type(value) is float and dialect.name == "postgresql" and math.isfinite(value):
            return Decimal(repr(value))
        return value


_MSGSPEC_JSON = frozenset({dict, list, str})
_json_encode = msgspec.json.Encoder().encode


_TYPES: dict[str, Callable[[], sa.types.TypeEngine[Any]]] = {
    "text": sa.Text,
    "integer": sa.BigInteger,
    "number": _Number,
    "date": _Date,
    "boolean": sa.Boolean,
    # None as SQL NULL, as an app writes "no value" (not the JSON text null)
    "json": lambda: _Json(none_as_null=True).with_variant(postgresql.JSONB(none_as_null=True),
                                                          "postgresql"),
    "timestamp": lambda: sa.DateTime(timezone=True),
}
Row = dict[str, Any]


def column_types(spec: MappingSpec) -> dict[str, str]:
    cols: dict[str, str] = dict(spec.columns)
    if spec.updated_at_column:
        cols[spec.updated_at_column] = "timestamp"
    return cols


def build_table(spec: MappingSpec, metadata: sa.MetaData | None = None) -> sa.Table:
    cols = []
    for name, kind in column_types(spec).items():
        if name == spec.key_column:
            cols.append(sa.Column(name, sa.String(255), primary_key=True))
        else:
            cols.append(sa.Column(name, _TYPES[kind](), nullable=True))
    return sa.Table(spec.table, metadata or sa.MetaData(), *cols)


def sqlite_affinity(declared: str) -> str:
    """SQLite's affinity for a column's declared type, by its documented rules (first match
    wins; datatype3.html section 3.1)."""
    t = declared.upper()
    if "INT" in t:
        return "INTEGER"
    if "CHAR" in t or "CLOB" in t or "TEXT" in t:
        return "TEXT"
    if "BLOB" in t or not t:
        return "BLOB"
    if "REAL" in t or "FLOA" in t or "DOUB" in t:
        return "REAL"
    return "NUMERIC"


def ensure_table(engine: Engine, spec: MappingSpec) -> sa.Table:
    """Create the table when absent; otherwise reflect-check it. Returns the mapped Table."""
    table = build_table(spec)
    try:
        table.metadata.create_all(engine, checkfirst=True)
    except sa.exc.DatabaseError:
        # Replicas starting together on an empty database race to create it: the loser's
        # CREATE fails, which is fine if the table is there now.
        if not sa.inspect(engine).has_table(spec.table):
            raise
    return table


@functools.lru_cache(maxsize=16)
def _literal_image(image: sa.ColumnElement[str], dialect: sa.Dialect) -> sa.ColumnElement[str]:
    """`image` with its constants written in, compiled once per engine rather than per chunk
    (half a millisecond on SQLite). Keyed by identity: LocalTable.fingerprint gives the same
    image object for the same table and arguments, in every cycle."""
    text = image.compile(dialect=dialect, compile_kwargs={"literal_binds": True})
    return sa.literal_column(str(text), sa.Text)


@functools.lru_cache(maxsize=16)
def _fingerprint(table: sa.Table, dialect: str, columns: tuple[str, ...], salt: str,
                 text_columns: frozenset[str], blobs: bool, json: bool
                 ) -> sa.ColumnElement[str] | None:
    """LocalTable.fingerprint, built once for each set of arguments (`json`: SQLite has
    json_array, 3.38+)."""
    cols = [table.c[c] for c in columns]
    if dialect == "sqlite" and json:
        # JSON is built in from 3.38: one call, types kept ([1] is not ["1"]). A REAL
        # goes in as [its quote()] (JSON writes 15 digits, quote() as many as it takes to
        # round-trip), and so does a BLOB (JSON cannot hold one): a nested array, which
        # no TEXT value can look like. A column that holds no REAL tests for BLOB only,
        # which yields the same image for a third less work; without `blobs`, it is
        # passed as it is.
        def value(c: sa.Column[Any]) -> sa.ColumnElement[Any]:
            if c.name in text_columns:
                if not blobs:
                    return c
                test = sa.func.typeof(c) == "blob"
            else:
                test = sa.func.typeof(c).in_(("real", "blob") if blobs else ("real",))
            return sa.case((test, sa.func.json_array(sa.func.quote(c))), else_=c)

        return sa.func.json_array(sa.literal(salt, sa.Text), *map(value, cols),
                                  type_=sa.Text)
    if dialect == "sqlite":
        image: sa.ColumnElement[str] = sa.literal(salt, sa.Text)
        for col in cols:
            image = image.op("||")(",").op("||")(sa.func.quote(col))
        return image
    if dialect == "postgresql":
        # hashtextextended (PostgreSQL 11+; hash partitioning relies on it staying the
        # same), seeded with the salt: the no-op cycle's scan of 100k rows took 330 ms in
        # the server against 393 with md5(salt || text). Unequal to an md5 recorded before:
        # each row is read and compared once after the upgrade.
        seed = int.from_bytes(hashlib.blake2b(salt.encode(), digest_size=8).digest(),
                              "big", signed=True)
        return sa.cast(sa.func.hashtextextended(sa.cast(sa.func.ROW(*cols), sa.Text),
                                                sa.literal(seed, sa.BigInteger)), sa.Text)
    return None


# Rows per multi-row INSERT: SQLite takes at most 32,766 parameters in one statement.
_MULTI_ROWS = 500


def _insert_new_stmt(table: sa.Table, key_column: str, dialect: sa.Dialect,
                     image: sa.ColumnElement[str] | None,
                     values: list[dict[str, Any]] | None = None) -> sa.Insert:
    """INSERT .. ON CONFLICT (key) DO NOTHING RETURNING key[, fingerprint]."""
    insert = sqlite.insert if dialect.name == "sqlite" else postgresql.insert
    stmt = insert(table) if values is None else insert(table).values(values)
    return _skipping_taken(stmt, table, key_column, dialect, image)


def _skipping_taken(stmt: Any, table: sa.Table, key_column: str, dialect: sa.Dialect,
                    image: sa.ColumnElement[str] | None) -> sa.Insert:
    """`stmt` (an SQLite or PostgreSQL INSERT) with ON CONFLICT (key) DO NOTHING RETURNING
    key[, fingerprint]."""
    out: sa.Insert = (stmt.on_conflict_do_nothing(index_elements=[table.c[key_column]])
                      .returning(table.c[key_column], *_returned(image, dialect)))
    return out


@functools.lru_cache(maxsize=32)
def _staged(table: sa.Table, key_column: str, cols: tuple[str, ...], dialect: sa.Dialect,
            image: sa.ColumnElement[str] | None) -> pgcopy.Staged:
    """insert_new's statement through COPY (PostgreSQL), built once per column set."""
    return pgcopy.Staged(table, cols, dialect,
                         lambda stmt: _skipping_taken(stmt, table, key_column, dialect, image))


def _returned(image: sa.ColumnElement[str] | None, dialect: sa.Dialect
              ) -> list[sa.ColumnElement[Any]]:
    """The fingerprint as a RETURNING column: its constants written into the SQL, as a
    multi-row insert cannot bind parameters in RETURNING."""
    return [] if image is None else [_literal_image(image, dialect)]


@functools.lru_cache(maxsize=32)
def _multi_values(table: sa.Table, key_column: str, cols: tuple[str, ...], n: int,
                  dialect: sa.Dialect, image: sa.ColumnElement[str] | None
                  ) -> MultiValues | None:
    """The insert of `n` rows of these columns, compiled once (a chunk's size repeats)."""
    return MultiValues.of([table.c[c] for c in cols], n, dialect,
                          lambda values: _insert_new_stmt(table, key_column, dialect, image,
                                                          values))


@dataclass(frozen=True, slots=True)
class LocalTable:
    table: sa.Table
    key_column: str

    @classmethod
    def for_spec(cls, spec: MappingSpec) -> LocalTable:
        return cls(build_table(spec), spec.key_column)

    @property
    def key(self) -> sa.Column[Any]:
        return self.table.c[self.key_column]

    def load(self, conn: Connection, keys: Collection[str], *,
             lock: bool = False) -> dict[str, Row]:
        """Rows by key. `lock` takes row locks (PostgreSQL) for a read-check-write."""
        if not keys:
            return {}
        q = sa.select(self.table).where(self.key.in_(list(keys)))
        if lock and conn.dialect.name == "postgresql":
            q = q.with_for_update()
        return {r[self.key_column]: dict(r) for r in conn.execute(q).mappings()}

    def fingerprint(self, dialect: str, columns: Sequence[str], salt: str, *,
                    text_columns: Collection[str] = (), blobs: bool = True
                    ) -> sa.ColumnElement[str] | None:
        """A row's fingerprint over `columns`, computed by the database, so that finding the
        rows an app changed reads no row into Python. SQLite: an exact image of the values
        (`json_array`, or `quote()`s joined before SQLite 3.38: unambiguous, and SQLite has no
        hash function); PostgreSQL: a 64-bit hash of the row constructor's text. `salt` (the
        mapping's) makes a new mapping see every row anew. `text_columns`: SQLite columns that
        cannot hold a REAL (text_affinity). None for other databases: rows are then always read
        and converted.

        `blobs=False`: on SQLite 3.38+, the same image of every row that holds no BLOB, and an
        error ("JSON cannot hold BLOB values") on a row that does, for less work: the
        change-detection pass tries it first (`StateStore.agreed_rows`).

        The same arguments give the same expression object, so that the caches keyed by it
        (`_literal_image`, `_multi_values`, `_staged`) hit from one cycle to the next: the
        daemon builds a SyncEngine, and so asks for its fingerprints, every cycle."""
        return _fingerprint(self.table, dialect, tuple(columns), salt, frozenset(text_columns),
                            blobs, sqlite3.sqlite_version_info >= (3, 38))

    def text_affinity(self, engine: Engine) -> frozenset[str]:
        """SQLite: the table's columns of TEXT affinity, which hold no REAL (SQLite stores a
        number written to one as text). Empty elsewhere."""
        if engine.dialect.name != "sqlite":
            return frozenset()
        with engine.connect() as conn:
            name = conn.dialect.identifier_preparer.quote(self.table.name)
            declared = conn.exec_driver_sql(f"PRAGMA table_info({name})").all()
        return frozenset(row[1] for row in declared if sqlite_affinity(row[2]) == "TEXT")

    def fingerprints(self, conn: Connection, keys: Collection[str],
                     image: sa.ColumnElement[str]) -> dict[str, str]:
        """The fingerprints of these keys' rows (a key without a row is absent)."""
        out: dict[str, str] = {}
        keys = list(keys)
        for start in range(0, len(keys), 500):
            q = sa.select(self.key, image).where(self.key.in_(keys[start:start + 500]))
            out.update((str(k), str(v)) for k, v in conn.execute(q))
        return out

    def load_fingerprinted(self, conn: Connection, keys: Collection[str],
                           image: sa.ColumnElement[str] | None
                           ) -> tuple[dict[str, Row], dict[str, str]]:
        """Rows by key, and their fingerprints read by the same statement (two statements
        could see two versions of a row an app is writing)."""
        if image is None or not keys:
            return self.load(conn, keys), {}
        names = list(self.table.c.keys())  # the fingerprint comes last, by position
        rows: dict[str, Row] = {}
        prints: dict[str, str] = {}
        for r in conn.execute(sa.select(self.table, image).where(self.key.in_(list(keys)))):
            row = dict(zip(names, r[:-1], strict=True))
            key = row[self.key_column]
            rows[key], prints[key] = row, r[-1]
        return rows, prints

    def iter_keys(self, engine: Engine, chunk: int = 5000) -> Iterator[list[str]]:
        """Every key in order, chunk by chunk: the cheap walk that finds rows a listing did
        not show (only those rows are then read whole)."""
        last: str | None = None
        while True:
            q = sa.select(self.key).order_by(self.key).limit(chunk)
            if last is not None:
                q = q.where(self.key > last)
            with engine.connect() as conn:
                keys = [str(k) for k in conn.execute(q).scalars()]
            if not keys:
                return
            yield keys
            last = keys[-1]

    def whole_row(self, conn: Connection, key: str) -> dict[str, Any] | None:
        """Every column of a row, the ones the mapping does not name too (a tombstone's), as
        the driver reads them."""
        query = (sa.select(sa.text("*")).select_from(sa.table(self.table.name))
                 .where(sa.column(self.key_column) == key))
        row = conn.execute(query).first()
        return None if row is None else dict(row._mapping)

    def is_empty(self, conn: Connection) -> bool:
        return not conn.execute(sa.select(sa.exists().select_from(self.table))).scalar()

    def count(self, conn: Connection) -> int:
        return int(conn.execute(sa.select(sa.func.count()).select_from(self.table)).scalar_one())

    def insert_new(self, conn: Connection, rows: Sequence[Mapping[str, Any]],
                   image: sa.ColumnElement[str] | None = None) -> dict[str, str | None]:
        """Insert rows whose key is free. Returns the keys actually inserted, each with its
        fingerprint (`image`, the `fingerprint()` expression) as the insert stored it, where
        the database returns it with the insert (else None: read it back if needed)."""
        if not rows:
            return {}
        dialect = conn.dialect
        if dialect.name == "postgresql" and dialect.driver == "psycopg":
            if len(rows) >= pgcopy.MIN_ROWS and pgcopy.usable(conn):
                cols = tuple(sorted(set().union(*(r.keys() for r in rows))))
                staged = _staged(self.table, self.key_column, cols, dialect, image)
                return {str(r[0]): (str(r[1]) if image is not None else None)
                        for r in staged.execute(conn, rows)}
            return self._insert_new_pipelined(conn, rows, image)
        if dialect.name in ("sqlite", "postgresql") and dialect.insert_returning:
            return self._insert_new_returning(conn, rows, image)
        present = set(self.load(conn, [r[self.key_column] for r in rows], lock=True))
        fresh = [dict(r) for r in rows if r[self.key_column] not in present]
        if fresh:
            self._insert(conn, fresh)
        return dict.fromkeys((r[self.key_column] for r in fresh), None)

    def _insert_new_returning(self, conn: Connection, rows: Sequence[Mapping[str, Any]],
                              image: sa.ColumnElement[str] | None = None
                              ) -> dict[str, str | None]:
        # one statement per part: a key an app inserted meanwhile is skipped, atomically
        dialect = conn.dialect
        cols = tuple(sorted(set().union(*(r.keys() for r in rows))))
        inserted: list[Any] = []
        for start in range(0, len(rows), _MULTI_ROWS):
            part = rows[start:start + _MULTI_ROWS]
            multi = _multi_values(self.table, self.key_column, cols, len(part), dialect, image)
            if multi is not None:
                inserted += multi.execute(conn, part)
            else:
                inserted += conn.execute(_insert_new_stmt(self.table, self.key_column, dialect,
                                                          image),
                                         [{c: r.get(c) for c in cols} for r in part])
        return {str(r[0]): (str(r[1]) if image is not None else None) for r in inserted}

    def _insert_new_pipelined(self, conn: Connection, rows: Sequence[Mapping[str, Any]],
                              image: sa.ColumnElement[str] | None = None
                              ) -> dict[str, str | None]:
        """insert_new through psycopg's own executemany: one INSERT .. ON CONFLICT DO NOTHING
        RETURNING per row, pipelined. SQLAlchemy's form of it (one multi-row VALUES) took 3-4
        times as long for 500 rows, the most expensive step of an import into PostgreSQL."""
        import psycopg  # the driver of this path only

        dialect = conn.dialect
        cols = [self.table.c[c] for c in set().union(*(r.keys() for r in rows))]
        names = [f"p{i}" for i in range(len(cols))]  # plain bind names: no escaping
        stmt = (postgresql.insert(self.table)
                .values({c.name: sa.bindparam(n, type_=c.type)
                         for c, n in zip(cols, names, strict=True)})
                .on_conflict_do_nothing(index_elements=[self.key])
                .returning(self.key, *_returned(image, dialect)))
        procs = [c.type.dialect_impl(dialect).bind_processor(dialect) for c in cols]
        params = [{n: (v if p is None else p(v)) for n, p, v in
                   zip(names, procs, [r.get(c.name) for c in cols], strict=True)} for r in rows]
        driver = conn.connection.driver_connection
        assert isinstance(driver, psycopg.Connection)
        inserted: dict[str, str | None] = {}
        with driver.cursor() as cursor:
            cursor.executemany(str(stmt.compile(dialect=dialect)), params, returning=True)
            while True:
                inserted.update((str(row[0]), str(row[1]) if image is not None else None)
                                for row in cursor.fetchall())
                if not cursor.nextset():
                    return inserted

    def _insert(self, conn: Connection, rows: list[dict[str, Any]]) -> None:
        # Every row must name the same columns for one executemany.
        cols = set().union(*(r.keys() for r in rows))
        conn.execute(self.table.insert(), [{c: r.get(c) for c in cols} for r in rows])

    def update_many(self, conn: Connection,
                    updates: Iterable[tuple[str, Mapping[str, Any]]]) -> None:
        """Set these values in these rows. A key given twice gets its values merged in order,
        as one UPDATE after the other would leave the row; then one executemany per set of
        columns (a statement per row cost SQLAlchemy's and the driver's per-statement work,
        and a round trip each on PostgreSQL: most of a cycle that pulls many CRM edits)."""
        merged: dict[str, dict[str, Any]] = {}
        for key, values in updates:
            if values:
                merged.setdefault(key, {}).update(values)
        # bind names no column has: SQLAlchemy would take a key named like a column for it
        prefix = "b_"
        while any(c.key.startswith(prefix) for c in self.table.c):
            prefix += "_"
        groups: dict[tuple[str, ...], list[dict[str, Any]]] = {}
        for key, values in merged.items():
            cols = tuple(sorted(values))
            params = {f"{prefix}{i}": values[c] for i, c in enumerate(cols)}
            groups.setdefault(cols, []).append({f"{prefix}key": key, **params})
        for cols, params_list in groups.items():
            stmt = (self.table.update().where(self.key == sa.bindparam(f"{prefix}key"))
                    .values({self.table.c[c]: sa.bindparam(f"{prefix}{i}",
                                                           type_=self.table.c[c].type)
                             for i, c in enumerate(cols)}))
            conn.execute(stmt, params_list)

    def delete(self, conn: Connection, keys: Collection[str]) -> None:
        if keys:
            conn.execute(self.table.delete().where(self.key.in_(list(keys))))
