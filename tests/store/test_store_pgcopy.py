"""PostgreSQL's bulk inserts through COPY into a staging table (store/pgcopy.py): the local
insert of a large chunk (`insert_new`) and a first import's bookkeeping (`save_fresh`) must
store exactly what the statements they replace store, skip what those skip, and leave nothing
behind when they fail."""

from __future__ import annotations

import os
import secrets
from collections.abc import Iterator
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import pytest
import sqlalchemy as sa
from sqlalchemy import Connection, text
from sqlalchemy.engine import make_url
from sqlalchemy.exc import DBAPIError

from sync import codec
from sync.record import Contact
from sync.store import make_engine, pgcopy
from sync.store.state import StateStore

from .conftest import PG_ENV
from .test_store_fingerprint import BASE_ROW, Rows
from .test_store_insert_new import ROWS, table_rows

# Text COPY must escape: tabs, line breaks, backslashes, the text of its NULL marker; an
# empty string is not NULL
AWKWARD = ["a\tb", "line\nbreak\r\nx", "back\\slash", "\\N", "", " ", "\\", "tab\t\\N\n",
           "Nguyễn\u00a0Thị", "emoji 🙂", '"quoted", and, commas', "'; DROP TABLE fp_rows; --"]


def many_rows(n: int = pgcopy.MIN_ROWS + 17) -> list[dict[str, Any]]:
    out = [dict(r) for r in ROWS]
    for i in range(n - len(out)):
        text_value = AWKWARD[i % len(AWKWARD)]
        out.append({"k": f"M{i:04d}", **BASE_ROW, "name": text_value, "ref_code": text_value,
                    "qty": i - 50, "points": i / 7, "vip": i % 2 == 0,
                    "tags": [text_value, "x"] if i % 3 else None,
                    "extra": {text_value: text_value} if i % 4 else {}})
    return out


@pytest.fixture
def pg(fresh_pg_url: str) -> Iterator[Rows]:
    r = Rows(fresh_pg_url)
    assert r.engine.dialect.driver == "psycopg"
    try:
        yield r
    finally:
        r.close()


def staging_tables(conn: Connection) -> list[tuple[str, int]]:
    """This session's staging tables, each with its row count."""
    names = conn.execute(text("SELECT relname FROM pg_class WHERE relpersistence = 't' "
                              "AND relname LIKE 'crm_sync_stage_%' ORDER BY relname")).scalars()
    return [(n, conn.execute(text(f'SELECT count(*) FROM pg_temp."{n}"')).scalar_one())
            for n in names]


@pytest.mark.postgres
def test_a_large_insert_goes_through_copy_and_stores_what_the_pipeline_stores(pg: Rows) -> None:
    rows = many_rows()
    with pg.engine.begin() as conn:
        copied = pg.local.insert_new(conn, rows, pg.image)
        (_, count), = staging_tables(conn)
        assert count == len(rows)
    stored = table_rows(pg)
    nulls = "SELECT k, tags IS NULL, extra IS NULL, name = '' FROM fp_rows ORDER BY k"
    with pg.engine.connect() as conn:
        copied_nulls = conn.execute(text(nulls)).all()
    pg.execute("DELETE FROM fp_rows")
    with pg.engine.begin() as conn:
        pipelined = pg.local._insert_new_pipelined(conn, rows, pg.image)
    assert len(copied) == len(rows) and copied == pipelined
    assert copied == {k: pg.print_of(k) for k in copied}
    assert table_rows(pg) == stored
    assert stored["M0003"]["name"] == "\\N" and stored["M0004"]["name"] == ""
    with pg.engine.connect() as conn:
        assert conn.execute(text(nulls)).all() == copied_nulls


@pytest.mark.postgres
def test_a_key_an_app_holds_is_skipped_and_not_returned(pg: Rows) -> None:
    pg.insert("M0001", name="Của ứng dụng")
    rows = many_rows()
    with pg.engine.begin() as conn:
        got = pg.local.insert_new(conn, rows, pg.image)
    assert got.keys() == {r["k"] for r in rows} - {"M0001"}
    assert got == {k: pg.print_of(k) for k in got}
    assert table_rows(pg)["M0001"]["name"] == "Của ứng dụng"


@pytest.mark.postgres
def test_the_staging_table_lasts_one_transaction_and_each_batch_copies_its_own(
        pg: Rows) -> None:
    """Two batches in one transaction: the second copies only its rows (the first, deleted in
    between, does not come back); after the commit no staging table is left."""
    first, second = many_rows(), [{**r, "k": "2-" + r["k"]} for r in many_rows()]
    with pg.engine.connect() as conn:
        with conn.begin():
            assert pg.local.insert_new(conn, first).keys() == {r["k"] for r in first}
            conn.execute(text("DELETE FROM fp_rows WHERE k = 'A'"))
            assert pg.local.insert_new(conn, second).keys() == {r["k"] for r in second}
            (_, count), = staging_tables(conn)
            assert count == len(second)
        assert staging_tables(conn) == []
    got = table_rows(pg)
    assert len(got) == len(first) + len(second) - 1 and "A" not in got


@pytest.mark.postgres
def test_a_column_altered_between_two_imports_goes_through_its_new_type(pg: Rows) -> None:
    """The staging table is made from the target at each use: a column whose type changed
    since the last batch of the same session takes the new type, as a plain INSERT would."""
    rows = many_rows()
    with pg.engine.connect() as conn:
        with conn.begin():
            pg.local.insert_new(conn, rows)
        with conn.begin():
            conn.execute(text("DELETE FROM fp_rows"))
            conn.execute(text("ALTER TABLE fp_rows ALTER COLUMN qty TYPE numeric(12, 2)"))
        with conn.begin():
            pg.local.insert_new(conn, [{**r, "qty": 1.25} for r in rows])
        assert set(conn.execute(text("SELECT qty FROM fp_rows")).scalars()) == {
            Decimal("1.25")}


@pytest.mark.postgres
def test_names_with_a_percent_sign_are_copied(fresh_pg_url: str) -> None:
    """psycopg's placeholders made the compiler double a `%` in a name; the staging table's
    statements run without parameters, so it must be single again."""
    engine = make_engine(fresh_pg_url)
    try:
        table = sa.Table("odd%name", sa.MetaData(), sa.Column("k", sa.Text, primary_key=True),
                         sa.Column("rabatt%", sa.Text))
        table.create(engine)
        staged = pgcopy.Staged(table, ("k", "rabatt%"), engine.dialect,
                               lambda stmt: stmt.returning(table.c.k))
        with engine.begin() as conn:
            got = staged.execute(conn, [{"k": str(i), "rabatt%": f"{i}%"} for i in range(3)])
            assert sorted(r[0] for r in got) == ["0", "1", "2"]
            assert conn.execute(sa.select(table.c["rabatt%"]).where(table.c.k == "2")
                                ).scalar_one() == "2%"
    finally:
        engine.dispose()


@pytest.mark.postgres
def test_a_value_the_column_cannot_hold_fails_the_batch_and_leaves_nothing(pg: Rows) -> None:
    """The error is SQLAlchemy's, as for any statement; the transaction holds none of the
    batch, and the next one (on the same session, whose staging table the failed transaction
    created) works."""
    bad = many_rows()
    bad[-1]["qty"] = "not a number"
    with pg.engine.connect() as conn:
        with pytest.raises(DBAPIError, match="not a number"), conn.begin():
            pg.local.insert_new(conn, bad)
        assert table_rows(pg) == {}
        good = many_rows()
        with conn.begin():
            assert pg.local.insert_new(conn, good).keys() == {r["k"] for r in good}
    assert len(table_rows(pg)) == len(good)


def fresh_tuples(n: int, status: str = "synced") -> list[tuple[Any, ...]]:
    """FRESH_COLUMNS' tuples, their texts awkward for COPY."""
    out = []
    for i in range(n):
        name = AWKWARD[i % len(AWKWARD)]
        base = codec.fields_dumps({"full_name": name, "tags": frozenset({name, "x"})})
        out.append((f"k{i:04d}", f"k{i:04d}" if i % 5 else None, f"p-{i}", status, base,
                    codec.text_hash(base), None if i % 3 == 0 else f"print\t{i}",
                    codec.contact_dumps(Contact(ref_id=f"k{i:04d}", full_name=name)),
                    f"d{i}", 2**40 + i if i % 2 else None))
    return out


def stored_states(conn: Connection, tenant: str) -> list[tuple[Any, ...]]:
    return [tuple(v for k, v in r._mapping.items() if k not in ("tenant", "updated_at"))
            for r in conn.execute(text("SELECT * FROM sync_state WHERE tenant = :t "
                                       "ORDER BY key"), {"t": tenant})]


@pytest.mark.postgres
def test_save_fresh_through_copy_stores_what_its_upsert_stores(pg_url: str) -> None:
    engine = make_engine(pg_url)
    try:
        copied, upserted = StateStore(engine, "copy-fresh"), StateStore(engine, "copy-upsert")
        rows = fresh_tuples(pgcopy.MIN_ROWS + 3)
        with copied.begin() as conn:
            copied.save_fresh(conn, rows)
            assert any(count == len(rows) for _, count in staging_tables(conn))
        with upserted.begin() as conn:  # below the threshold: the upsert statement
            for start in range(0, len(rows), pgcopy.MIN_ROWS - 1):
                upserted.save_fresh(conn, rows[start:start + pgcopy.MIN_ROWS - 1])
        with engine.connect() as conn:
            assert stored_states(conn, "copy-fresh") == stored_states(conn, "copy-upsert")
            assert len(stored_states(conn, "copy-fresh")) == len(rows)
        assert copied.load(["k0003", "k0004"]) == upserted.load(["k0003", "k0004"])

        # keys it holds already are updated, every column and the time of writing
        before = datetime.now(UTC)
        with copied.begin() as conn:
            copied.save_fresh(conn, fresh_tuples(pgcopy.MIN_ROWS + 3, status="read_only"))
        with engine.connect() as conn:
            got = conn.execute(text("SELECT count(*), min(status), max(status), "
                                    "min(updated_at) FROM sync_state WHERE tenant = 'copy-fresh'"
                                    )).one()
        assert got[:3] == (len(rows), "read_only", "read_only") and got[3] >= before
    finally:
        engine.dispose()


def test_only_postgresql_through_psycopg_copies() -> None:
    """`usable` answers for PostgreSQL through psycopg only: the other drivers keep their
    statements."""
    sqlite_engine = sa.create_engine("sqlite://")
    try:
        with sqlite_engine.connect() as conn:
            assert not pgcopy.usable(conn)
    finally:
        sqlite_engine.dispose()


@pytest.fixture
def no_temp_url() -> Iterator[str]:
    """A database of its own where PUBLIC lost the right to create temporary tables, and the
    URL of a role (not a superuser) that owns its public schema."""
    base = os.environ.get(PG_ENV)
    if not base:
        pytest.skip(f"{PG_ENV} is not set: no PostgreSQL to test against")
    name = f"crm_sync_notemp_{secrets.token_hex(4)}"
    admin = make_engine(base, isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as conn:
            conn.execute(text(f'CREATE ROLE "{name}" LOGIN'))
            conn.execute(text(f'CREATE DATABASE "{name}" OWNER "{name}"'))
            conn.execute(text(f'REVOKE TEMPORARY ON DATABASE "{name}" FROM PUBLIC, "{name}"'))
        owner = make_engine(make_url(base).set(database=name).render_as_string(
            hide_password=False), isolation_level="AUTOCOMMIT")
        with owner.connect() as conn:
            conn.execute(text(f'ALTER SCHEMA public OWNER TO "{name}"'))
        owner.dispose()
        yield make_url(base).set(database=name, username=name).render_as_string(
            hide_password=False)
    finally:
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
            conn.execute(text(f'DROP ROLE IF EXISTS "{name}"'))
        admin.dispose()


@pytest.mark.postgres
def test_a_user_without_temporary_tables_inserts_the_usual_way(no_temp_url: str) -> None:
    r = Rows(no_temp_url)
    try:
        rows = many_rows()
        with r.engine.begin() as conn:
            assert not pgcopy.usable(conn)
            got = r.local.insert_new(conn, rows, r.image)
        assert len(got) == len(rows) and got == {k: r.print_of(k) for k in got}
        fresh = fresh_tuples(pgcopy.MIN_ROWS + 3)
        with r.store.begin() as conn:
            r.store.save_fresh(conn, fresh)
        assert len(r.store.load([t[0] for t in fresh])) == len(fresh)
    finally:
        r.close()
