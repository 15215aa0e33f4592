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

import sync.runtime

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


def adopt_pg(db: Db, columns: str) -> None:
    if db.kind != "postgresql":
        pytest.skip("only PostgreSQL's columns round (SQLite keeps what it is given)")
    engine = sa.create_engine(db.url)
    with engine.begin() as conn:
        conn.execute(sa.text(f"CREATE TABLE sales (ref_id VARCHAR(255) PRIMARY KEY, "
                             f"full_name TEXT, {columns})"))
    engine.dispose()


async def test_a_crm_value_that_rounds_to_the_fields_default_is_kept_in_the_crm(
        make_harness: MakeHarness, db: Db) -> None:
    """Found by review: the column gives 0 back as the default, no value; read unrounded as
    0.0, the row looked like an app's clearing of the field, and the CRM's 0.4 was erased."""
    adopt_pg(db, "doanh_so NUMERIC(12,2), diem INTEGER")
    h = make_harness({"contacts": 0}, mapping=MAPPING.replace(
        "column: diem, type: number}", "column: diem, type: number, default: 0}"))
    h.emulator.agent_create(full_name="Nguyễn Văn An", ref_id="KH-1", custom={"Điểm": "0.4"})
    r = await h.cycle()
    assert r.status == "ok" and not write_calls(r.api_calls), (r.notes, r.api_calls)
    h.update("KH-1", full_name="Nguyễn Văn Ân")
    r = await h.cycle()
    assert r.status == "ok", r.notes
    assert r.counts.get("updated_remote") == 1, r.counts
    assert custom(h, "KH-1") == {"Điểm": "0.4"}


async def test_a_value_of_16_or_17_digits_is_stored_as_the_crm_has_it(
        make_harness: MakeHarness, db: Db) -> None:
    """Found by review: a float bound as float8 is cast to numeric with 15 significant
    digits (12345678901234.57 stored as ...234.6), which read as an app's edit and was sent
    to the CRM; floats are bound as their decimal now (as COPY writes them)."""
    adopt_pg(db, "doanh_so NUMERIC(20,2), diem INTEGER")
    h = make_harness({"contacts": 0}, mapping=MAPPING)
    h.emulator.agent_create(full_name="Nguyễn Văn An", ref_id="KH-1",
                            custom={"Doanh số": "12345678901234.57"})
    r = await h.cycle()
    assert r.status == "ok", r.notes
    with h.rt.db.connect() as conn:
        assert str(conn.execute(sa.text("SELECT doanh_so FROM sales")).scalar()) == \
            "12345678901234.57"
    h.update("KH-1", full_name="Nguyễn Văn Ân")
    r = await h.cycle()
    assert r.status == "ok", r.notes
    assert custom(h, "KH-1") == {"Doanh số": "12345678901234.57"}


@pytest.mark.parametrize("crm_value", ["100.25", "1234.567"],
                         ids=["base-fits-the-column", "base-recorded-unrounded"])
async def test_an_app_edit_pending_when_the_scales_are_first_read_is_sent(
        make_harness: MakeHarness, db: Db, monkeypatch: pytest.MonkeyPatch,
        crm_value: str) -> None:
    """Found by review (with the scale in the field's signature then): a crm-sync before this
    one read no scales, and recorded the CRM's value unrounded; an app's edit made before the
    upgraded daemon's first cycle was taken for a conflict and, CRM winning, undone. The base
    is now compared as the column holds it: the edit is the only change, and is sent."""
    adopt_pg(db, "doanh_so NUMERIC(12,2), diem INTEGER")
    monkeypatch.setattr(sync.runtime, "column_scales", lambda db, spec: {})
    h = make_harness({"contacts": 0}, mapping=MAPPING)
    h.emulator.agent_create(full_name="Nguyễn Văn An", ref_id="KH-1",
                            custom={"Doanh số": crm_value})
    r = await h.cycle()
    assert r.status == "ok", r.notes
    h.update("KH-1", doanh_so=250.5)
    monkeypatch.undo()
    h.restart()
    r = await h.cycle()
    assert r.status == "ok", r.notes
    assert (r.counts.get("conflicts", 0), r.counts.get("updated_remote")) == (0, 1), r.counts
    assert stored(h, "KH-1")[0] == 250.5
    assert custom(h, "KH-1") == {"Doanh số": "250.5"}
