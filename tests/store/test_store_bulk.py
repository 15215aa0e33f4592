"""bulk.py's parameter building: each column through its bind processor, a value the rows
share processed once (the memo is by identity, so equal values that are distinct objects, and
mutable ones, are processed each time)."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import sqlite

from sync.store import make_engine
from sync.store.bulk import Positional
from sync.store.schema import UtcDateTime


def test_a_shared_value_is_processed_once_and_every_row_gets_it() -> None:
    calls: list[Any] = []

    def process(value: Any) -> Any:
        calls.append(value)
        return f"<{value}>"

    shared, other = ["a"], ["a"]  # equal, not the same object
    rows: list[dict[str, Any]] = [
        {"x": shared, "y": 1}, {"x": shared, "y": 2}, {"x": other, "y": 3},
        {"x": None, "y": 4}, {"x": None, "y": 5}, {"x": shared, "y": 6}]
    bound = Positional("INSERT ...", ["x", "y"], [process, None])
    got = list(bound._values(rows, strict=True))
    assert got == [["<['a']>", 1], ["<['a']>", 2], ["<['a']>", 3], ["<None>", 4],
                   ["<None>", 5], ["<['a']>", 6]]
    assert calls == [shared, other, None, shared]


def test_positional_stores_what_sqlalchemy_itself_stores(tmp_path: Path) -> None:
    """The shortcut applies the dialect's own processors (as SQLAlchemy's insert does), not
    the generic type's: a UTC datetime on a whole second was stored by sqlite3's deprecated
    default adapter instead, without the fraction SQLAlchemy writes ('...:00' against
    '...:00.000000'), and adapted again for every row."""
    engine = make_engine(f"sqlite:///{tmp_path / 'bulk.db'}")
    metadata = sa.MetaData()
    table = sa.Table("t", metadata, sa.Column("k", sa.String, primary_key=True),
                     sa.Column("at", UtcDateTime()))
    metadata.create_all(engine)
    whole = datetime(2026, 11, 28, 4, 0, 0, tzinfo=UTC)
    with engine.begin() as conn:
        conn.execute(table.insert(), [{"k": "sqlalchemy", "at": whole}])
        bound = Positional.of(sqlite.insert(table), conn.dialect, ["k", "at"])
        assert bound is not None
        bound.execute_tuples(conn, ["k"], [("positional",)], {"at": whole})
        stored = dict(conn.exec_driver_sql("SELECT k, at FROM t").all())
    assert stored["positional"] == stored["sqlalchemy"] == "2026-11-28 04:00:00.000000"
    with engine.connect() as conn:
        assert {r.at for r in conn.execute(sa.select(table))} == {whole}
    engine.dispose()
