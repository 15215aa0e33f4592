"""Row fingerprints computed by the database (LocalTable.fingerprint), read with the rows
(LocalTable.fingerprints) and saved with their states, compared by StateStore.agreed_rows;
and migration 0003, which makes room for them. SQLite (a tmp file) and PostgreSQL (a fresh
schema per test)."""

from __future__ import annotations

import secrets
import sqlite3
from collections.abc import Iterator
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from alembic import command
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import Engine

from sync.convert import Converter
from sync.mapping import MappingSpec
from sync.mapping_file import parse_mapping
from sync.record import Contact
from sync.store import make_engine
from sync.store.local import LocalTable, ensure_table, sqlite_affinity
from sync.store.migrate import (
    alembic_config,
    current_revision,
    head_revision,
    schema_diffs,
    upgrade,
)
from sync.store.schema import sync_state
from sync.store.state import AgreedRows, StateStore, SyncState

MAPPING = """
table: fp_rows
key_column: k
ref_code_column: ref_code
crm_id_column: crm_id
custom_fields_column: extra
notes_table: null
fields:
  - {field: full_name, column: name}
  - {field: birthday, column: bday}
  - {field: tags, column: tags}
  - {custom: Điểm, column: points, type: number}
  - {custom: SL, column: qty, type: integer}
  - {custom: VIP, column: vip, type: boolean}
"""
BASE_ROW: dict[str, Any] = {
    "ref_code": "C1", "crm_id": "p-1", "name": "Nguyễn Thị Ánh", "bday": date(1990, 1, 2),
    "tags": ["Khách lẻ", "VIP"], "points": 1.5, "qty": 3, "vip": True,
    "extra": {"Kênh": "Zalo", "Điểm cũ": "1"}}


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """An EMPTY database of each kind (PostgreSQL: a schema of this test's own)."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path}/fp.db"
    return str(request.getfixturevalue("fresh_pg_url"))


def holds(got: AgreedRows, key: str, public_id: str, digest: str) -> bool:
    """The pass vouches for the listing JSON `digest` as contact `public_id` under `key`."""
    return got.agreed_as(digest) == (public_id, key)


class Rows:
    """The local table of MAPPING and the bookkeeping on one database."""

    def __init__(self, url: str, mapping: str = MAPPING, tenant: str | None = None) -> None:
        upgrade(url)
        self.engine: Engine = make_engine(url)
        self.spec: MappingSpec = parse_mapping(mapping)
        ensure_table(self.engine, self.spec)
        self.local = LocalTable.for_spec(self.spec)
        self.conv = Converter(self.spec)
        self.kind = self.engine.dialect.name
        self.image = self.fingerprint()
        # as the engine has it: the image for rows without BLOBs, which the pass tries first
        self.quick_image = self.local.fingerprint(
            self.kind, self.conv.row_columns, self.conv.row_salt,
            text_columns=self.local.text_affinity(self.engine), blobs=False)
        self.store = StateStore(self.engine, tenant or f"t-{secrets.token_hex(4)}")

    @property
    def table(self) -> sa.Table:
        return self.local.table

    def fingerprint(self, columns: tuple[str, ...] | None = None,
                    salt: str | None = None) -> sa.ColumnElement[str]:
        image = self.local.fingerprint(self.kind, columns or self.conv.row_columns,
                                       self.conv.row_salt if salt is None else salt,
                                       text_columns=self.local.text_affinity(self.engine))
        assert image is not None
        return image

    def insert(self, key: str, **values: Any) -> None:
        with self.engine.begin() as conn:
            conn.execute(self.table.insert().values(k=key, **{**BASE_ROW, **values}))

    def update(self, key: str, **values: Any) -> None:
        with self.engine.begin() as conn:
            n = conn.execute(self.table.update().where(self.table.c.k == key)
                             .values(**values)).rowcount
        assert n == 1

    def execute(self, sql: str, **params: Any) -> None:
        with self.engine.begin() as conn:
            conn.execute(sa.text(sql), params)

    def table_has(self, key: str) -> bool:
        with self.engine.connect() as conn:
            return conn.execute(sa.select(self.table.c.k).where(self.table.c.k == key)
                                ).first() is not None

    def print_of(self, key: str, image: sa.ColumnElement[str] | None = None) -> str:
        with self.engine.connect() as conn:
            value = conn.execute(sa.select(image if image is not None else self.image)
                                 .where(self.table.c.k == key)).scalar_one()
        assert isinstance(value, str) and value
        return value

    def states(self, *keys: str, **kw: Any) -> None:
        values = {"status": "synced", "base": {"full_name": "x"}, **kw}
        with self.store.begin() as conn:
            self.store.save(conn, [SyncState(
                k, ref_id=k, public_id=f"p-{k}",
                remote=Contact(ref_id=k, public_id=f"p-{k}", digest=f"d-{k}"),
                remote_hash=f"d-{k}", **values) for k in keys])

    def stamp(self, *keys: str) -> None:
        """Record the rows' fingerprints as the engine does: read with the rows, saved with
        their states."""
        with self.store.begin() as conn:
            prints = self.local.fingerprints(conn, keys, self.image)
            states = self.store.load(list(prints), conn=conn)
            for key, print_ in prints.items():
                states[key].local_hash = print_
            self.store.save(conn, states.values())

    def agreed(self) -> tuple[set[str], set[str]]:
        """(keys whose (key, p-key, d-key) is agreed, unclean keys)."""
        with self.engine.connect() as conn:
            keys = [str(k) for k in conn.scalars(sa.select(self.table.c.k))]
        got = self.store.agreed_rows(self.local.key, self.image, quick_image=self.quick_image)
        assert got == self.store.agreed_rows(self.local.key, self.image)  # the full image alone
        assert len(got.unclean) == len(set(got.unclean))
        agreed = {k for k in keys if got.agreed_as(f"d-{k}") == (f"p-{k}", k)}
        assert not agreed & set(got.unclean)
        # every row is one or the other
        assert len(got.keys) + len(got.unclean) == len(keys)
        assert got.keys.keys() == got.public_ids.keys()
        return agreed, set(got.unclean)

    def local_hash(self, key: str) -> str | None:
        return self.store.load([key])[key].local_hash

    def close(self) -> None:
        self.engine.dispose()


@pytest.fixture
def rows(db_url: str) -> Iterator[Rows]:
    r = Rows(db_url)
    try:
        yield r
    finally:
        r.close()


@pytest.fixture(params=["json_array", "quote"])
def sqlite_rows(request: pytest.FixtureRequest, tmp_path: Path,
                monkeypatch: pytest.MonkeyPatch) -> Iterator[Rows]:
    """SQLite with each fingerprint form: json_array (3.38+) and the quote() chain (older)."""
    if request.param == "quote":
        monkeypatch.setattr(sqlite3, "sqlite_version_info", (3, 37, 2))
    elif sqlite3.sqlite_version_info < (3, 38):
        pytest.skip(f"SQLite {sqlite3.sqlite_version} has no built-in JSON")
    r = Rows(f"sqlite:///{tmp_path}/fp.db")
    try:
        yield r
    finally:
        r.close()


# --- LocalTable.fingerprint ----------------------------------------------------------------------

# (column, a, b): the row with a and the row with b must have different fingerprints
CHANGES: list[tuple[str, Any, Any]] = [
    ("name", "An", "Bình"),
    ("name", "An", "An "),
    ("name", "An", "an"),
    ("name", None, ""),
    ("name", "", " "),
    ("name", "a,b", "a\",\"b"),
    ("ref_code", None, ""),
    ("crm_id", "p-1", "p-2"),
    ("crm_id", None, "p-1"),
    ("bday", date(1990, 1, 2), date(1990, 2, 1)),
    ("bday", None, date(1990, 1, 2)),
    ("points", 1.5, 2.5),
    ("points", None, 0.0),
    ("qty", 1, 2),
    ("qty", None, 0),
    ("vip", True, False),
    ("vip", None, False),
    ("tags", ["a"], ["b"]),
    ("tags", ["a", "b"], ["b", "a"]),
    ("tags", [1], ["1"]),
    ("tags", [], None),
    ("tags", ["a,b"], ["a", "b"]),
    ("extra", {"k": 1}, {"k": "1"}),
    ("extra", {"k": "1"}, {"k": "2"}),
    ("extra", {"k": "1"}, {"K": "1"}),
    ("extra", {}, None),
    ("extra", {"a": "1"}, {"a": "1", "b": None}),
]


@pytest.mark.parametrize(("column", "a", "b"), CHANGES,
                         ids=[f"{c}:{a!r}->{b!r}" for c, a, b in CHANGES])
def test_fingerprint_differs_when_a_mapped_column_changes(rows: Rows, column: str, a: Any,
                                                          b: Any) -> None:
    rows.insert("K1", **{column: a})
    with_a = rows.print_of("K1")
    rows.update("K1", **{column: b})
    with_b = rows.print_of("K1")
    assert with_a != with_b
    rows.update("K1", **{column: a})  # back as it was: the same fingerprint again
    assert rows.print_of("K1") == with_a
    # a second row with the same values but another key: the key is part of the row
    rows.insert("K2", **{column: a})
    assert rows.print_of("K2") != with_a
    # without the key column, equal rows fingerprint alike
    no_key = rows.fingerprint(tuple(c for c in rows.conv.row_columns if c != "k"))
    assert rows.print_of("K1", no_key) == rows.print_of("K2", no_key)
    rows.update("K2", **{column: b})
    assert rows.print_of("K1", no_key) != rows.print_of("K2", no_key)


def test_fingerprint_is_equal_for_equal_rows(rows: Rows) -> None:
    rows.insert("K1")
    first = rows.print_of("K1")
    assert rows.print_of("K1") == first  # stable
    # written again with the same values (a no-op UPDATE, a delete and re-insert)
    rows.update("K1", **BASE_ROW)
    assert rows.print_of("K1") == first
    rows.execute("DELETE FROM fp_rows WHERE k = 'K1'")
    rows.insert("K1")
    assert rows.print_of("K1") == first
    # the same values in the other forms the same types take
    rows.update("K1", points=3 / 2, qty=3.0 if rows.kind == "sqlite" else 3,
                extra={"Điểm cũ": "1", "Kênh": "Zalo"})  # keys in another order
    if rows.kind == "postgresql":
        assert rows.print_of("K1") == first  # jsonb keeps no key order
    # load_fingerprinted reads the same fingerprint, with the row
    with rows.engine.connect() as conn:
        got, prints = rows.local.load_fingerprinted(conn, ["K1", "missing"], rows.image)
    assert list(got) == ["K1"] and prints == {"K1": rows.print_of("K1")}
    assert got["K1"]["name"] == BASE_ROW["name"]
    with rows.engine.connect() as conn:
        plain, none = rows.local.load_fingerprinted(conn, ["K1"], None)
    assert plain == got and none == {}


def test_fingerprint_only_covers_the_given_columns_and_the_salt(rows: Rows) -> None:
    rows.insert("K1")
    rows.execute("ALTER TABLE fp_rows ADD COLUMN app_note TEXT")
    before = rows.print_of("K1")
    rows.execute("UPDATE fp_rows SET app_note = 'the app''s own column' WHERE k = 'K1'")
    assert rows.print_of("K1") == before  # an unmapped column is not part of it
    other_salt = rows.fingerprint(salt=rows.conv.row_salt + "x")
    assert rows.print_of("K1", other_salt) != before
    # a mapping with one field more has another salt and another column list
    wider = Converter(parse_mapping(MAPPING + "  - {field: job_title, column: app_note}\n"))
    assert wider.row_salt != rows.conv.row_salt
    assert "app_note" in wider.row_columns
    # the salt is a digest of the mapping's signature: every row's fingerprint carries it,
    # and the signature itself (a list of the fields' digests) was 190 bytes of each
    assert len(rows.conv.row_salt) == 16
    assert not any(sig in before for sig in rows.conv.signature)


def test_fingerprint_is_one_object_for_the_same_arguments(rows: Rows) -> None:
    """The daemon builds a SyncEngine, and so asks for the fingerprints, every cycle. The
    caches keyed by the image (its literal RETURNING form, the multi-row INSERTs compiled
    with it) must hit from one cycle to the next: with a new image object per cycle they
    missed every time and each held up to 32 dead cycles' images and statements."""
    assert rows.fingerprint() is rows.fingerprint()
    assert rows.fingerprint(salt="x") is rows.fingerprint(salt="x")
    assert rows.fingerprint(salt="x") is not rows.fingerprint()
    assert rows.fingerprint(rows.conv.row_columns[:-1]) is not rows.fingerprint()
    # another table of the same mapping (a new Runtime) gets an image of its own
    other = LocalTable.for_spec(rows.spec)
    assert other.fingerprint(rows.kind, rows.conv.row_columns, rows.conv.row_salt,
                             text_columns=rows.local.text_affinity(rows.engine)
                             ) is not rows.fingerprint()


def _real_numbers_differ(r: Rows) -> None:
    """Two numbers the converter reads as different values (so a change to send) must not
    share a fingerprint: else a quick cycle skips the edit."""
    for a, b in ((0.3, 0.30000000000000004), (1.0, 1.0000000000000002),
                 (123456789.12345678, 123456789.12345679)):
        assert r.conv.row_fields({"points": a}) != r.conv.row_fields({"points": b})
        r.insert("K1", points=a)
        with_a = r.print_of("K1")
        r.update("K1", points=b)
        assert r.print_of("K1") != with_a, f"{a!r} -> {b!r}: same fingerprint"
        r.execute("DELETE FROM fp_rows")


def test_real_numbers_that_differ_fingerprint_differently(rows: Rows) -> None:
    if rows.kind == "sqlite":
        pytest.skip("SQLite: test_sqlite_real_numbers_that_differ_fingerprint_differently")
    _real_numbers_differ(rows)


def test_sqlite_real_numbers_that_differ_fingerprint_differently(sqlite_rows: Rows) -> None:
    _real_numbers_differ(sqlite_rows)


def test_sqlite_values_of_any_storage_class(sqlite_rows: Rows) -> None:
    """SQLite stores what an app writes, whatever the column's declared type."""
    r = sqlite_rows
    r.insert("K1")
    prints = {}
    for label, sql_value in [("text", "'1'"), ("integer", "1"), ("real", "1.5"),
                             ("null", "NULL"), ("empty", "''"), ("blob", "x'31'"),
                             ("blob2", "x'00ff'"), ("text2", "'x''31'''")]:
        r.execute(f"UPDATE fp_rows SET extra = {sql_value} WHERE k = 'K1'")
        prints[label] = r.print_of("K1")
    # extra is a JSON column (NUMERIC affinity): '1' is stored as the integer 1
    assert prints["text"] == prints["integer"]
    distinct = {k: v for k, v in prints.items() if k != "text"}
    assert len(set(distinct.values())) == len(distinct), prints


def test_sqlite_blob_in_a_text_column_does_not_break_agreed_rows(sqlite_rows: Rows) -> None:
    r = sqlite_rows
    r.insert("K1")
    r.insert("K2")
    r.states("K1", "K2")
    r.stamp("K1", "K2")
    assert r.agreed() == ({"K1", "K2"}, set())
    with r.engine.begin() as conn:
        conn.exec_driver_sql("UPDATE fp_rows SET name = ? WHERE k = 'K1'", (b"\x00\xffbin",))
        assert conn.exec_driver_sql(
            "SELECT typeof(name) FROM fp_rows WHERE k = 'K1'").scalar() == "blob"
    assert r.agreed() == ({"K2"}, {"K1"})  # no error, and the edit is seen
    # the pass met the BLOB with the quick image (json_array), and keeps to the full one
    assert r.store._blobs is (sqlite3.sqlite_version_info >= (3, 38))
    r.stamp("K1")  # a row holding a BLOB can be stamped too
    assert r.local_hash("K1") is not None
    assert r.agreed() == ({"K1", "K2"}, set())
    with r.engine.begin() as conn:
        conn.exec_driver_sql("UPDATE fp_rows SET name = ? WHERE k = 'K1'", (b"\x00\xfebin",))
    assert r.agreed() == ({"K2"}, {"K1"})
    with r.engine.connect() as conn:  # and the engine's loader reads it
        got, prints = r.local.load_fingerprinted(conn, ["K1"], r.image)
    assert got["K1"]["name"] == b"\x00\xfebin" and prints["K1"]


def test_sqlite_blob_and_the_text_of_its_quote_differ(sqlite_rows: Rows) -> None:
    """A BLOB is quoted into the image; a text that reads like that quote is another value."""
    r = sqlite_rows
    r.insert("K1")
    with r.engine.begin() as conn:
        conn.exec_driver_sql("UPDATE fp_rows SET name = ? WHERE k = 'K1'", (b"hi",))
    as_blob = r.print_of("K1")
    r.update("K1", name="X'6869'")
    assert r.print_of("K1") != as_blob


# (declared type, SQLite's affinity): the examples of datatype3.html section 3.1.1, and more
AFFINITIES = [
    ("INT", "INTEGER"), ("INTEGER", "INTEGER"), ("TINYINT", "INTEGER"), ("BIGINT", "INTEGER"),
    ("UNSIGNED BIG INT", "INTEGER"), ("INT8", "INTEGER"), ("CHARINT", "INTEGER"),
    ("FLOATING POINT", "INTEGER"), ("CHARACTER(20)", "TEXT"), ("VARCHAR(255)", "TEXT"),
    ("varying character(255)", "TEXT"), ("NCHAR(55)", "TEXT"), ("NATIVE CHARACTER(70)", "TEXT"),
    ("NVARCHAR(100)", "TEXT"), ("TEXT", "TEXT"), ("text", "TEXT"), ("CLOB", "TEXT"),
    ("BLOB", "BLOB"), ("", "BLOB"), ("REAL", "REAL"), ("DOUBLE", "REAL"),
    ("DOUBLE PRECISION", "REAL"), ("FLOAT", "REAL"), ("NUMERIC", "NUMERIC"),
    ("DECIMAL(10,5)", "NUMERIC"), ("BOOLEAN", "NUMERIC"), ("DATE", "NUMERIC"),
    ("DATETIME", "NUMERIC"), ("JSON", "NUMERIC"), ("STRING", "NUMERIC"), ("ANY", "NUMERIC"),
]


@pytest.mark.parametrize(("declared", "affinity"), AFFINITIES)
def test_sqlite_affinity_follows_the_documented_rules(declared: str, affinity: str) -> None:
    assert sqlite_affinity(declared) == affinity


def test_sqlite_affinity_agrees_with_sqlite(tmp_path: Path) -> None:
    """What the fingerprint relies on, asked of SQLite itself: a column the function calls
    TEXT stores a REAL written to it as text; every other column keeps it a REAL."""
    con = sqlite3.connect(tmp_path / "aff.db")
    try:
        for i, (declared, _) in enumerate(AFFINITIES):
            con.execute(f'CREATE TABLE t{i} (v {declared})')
            con.execute(f"INSERT INTO t{i} VALUES (?)", (1.5,))
            stored = con.execute(f"SELECT typeof(v) FROM t{i}").fetchone()[0]
            assert (stored == "text") == (sqlite_affinity(declared) == "TEXT"), declared
    finally:
        con.close()


def test_text_affinity_names_the_columns_that_hold_no_real(db_url: str) -> None:
    r = Rows(db_url)
    try:
        got = r.local.text_affinity(r.engine)
        if r.kind == "sqlite":  # the mapping's text columns, created TEXT / VARCHAR
            assert got == {"k", "ref_code", "crm_id", "name"}
        else:
            assert got == frozenset()  # PostgreSQL's image is not built this way
    finally:
        r.close()


def test_sqlite_image_is_the_same_with_or_without_text_columns(sqlite_rows: Rows) -> None:
    """A TEXT column only tests for BLOB: the image is the one a full test gives, so a row
    stamped before (or with the full test) is still agreed."""
    r = sqlite_rows
    full = r.local.fingerprint("sqlite", r.conv.row_columns, r.conv.row_salt)
    assert full is not None
    r.insert("K1")
    values = ["'1'", "1", "1.5", "1e300", "NULL", "''", "x'31'", "x'00ff'", "'[1.5]'"]
    for column in ("name", "ref_code", "crm_id"):
        for value in values:
            r.execute(f"UPDATE fp_rows SET {column} = {value} WHERE k = 'K1'")
            assert r.print_of("K1") == r.print_of("K1", full), (column, value)


def test_sqlite_quick_image_is_the_image_of_every_row_without_a_blob(sqlite_rows: Rows) -> None:
    """What the pass compares first: the same image for values of every other storage class
    in every kind of column, and an error on a BLOB (json_array only: the quote() chain needs
    no test for one)."""
    r = sqlite_rows
    r.insert("K1")
    values = ["'1'", "1", "1.5", "-0.0", "1e300", "NULL", "''", "'[1.5]'", "'x''31'''"]
    for column in ("name", "ref_code", "crm_id", "bday", "points", "qty", "vip", "tags",
                   "extra"):
        for value in values:
            r.execute(f"UPDATE fp_rows SET {column} = {value} WHERE k = 'K1'")
            assert r.print_of("K1", r.quick_image) == r.print_of("K1"), (column, value)
        r.execute(f"UPDATE fp_rows SET {column} = x'00ff' WHERE k = 'K1'")
        if sqlite3.sqlite_version_info >= (3, 38):
            with pytest.raises(sa.exc.OperationalError, match="cannot hold BLOB"):
                r.print_of("K1", r.quick_image)
        else:
            assert r.print_of("K1", r.quick_image) == r.print_of("K1")
        r.execute(f"UPDATE fp_rows SET {column} = NULL WHERE k = 'K1'")


# what an app can bind through the driver into any column: SQLite keeps it, converted only by
# the column's affinity
_APP_VALUES = st.one_of(st.none(), st.text(), st.integers(-(2**63), 2**63 - 1),
                        st.floats(allow_nan=False), st.booleans())


@settings(max_examples=150, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(values=st.fixed_dictionaries({c: _APP_VALUES for c in (
    "name", "ref_code", "crm_id", "bday", "points", "qty", "vip", "tags", "extra")}))
def test_sqlite_quick_image_equals_the_image_for_any_values_but_blobs(
        sqlite_rows: Rows, values: dict[str, Any]) -> None:
    r = sqlite_rows
    if not r.table_has("K1"):
        r.insert("K1")
    with r.engine.begin() as conn:
        conn.exec_driver_sql("UPDATE fp_rows SET " + ", ".join(f"{c} = ?" for c in values)
                             + " WHERE k = 'K1'", tuple(values.values()))
    assert r.print_of("K1", r.quick_image) == r.print_of("K1")


def test_quick_image_errors_other_than_a_blob_are_raised(rows: Rows) -> None:
    rows.insert("A")
    rows.states("A")
    broken = sa.func.crm_sync_no_such_function(rows.local.key)
    with pytest.raises(sa.exc.DBAPIError, match="crm_sync_no_such_function"):
        rows.store.agreed_rows(rows.local.key, rows.image, quick_image=broken)
    assert not rows.store._blobs
    assert rows.agreed() == (set(), {"A"})


# --- the recorded fingerprint / agreed_rows -------------------------------------------------

def test_stamp_records_what_agreed_rows_compares(rows: Rows) -> None:
    for k in ("A", "B", "C"):
        rows.insert(k)
    rows.states("A", "B", "C")
    assert rows.agreed() == (set(), {"A", "B", "C"})  # never stamped
    rows.stamp("A", "B")
    assert rows.agreed() == ({"A", "B"}, {"C"})
    # the stamp is the fingerprint the engine reads with the row
    with rows.engine.connect() as conn:
        _, prints = rows.local.load_fingerprinted(conn, ["A", "B", "C"], rows.image)
    assert rows.local_hash("A") == prints["A"] and rows.local_hash("B") == prints["B"]
    assert rows.local_hash("C") is None
    # only the triple agreed: another CRM id or another listing digest is not
    got = rows.store.agreed_rows(rows.local.key, rows.image)
    assert holds(got, "A", "p-A", "d-A")
    assert not holds(got, "A", "p-B", "d-A") and not holds(got, "A", "p-A", "d-B")
    assert not holds(got, "B", "p-A", "d-A")

    rows.update("A", name="Sửa bằng SQL")  # an app's edit
    assert rows.agreed() == ({"B"}, {"A", "C"})
    rows.update("A", name=BASE_ROW["name"])  # and undone: the row holds its base again
    assert rows.agreed() == ({"A", "B"}, {"C"})
    rows.execute("UPDATE fp_rows SET crm_id = NULL WHERE k = 'A'")
    assert rows.agreed() == ({"B"}, {"A", "C"})
    rows.stamp("A")
    assert rows.agreed() == ({"A", "B"}, {"C"})

    rows.execute("DELETE FROM fp_rows WHERE k = 'B'")  # the app deletes a row
    agreed, unclean = rows.agreed()
    assert (agreed, unclean) == ({"A"}, {"C"})  # gone: neither agreed nor walked
    got = rows.store.agreed_rows(rows.local.key, rows.image)
    assert not holds(got, "B", "p-B", "d-B")
    rows.insert("B", name="Một người khác")  # a new row under the old key
    assert rows.agreed() == ({"A"}, {"B", "C"})
    rows.stamp("missing")  # a key without a row: nothing to stamp, nothing breaks
    assert rows.agreed() == ({"A"}, {"B", "C"})


def test_an_unmapped_column_edit_keeps_the_row_agreed(rows: Rows) -> None:
    rows.insert("A")
    rows.states("A")
    rows.stamp("A")
    rows.execute("ALTER TABLE fp_rows ADD COLUMN app_note TEXT")
    rows.execute("UPDATE fp_rows SET app_note = 'x' WHERE k = 'A'")
    assert rows.agreed() == ({"A"}, set())


@pytest.mark.parametrize("status", ["error", "pending_create", "conflict", "pushing"])
def test_only_synced_and_read_only_states_are_agreed(rows: Rows, status: str) -> None:
    for k in ("S", "R", "X"):
        rows.insert(k)
    rows.states("S")
    rows.states("R", status="read_only")
    rows.states("X", status=status, last_error="boom" if status == "error" else None)
    rows.stamp("S", "R", "X")
    assert rows.local_hash("X") == rows.print_of("X")  # the fingerprint matches...
    assert rows.agreed() == ({"S", "R"}, {"X"})  # ...but the status is not agreed


def test_a_state_without_crm_id_or_listing_digest_is_not_agreed(rows: Rows) -> None:
    for k in ("A", "B", "C"):
        rows.insert(k)
    with rows.store.begin() as conn:
        rows.store.save(conn, [
            SyncState("A", ref_id="A", public_id=None, base={"full_name": "x"},
                      remote=Contact(ref_id="A", digest="d-A"), remote_hash="d-A"),
            SyncState("B", ref_id="B", public_id="p-B", base={"full_name": "x"},
                      remote=Contact(ref_id="B", public_id="p-B")),  # built, not listed
            SyncState("C", ref_id="C", public_id="p-C", base={"full_name": "x"},
                      remote=Contact(ref_id="C", public_id="p-C", digest="d-C"),
                      remote_hash="d-C")])
    rows.stamp("A", "B", "C")
    got = rows.store.agreed_rows(rows.local.key, rows.image)
    assert sorted(got.unclean) == ["A", "B"]
    assert holds(got, "C", "p-C", "d-C")


def test_a_digest_two_agreed_rows_hold_is_vouched_for_by_neither(rows: Rows) -> None:
    # stale bookkeeping: two keys last agreed the same listing JSON. Which one the listing
    # means cannot be told, so that item is parsed; the rows are neither skipped nor walked.
    for k in ("A", "B", "C"):
        rows.insert(k)
    rows.states("A", "B", "C")
    with rows.store.begin() as conn:
        b = rows.store.load(["B"], conn=conn)["B"]
        rows.store.save(conn, [b.replace(remote=Contact(ref_id="B", public_id="p-B",
                                                        digest="d-A"))])
    rows.stamp("A", "B", "C")
    got = rows.store.agreed_rows(rows.local.key, rows.image)
    assert got.agreed_as("d-A") is None and got.agreed_as("d-B") is None
    assert holds(got, "C", "p-C", "d-C")
    assert sorted(got.keys) == ["d-C"] and sorted(got.public_ids) == ["d-C"]
    assert got.unclean == [] and got.orphaned == 0


def test_the_pass_counts_bookkeeping_rows_without_their_row(rows: Rows) -> None:
    for k in ("A", "B", "C"):
        rows.insert(k)
    rows.states("A", "B", "C", "D")  # D: bookkeeping, and no row ever
    rows.stamp("A", "B", "C")
    rows.execute("DELETE FROM fp_rows WHERE k = 'B'")
    got = rows.store.agreed_rows(rows.local.key, rows.image)
    assert got.orphaned == 2 and got.unclean == []
    assert sorted(got.keys.values()) == ["A", "C"]
    rows.execute("DELETE FROM fp_rows")
    empty = rows.store.agreed_rows(rows.local.key, rows.image)
    assert (empty.keys, empty.public_ids, empty.unclean, empty.orphaned) == ({}, {}, [], 4)


def test_a_new_base_or_a_new_crm_copy_voids_the_stamp(rows: Rows) -> None:
    rows.insert("A")
    rows.insert("B")
    rows.states("A", "B")
    rows.stamp("A", "B")
    assert rows.agreed() == ({"A", "B"}, set())
    a, b = (rows.store.load(["A", "B"])[k] for k in ("A", "B"))
    a.base = {"full_name": "khác"}  # voids local_hash
    b = b.replace(remote=Contact(ref_id="B", public_id="p-B", digest="d-new"))
    assert a.local_hash is None and b.remote_hash == "d-new"
    with rows.store.begin() as conn:
        rows.store.save(conn, [a, b])
    got = rows.store.agreed_rows(rows.local.key, rows.image)
    assert got.unclean == ["A"]
    assert not holds(got, "B", "p-B", "d-B") and holds(got, "B", "p-B", "d-new")


def test_stamp_and_agreed_rows_keep_to_their_tenant(db_url: str) -> None:
    one = Rows(db_url, tenant="tenant-one")
    two = Rows(db_url, tenant="tenant-two")
    try:
        one.insert("A")
        one.states("A")
        two.states("A")
        one.stamp("A")
        assert one.agreed() == ({"A"}, set())
        assert two.agreed() == (set(), {"A"})  # the same key, another tenant's bookkeeping
        assert two.local_hash("A") is None
        two.stamp("A")
        assert two.agreed() == ({"A"}, set()) and one.agreed() == ({"A"}, set())
    finally:
        one.close()
        two.close()


def test_stamp_many_keys_in_chunks(rows: Rows) -> None:
    keys = [f"K{i:04d}" for i in range(1201)]  # more than one chunk of 500
    with rows.engine.begin() as conn:
        conn.execute(rows.table.insert(), [{"k": k, **BASE_ROW, "qty": i}
                                           for i, k in enumerate(keys)])
    rows.states(*keys)
    rows.stamp(*keys, *keys[:10])  # repeated keys too
    agreed, unclean = rows.agreed()
    assert agreed == set(keys) and unclean == set()


def test_agreed_rows_counts_bookkeeping_whose_row_is_gone(db_url: str) -> None:
    one = Rows(db_url, tenant="tenant-one")
    two = Rows(db_url, tenant="tenant-two")
    try:
        for k in ("A", "B", "C"):
            one.insert(k)
        one.states("A", "B", "C")
        two.states("A", "X", "Y")  # another tenant's: X and Y have no row, but are not ours
        one.stamp("A", "B")
        assert one.store.agreed_rows(one.local.key, one.image).orphaned == 0
        one.execute("DELETE FROM fp_rows WHERE k IN ('B', 'C')")  # an agreed and an unclean
        got = one.store.agreed_rows(one.local.key, one.image)
        assert got.orphaned == 2 and (got.keys, got.public_ids) == ({"d-A": "A"}, {"d-A": "p-A"})
        assert two.store.agreed_rows(two.local.key, two.image).orphaned == 2  # X, Y
        one.insert("B", name="Một người khác")  # a row again, not as agreed: unclean
        got = one.store.agreed_rows(one.local.key, one.image)
        assert got.orphaned == 1 and sorted(got.unclean) == ["B"]
    finally:
        one.close()
        two.close()


def test_a_digest_two_rows_hold_is_not_vouched_for(rows: Rows) -> None:
    """Stale bookkeeping could give two keys the same listing JSON: the pass cannot tell which
    key the listed contact is, so it vouches for neither (the item is parsed)."""
    for k in ("A", "B", "C"):
        rows.insert(k)
    with rows.store.begin() as conn:
        rows.store.save(conn, [SyncState(
            k, ref_id=k, public_id="p-A", base={"full_name": "x"},
            remote=Contact(ref_id="A", public_id="p-A", digest="d-A"), remote_hash="d-A")
            for k in ("A", "B")])
    rows.states("C")
    rows.stamp("A", "B", "C")
    got = rows.store.agreed_rows(rows.local.key, rows.image)
    assert (got.keys, got.public_ids) == ({"d-C": "C"}, {"d-C": "p-C"})
    assert got.agreed_as("d-A") is None and got.agreed_as("d-C") == ("p-C", "C")
    assert got.unclean == []  # both rows are as agreed: nothing to walk


# --- migration 0003 ------------------------------------------------------------------------------

def test_upgrade_from_0002_keeps_rows_and_voids_local_hash(db_url: str) -> None:
    engine = make_engine(db_url)
    try:
        upgrade(engine, "0002")
        old = sa.Table("sync_state", sa.MetaData(), autoload_with=engine)
        assert "remote_hash" not in old.c
        now = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)
        common = {"base": '{"full_name":"A"}', "base_hash": "b" * 32, "remote": '{"ref_id":"A"}',
                  "remote_updated_ms": 1700000000000, "attempts": 0, "updated_at": now}
        before = [
            {"tenant": "t1", "key": "A", "ref_id": "A", "public_id": "p-A", "status": "synced",
             "local_hash": "a" * 32, "last_error": None, "pending_since": None, **common},
            {"tenant": "t1", "key": "crm:p-B", "ref_id": None, "public_id": "p-B",
             "status": "read_only", "local_hash": "c" * 64, "last_error": None,
             "pending_since": None, **common},
            {"tenant": "t2", "key": "A", "ref_id": "A", "public_id": None,
             "status": "pending_create", "local_hash": None, "last_error": "x",
             "pending_since": now, **{**common, "attempts": 2}},
        ]
        with engine.begin() as conn:
            conn.execute(old.insert(), before)
            conn.execute(sa.text("CREATE TABLE contacts (ref_id TEXT PRIMARY KEY, x TEXT)"))
            conn.execute(sa.text("INSERT INTO contacts VALUES ('A', 'kept')"))

        upgrade(engine)
        assert current_revision(engine) == head_revision()
        assert schema_diffs(engine) == []
        with engine.connect() as conn:
            after = [dict(r) for r in conn.execute(
                sa.select(sync_state).order_by(sync_state.c.tenant, sync_state.c.key))
                .mappings()]
            assert conn.execute(sa.text("SELECT x FROM contacts")).scalar_one() == "kept"
        assert len(after) == len(before)
        for b, a in zip(before, after, strict=True):
            assert a["local_hash"] is None and a["remote_hash"] is None
            expected = {k: v for k, v in b.items() if k != "local_hash"}
            got = {k: a[k] for k in expected}
            if engine.dialect.name == "sqlite":  # SQLite gives naive datetimes back
                for name in ("updated_at", "pending_since"):
                    if got[name] is not None:
                        got[name] = got[name].replace(tzinfo=UTC)
            assert got == expected
        # the wider column takes SQLite's exact row images, longer than any old hash
        with engine.begin() as conn:
            conn.execute(sync_state.update().where(sync_state.c.key == "A")
                         .values(local_hash="x" * 5000, remote_hash="d" * 32))
        store = StateStore(engine, "t1")
        assert store.load(["A"])["A"].local_hash == "x" * 5000
        assert store.load(["A"])["A"].remote_hash == "d" * 32
    finally:
        engine.dispose()


def test_downgrade_to_0002_voids_local_hash_and_drops_remote_hash(db_url: str) -> None:
    engine = make_engine(db_url)
    try:
        upgrade(engine)
        store = StateStore(engine, "t1")
        with store.begin() as conn:
            store.save(conn, [SyncState("A", ref_id="A", public_id="p-A", local_hash="x" * 300,
                                        base={"full_name": "A"}, remote_hash="d" * 32,
                                        remote=Contact(ref_id="A", digest="d" * 32))])
            conn.execute(sync_state.update().values(local_hash="x" * 300))
        with engine.begin() as conn:
            if conn.dialect.name == "sqlite":
                conn.exec_driver_sql("BEGIN IMMEDIATE")
            command.downgrade(alembic_config(conn), "0002")
        assert current_revision(engine) == "0002"
        old = sa.Table("sync_state", sa.MetaData(), autoload_with=engine)
        assert "remote_hash" not in old.c
        with engine.connect() as conn:
            [row] = conn.execute(sa.select(old)).mappings()
        assert (row["key"], row["public_id"], row["local_hash"]) == ("A", "p-A", None)
        upgrade(engine)
        assert schema_diffs(engine) == []
    finally:
        engine.dispose()


def test_a_failing_pass_raises_sqlalchemys_error(rows: Rows) -> None:
    # the pass reads the driver's tuples itself; its errors still come as SQLAlchemy's
    rows.insert("A")
    rows.states("A")
    broken = sa.func.crm_sync_no_such_function(rows.local.key)
    with pytest.raises(sa.exc.DBAPIError, match="crm_sync_no_such_function"):
        rows.store.agreed_rows(rows.local.key, broken)
    assert rows.agreed() == (set(), {"A"})  # the connection is usable afterwards
