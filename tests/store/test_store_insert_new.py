"""LocalTable.insert_new: rows whose key is free are inserted, a key an app holds is skipped
(its row untouched) and left out of the answer; on PostgreSQL with psycopg, through psycopg's
pipelined executemany, which must store exactly what SQLAlchemy's statement stores."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import date
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from sqlalchemy.dialects.sqlite import dialect as sqlite_dialect

from sync.mapping_file import parse_mapping
from sync.store import make_engine
from sync.store.bulk import MultiValues
from sync.store.local import (
    _MULTI_ROWS,
    LocalTable,
    _insert_new_stmt,
    _Json,
    _multi_values,
    ensure_table,
)

from .test_store_fingerprint import BASE_ROW, Rows

ROWS: list[dict[str, Any]] = [
    {"k": "A", **BASE_ROW},
    {"k": "B", **BASE_ROW, "name": "Trần Văn Bình", "tags": None, "extra": None, "points": None},
    {"k": "C", "name": "Chỉ có tên"},  # the other columns left out: NULL
    {"k": "D", **BASE_ROW, "bday": date(2000, 2, 29), "points": 0.1 + 0.2, "qty": -(2**40),
     "vip": False, "tags": [], "extra": {}},
    {"k": "E", **BASE_ROW, "name": "'; DROP TABLE fp_rows; --", "extra": {"a": [1, None]}},
]


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def rows(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Rows]:
    """The mapped table of test_store_fingerprint, in an empty database of each kind."""
    r = Rows(f"sqlite:///{tmp_path}/insert.db" if request.param == "sqlite"
             else str(request.getfixturevalue("fresh_pg_url")))
    try:
        yield r
    finally:
        r.close()


def table_rows(r: Rows) -> dict[str, dict[str, Any]]:
    with r.engine.connect() as conn:
        return {row["k"]: dict(row) for row in conn.execute(sa.select(r.table)).mappings()}


def test_free_keys_are_inserted_and_returned(rows: Rows) -> None:
    with rows.engine.begin() as conn:
        assert rows.local.insert_new(conn, ROWS).keys() == {"A", "B", "C", "D", "E"}
    got = table_rows(rows)
    assert set(got) == {"A", "B", "C", "D", "E"}
    assert got["C"]["name"] == "Chỉ có tên" and got["C"]["bday"] is None
    assert got["D"]["bday"] == date(2000, 2, 29) and got["D"]["qty"] == -(2**40)
    assert got["E"]["name"] == "'; DROP TABLE fp_rows; --"
    with rows.engine.begin() as conn:
        assert rows.local.insert_new(conn, []) == {}


def test_a_key_an_app_holds_is_skipped_and_not_returned(rows: Rows) -> None:
    rows.insert("B", name="Của ứng dụng")
    with rows.engine.begin() as conn:
        assert rows.local.insert_new(conn, ROWS).keys() == {"A", "C", "D", "E"}
    assert table_rows(rows)["B"]["name"] == "Của ứng dụng"
    with rows.engine.begin() as conn:  # all taken now
        assert rows.local.insert_new(conn, ROWS[:2]) == {}


def test_the_fingerprints_returned_are_the_ones_read_back(rows: Rows) -> None:
    """The insert returns each new row's fingerprint as it stored the row (types and affinity
    applied): the very image a later read computes, which the next quick cycle compares."""
    rows.insert("B", name="Của ứng dụng")
    with rows.engine.begin() as conn:
        got = rows.local.insert_new(conn, ROWS, rows.image)
    assert got.keys() == {"A", "C", "D", "E"}
    assert got == {k: rows.print_of(k) for k in got}
    with rows.engine.begin() as conn:  # without an image: keys only
        assert rows.local.insert_new(conn, [{"k": "F", "name": "F"}]) == {"F": None}


@pytest.mark.postgres
def test_psycopg_pipeline_returns_what_sqlalchemy_returns(fresh_pg_url: str) -> None:
    r = Rows(fresh_pg_url)
    try:
        with r.engine.begin() as conn:
            pipelined = r.local._insert_new_pipelined(conn, ROWS, r.image)
        r.execute("DELETE FROM fp_rows")
        with r.engine.begin() as conn:
            returning = r.local._insert_new_returning(conn, ROWS, r.image)
        assert pipelined == returning == {k: r.print_of(k) for k in returning}
    finally:
        r.close()


@pytest.mark.postgres
def test_psycopg_pipeline_stores_what_sqlalchemy_stores(fresh_pg_url: str) -> None:
    r = Rows(fresh_pg_url)
    try:
        assert r.engine.dialect.driver == "psycopg"
        with r.engine.begin() as conn:
            assert r.local._insert_new_pipelined(conn, ROWS).keys() == {"A", "B", "C", "D", "E"}
        pipelined = table_rows(r)
        prints = {k: r.print_of(k) for k in pipelined}
        r.execute("DELETE FROM fp_rows")
        with r.engine.begin() as conn:
            assert r.local._insert_new_returning(conn, ROWS).keys() == {"A", "B", "C", "D", "E"}
        assert table_rows(r) == pipelined
        assert {k: r.print_of(k) for k in pipelined} == prints
        # JSON null and SQL NULL are told apart the same way on both paths
        with r.engine.connect() as conn:
            nulls = conn.execute(sa.text(
                "SELECT k, tags IS NULL, extra IS NULL FROM fp_rows ORDER BY k")).all()
        r.execute("DELETE FROM fp_rows")
        with r.engine.begin() as conn:
            r.local._insert_new_pipelined(conn, ROWS)
        with r.engine.connect() as conn:
            assert conn.execute(sa.text(
                "SELECT k, tags IS NULL, extra IS NULL FROM fp_rows ORDER BY k")).all() == nulls
    finally:
        r.close()


def test_sqlite_multi_row_insert_stores_what_sqlalchemy_stores(tmp_path: Path) -> None:
    """SQLite's insert_new runs one multi-row INSERT on the driver with flat parameters
    (bulk.MultiValues); SQLAlchemy's own statement must store the same values with the same
    storage classes (JSON null and SQL NULL told apart), and return the same fingerprints.
    More rows than one statement takes are split."""
    r = Rows(f"sqlite:///{tmp_path}/multi.db")
    many = ROWS + [{"k": f"M{i:04d}", **BASE_ROW, "qty": i} for i in range(_MULTI_ROWS + 7)]
    columns = ", ".join(f"{c.name}, typeof({c.name})" for c in r.table.c)
    stored = f"SELECT {columns} FROM fp_rows ORDER BY k"
    try:
        dialect = r.engine.dialect
        cols = tuple(sorted(set().union(*(row.keys() for row in many))))
        assert _multi_values(r.table, "k", cols, 5, dialect, r.image) is not None
        with r.engine.begin() as conn:
            multi = r.local._insert_new_returning(conn, many, r.image)
        with r.engine.connect() as conn:
            multi_rows = conn.execute(sa.text(stored)).all()
        r.execute("DELETE FROM fp_rows")
        with r.engine.begin() as conn:  # SQLAlchemy's statement, as the other dialects run it
            result = conn.execute(_insert_new_stmt(r.table, "k", dialect, r.image),
                                  [{c: row.get(c) for c in cols} for row in many])
            plain = {str(k): str(p) for k, p in result}
        with r.engine.connect() as conn:
            assert conn.execute(sa.text(stored)).all() == multi_rows
        assert len(multi) == len(many) and multi == plain
        assert multi == {k: r.print_of(k) for k in multi}
    finally:
        r.close()


def test_a_multi_row_insert_takes_exactly_its_rows() -> None:
    table = sa.Table("t", sa.MetaData(), sa.Column("k", sa.Text, primary_key=True))
    multi = _multi_values(table, "k", ("k",), 2, sqlite_dialect(), None)
    assert multi is not None
    with pytest.raises(ValueError, match="3 rows for a statement of 2"):
        multi.execute(None, [{"k": "a"}, {"k": "b"}, {"k": "c"}])  # type: ignore[arg-type]


@pytest.mark.parametrize("n", [1, 2, 3, 37, _MULTI_ROWS])
def test_a_multi_row_insert_is_the_statement_sqlalchemy_compiles(tmp_path: Path, n: int) -> None:
    """MultiValues writes the n-row statement from the one- and two-row ones: it must be the
    very SQL SQLAlchemy compiles for n rows (the fingerprint in RETURNING included)."""
    r = Rows(f"sqlite:///{tmp_path}/sql.db")
    try:
        dialect = r.engine.dialect
        columns = [r.table.c[c] for c in sorted(r.table.c.keys())]
        multi = _multi_values(r.table, "k", tuple(c.name for c in columns), n, dialect, r.image)
        assert multi is not None
        values = [{c.name: sa.bindparam(f"r{j}c{i}", type_=c.type)
                   for i, c in enumerate(columns)} for j in range(n)]
        whole = _insert_new_stmt(r.table, "k", dialect, r.image, values).compile(dialect=dialect)
        assert multi.sql == str(whole)
        assert multi.sql.count("?") == n * len(columns)
    finally:
        r.close()


def test_a_multi_row_insert_written_otherwise_is_compiled_whole() -> None:
    """A statement whose one-row group cannot be found as such (here: a bound value in the
    RETURNING) is compiled for all its rows, and still takes its rows in order."""
    table = sa.Table("t", sa.MetaData(), sa.Column("k", sa.Text, primary_key=True),
                     sa.Column("v", sa.Text))

    def statement(values: list[dict[str, Any]]) -> sa.Insert:
        return sa.insert(table).values(values).returning(
            table.c.k, sa.func.coalesce(table.c.v, sa.literal_column("'(?, ?)'")))

    multi = MultiValues.of([table.c.k, table.c.v], 3, sqlite_dialect(), statement)
    assert multi is not None and multi.sql.count("(?, ?)") == 4  # 3 rows and the literal
    engine = sa.create_engine("sqlite://")
    try:
        table.create(engine)
        with engine.begin() as conn:
            got = multi.execute(conn, [{"k": "a", "v": "1"}, {"k": "b"}, {"k": "c", "v": "3"}])
        assert sorted(got) == [("a", "1"), ("b", "(?, ?)"), ("c", "3")]
    finally:
        engine.dispose()


def test_sqlite_json_columns_are_written_by_msgspec_and_read_back_alike(tmp_path: Path
                                                                        ) -> None:
    """A JSON column's dict, list or text is written compact with its non-ASCII as UTF-8
    (msgspec, not json.dumps); a value msgspec would write `null` into (an infinite float)
    keeps json.dumps's text. Both, and a row written the old way, read back as they went in."""
    engine = make_engine(f"sqlite:///{tmp_path / 'json.db'}")
    metadata = sa.MetaData()
    table = sa.Table("j", metadata, sa.Column("k", sa.Text, primary_key=True),
                     sa.Column("v", _Json(none_as_null=True)))
    metadata.create_all(engine)
    values = {"dict": {"Kênh": "Cửa hàng", "n": [1, 2.5, True]}, "list": ["VIP", "Khách lẻ"],
              "text": "Bạc", "inf": {"x": float("inf")}, "none": None, "inner null": {"x": None}}
    with engine.begin() as conn:
        conn.execute(table.insert(), [{"k": k, "v": v} for k, v in values.items()])
        conn.exec_driver_sql("INSERT INTO j VALUES ('old', ?)",
                             (json.dumps({"Kênh": "Cửa hàng"}),))
        stored = dict(conn.exec_driver_sql("SELECT k, v FROM j").all())
    assert stored["dict"] == '{"Kênh":"Cửa hàng","n":[1,2.5,true]}'
    assert stored["list"] == '["VIP","Khách lẻ"]' and stored["text"] == '"Bạc"'
    assert stored["inf"] == '{"x": Infinity}' and stored["none"] is None
    with engine.connect() as conn:
        back = dict(conn.execute(sa.select(table.c.k, table.c.v)).all())
    assert back == {**values, "old": {"Kênh": "Cửa hàng"}}
    engine.dispose()


def test_insert_new_on_a_commit_as_you_go_connection_is_committed(tmp_path: Path) -> None:
    """The multi-row insert runs on the driver's cursor; it must still be in SQLAlchemy's
    transaction, or a caller's commit() finds none and the rows it was told were inserted
    are rolled back with the connection (found by a code review)."""
    spec = parse_mapping("table: a_rows\nkey_column: k\nnotes_table: null\n"
                         "fields:\n  - {field: full_name, column: name}\n")
    engine = make_engine(f"sqlite:///{tmp_path / 'a.db'}")
    try:
        ensure_table(engine, spec)
        local = LocalTable.for_spec(spec)
        with engine.connect() as conn:
            assert local.insert_new(conn, [{"k": "a", "name": "An"}]).keys() == {"a"}
            conn.commit()
        with engine.connect() as conn:
            assert local.count(conn) == 1
    finally:
        engine.dispose()


def test_a_json_column_keeps_an_escaped_lone_surrogate(tmp_path: Path) -> None:
    """msgspec refuses a lone surrogate, which JSON text may escape (an app's "\\ud83d"):
    such a value is written by json.dumps, escaped again, and reads back as it was."""
    engine = make_engine(f"sqlite:///{tmp_path / 'surrogate.db'}")
    metadata = sa.MetaData()
    table = sa.Table("j", metadata, sa.Column("k", sa.Text, primary_key=True),
                     sa.Column("v", _Json(none_as_null=True)))
    metadata.create_all(engine)
    value = {"Ghi chú": "Hẹn gọi lại \ud83d"}
    with engine.begin() as conn:
        conn.execute(table.insert(), [{"k": "a", "v": value}])
        assert conn.exec_driver_sql("SELECT v FROM j").scalar_one() == json.dumps(value)
    with engine.connect() as conn:
        assert conn.execute(sa.select(table.c.v)).scalar_one() == value
    engine.dispose()
