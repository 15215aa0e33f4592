"""LocalTable.update_many: the rows end as one UPDATE after the other would leave them, with
one executemany per set of columns."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import date
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from sync.store.local import LocalTable

from .test_store_fingerprint import Rows
from .test_store_insert_new import ROWS, table_rows

UPDATES: list[tuple[str, dict[str, Any]]] = [
    ("A", {"name": "Lê Văn An", "crm_id": "p-a"}),
    ("B", {"crm_id": "p-b"}),
    ("C", {"name": "Chỉ có tên", "bday": date(1999, 12, 31), "tags": ["mới"]}),
    ("A", {"name": "Lê Văn Ân", "qty": 7}),  # the same key again: merged, the last one wins
    ("D", {"crm_id": "p-d"}),  # the columns of B: one executemany for both
    ("E", {"extra": None, "tags": None}),
    ("E", {}),  # nothing to set
    ("Z", {"name": "no such row"}),
]


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def two(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[tuple[Rows, Rows]]:
    """Two databases of one kind holding ROWS."""
    urls = ([f"sqlite:///{tmp_path}/a.db", f"sqlite:///{tmp_path}/b.db"]
            if request.param == "sqlite" else
            [str(request.getfixturevalue("fresh_pg_url")), str(request.getfixturevalue("pg_url"))])
    pair = Rows(urls[0]), Rows(urls[1])
    try:
        for r in pair:
            r.execute(f"DELETE FROM {r.table.name}")
            with r.engine.begin() as conn:
                r.local.insert_new(conn, ROWS)
        yield pair
    finally:
        for r in pair:
            r.close()


def test_many_updates_leave_what_one_after_the_other_leaves(two: tuple[Rows, Rows]) -> None:
    together, one_by_one = two
    statements: list[tuple[str, bool]] = []  # each UPDATE run, and whether as executemany
    sa.event.listen(together.engine, "before_cursor_execute",
                    lambda *args: statements.append((args[2], args[5]))
                    if args[2].startswith("UPDATE") else None)
    with together.engine.begin() as conn:
        together.local.update_many(conn, UPDATES)
    with one_by_one.engine.begin() as conn:
        for key, values in UPDATES:
            if values:
                conn.execute(one_by_one.table.update()
                             .where(one_by_one.table.c.k == key).values(**values))
    got = table_rows(together)
    assert got == table_rows(one_by_one)
    assert got["A"]["name"] == "Lê Văn Ân" and got["A"]["qty"] == 7
    assert got["A"]["crm_id"] == "p-a" and got["C"]["bday"] == date(1999, 12, 31)
    assert "Z" not in got
    assert got["B"]["crm_id"] == "p-b" and got["D"]["crm_id"] == "p-d"
    # A (merged), B and D, C, E, Z: five sets of columns, one statement each
    assert len(statements) == 5 and [many for _, many in statements].count(True) == 1


def test_columns_named_like_bind_parameters(tmp_path: Path) -> None:
    """Bind names are chosen so that no column has them: SQLAlchemy takes a parameter named
    like a column for that column."""
    engine = sa.create_engine(f"sqlite:///{tmp_path}/odd.db")
    meta = sa.MetaData()
    table = sa.Table("odd", meta, sa.Column("k", sa.Text, primary_key=True),
                     *(sa.Column(n, sa.Text) for n in ("p0", "k_", "b_0", "b_key", "b__1")))
    meta.create_all(engine)
    local = LocalTable(table, "k")
    try:
        with engine.begin() as conn:
            conn.execute(table.insert(), [{"k": "a"}, {"k": "b"}])
            local.update_many(conn, [("a", {"p0": "1", "k_": "2", "b_0": "3"}),
                                     ("b", {"b_key": "4", "b__1": "5"})])
            got = {r.k: r for r in conn.execute(sa.select(table))}
        assert (got["a"].p0, got["a"].k_, got["a"].b_0) == ("1", "2", "3")
        assert (got["b"].b_key, got["b"].b__1, got["b"].p0) == ("4", "5", None)
    finally:
        engine.dispose()
