"""An adopted table whose number column keeps fewer decimals than the CRM's values: a
NUMERIC(p,s) or INTEGER column on PostgreSQL, which rounds what it is given. The column's
scale is then that field's precision on both sides: the CRM's value is read rounded as the
column stores it, so a row pulled from the CRM is as agreed (before: the next cycle took the
rounding for an app's edit and sent the rounded value to the CRM); the CRM keeps its own
decimals until the field is edited locally. SQLite keeps what it is given (its NUMERIC
affinity stores 1234.567 as such): there the field keeps every decimal, as before."""

from __future__ import annotations

from typing import Any

import pytest
import sqlalchemy as sa

from .conftest import MakeHarness
from .helpers import Db, Harness, attrs, write_calls

MAPPING = """\
table: sales
key_column: ref_id
ref_code_column: null
crm_id_column: null
custom_fields_column: null
fields:
  - {field: full_name, column: full_name}
  - {custom: Doanh số, column: doanh_so, type: number}
  - {custom: Điểm, column: diem, type: number}
"""


def adopt(db: Db) -> None:
    engine = sa.create_engine(db.url)
    with engine.begin() as conn:
        conn.execute(sa.text("CREATE TABLE sales (ref_id VARCHAR(255) PRIMARY KEY, "
                             "full_name TEXT, doanh_so NUMERIC(12,2), diem INTEGER)"))
    engine.dispose()


def custom(h: Harness, key: str) -> dict[str, str]:
    """The CRM's more_infomation values of a contact, by label."""
    values = attrs(h.crm()[key]).get("more_infomation") or []
    return {v["value_type"]: v["display_value"] for v in values}


def stored(h: Harness, key: str) -> tuple[Any, Any]:
    row = h.row(key)
    assert row is not None, key
    return row["doanh_so"], row["diem"]


def as_stored(db: Db, pg: float, sqlite: float) -> float:
    """What the column holds (the mapped table reads numbers as floats)."""
    return pg if db.kind == "postgresql" else sqlite


@pytest.mark.parametrize("pooled", [False, True], ids=["in-process", "pooled-import"])
async def test_a_column_that_rounds_is_the_fields_precision_on_both_sides(
        make_harness: MakeHarness, db: Db, pooled: bool) -> None:
    adopt(db)
    workers = {"import_workers": 1, "import_min_contacts": 1} if pooled else {}
    h = make_harness({"contacts": 0}, mapping=MAPPING, **workers)
    emu = h.emulator
    a = emu.agent_create(full_name="Nguyễn Văn An", ref_id="KH-1",
                         custom={"Doanh số": "1234.567", "Điểm": "7.6"})
    b = emu.agent_create(full_name="Trần Thị Bình", ref_id="KH-2",
                         custom={"Doanh số": "10.005", "Điểm": "2.5"})
    emu.agent_create(full_name="Lê Văn Cường", ref_id="KH-3",
                     custom={"Doanh số": "99.5", "Điểm": "12"})

    r = await h.cycle()
    assert r.status == "ok", r.notes
    assert r.counts["created_local"] == 3 and not write_calls(r.api_calls), r.counts
    assert stored(h, "KH-1") == (as_stored(db, 1234.57, 1234.567), as_stored(db, 8, 7.6))
    # half away from zero, as the column itself rounds a numeric
    assert stored(h, "KH-2") == (as_stored(db, 10.01, 10.005), as_stored(db, 3, 2.5))
    assert stored(h, "KH-3") == (99.5, 12)

    r = await h.cycle()  # the rounding is not an app's edit: nothing to send
    assert r.status == "ok", r.notes
    assert not write_calls(r.api_calls), (r.api_calls, r.counts)
    assert r.counts.get("unchanged") == 3, r.counts
    assert custom(h, "KH-1") == {"Doanh số": "1234.567", "Điểm": "7.6"}

    # an app edits another field: the CRM's decimals stay
    h.update("KH-1", full_name="Nguyễn Văn Ân")
    # an app edits the number: the CRM gets it
    h.update("KH-2", doanh_so=20.5)
    r = await h.cycle()
    assert r.status == "ok", r.notes
    assert r.counts.get("updated_remote") == 2, r.counts
    assert custom(h, "KH-1") == {"Doanh số": "1234.567", "Điểm": "7.6"}
    assert h.crm()["KH-1"]["attribute_structure"]  # still a contact
    assert custom(h, "KH-2")["Doanh số"] == "20.5"

    # a CRM edit the column cannot tell from the value it holds changes nothing; one it can
    # is pulled, rounded
    emu.agent_update(a, custom={"Doanh số": "1234.574"})
    r = await h.cycle()
    assert r.status == "ok", r.notes
    assert not write_calls(r.api_calls), r.api_calls
    assert stored(h, "KH-1")[0] == as_stored(db, 1234.57, 1234.574)
    emu.agent_update(a, custom={"Doanh số": "1234.576"})
    emu.agent_update(b, custom={"Điểm": "4.4"})
    r = await h.cycle()
    assert r.status == "ok", r.notes
    assert not write_calls(r.api_calls), r.api_calls
    assert stored(h, "KH-1")[0] == as_stored(db, 1234.58, 1234.576)
    assert stored(h, "KH-2")[1] == as_stored(db, 4, 4.4)
    assert custom(h, "KH-1")["Doanh số"] == "1234.576"

    r = await h.cycle()
    assert r.status == "ok" and not write_calls(r.api_calls), (r.notes, r.api_calls)
    assert r.counts.get("unchanged") == 3, r.counts
