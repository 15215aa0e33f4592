"""An ERP-style table (mappings/erp-customers.example.yaml) synced both ways with the emulator over
real HTTP, on SQLite and PostgreSQL: custom and dynamic attributes in typed columns, agent edits
arriving there, app edits reaching the CRM as more_infomation / dynamic_attributes with the
unmapped entries kept, and no write at all once both sides agree.

The expected column values are written here from the mapping file and omicall-api.md, without
the converter."""

from __future__ import annotations

import asyncio
import re
from collections.abc import Iterator
from datetime import date, datetime
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from sync.cycle import CycleOptions, CycleResult
from sync.emulator import Emulator, EmulatorConfig, EmulatorServer
from sync.runtime import Runtime, build_runtime
from sync.settings import load_settings

from .conftest import ERP, EXPORT

WRITES = ("add", "add_more", "update", "delete", "add_note")
GENDER = {"male": "Nam", "female": "Nữ", "other": "Khác"}
RANK = {"Đồng": "DONG", "Bạc": "BAC", "Vàng": "VANG", "Kim cương": "KC"}
POINTS, RANK_CODE, BOUGHT = "vWabCEBkqM", "hTqLmZpXcR", "nBdYkWsEfJ"


def writes(r: CycleResult) -> dict[str, int]:
    return {k: v for k, v in r.api_calls.items() if k in WRITES and v}


class Erp:
    def __init__(self, db_url: str, mapping: Path, contacts: int = 30) -> None:
        self.server = EmulatorServer(EmulatorConfig(api_key="demo-key", contacts=contacts,
                                                    seed=11, add_more_delay=0.0)).start()
        self.db_url = db_url
        self.rt = self.runtime(mapping)

    def runtime(self, mapping: Path) -> Runtime:
        return build_runtime(load_settings(
            base_url=self.server.url, api_key="demo-key", database_url=self.db_url,
            mapping_file=mapping, tenant="erp", pending_recheck_seconds=0.0, backoff_max=0.05))

    @property
    def emulator(self) -> Emulator:
        return self.server.emulator

    def cycle(self, full: bool = False) -> CycleResult:
        r = asyncio.run(self.rt.cycle(CycleOptions(full=full, kind="full" if full else "sync")))
        assert r.status == "ok", (r.status, r.notes)
        return r

    def rows(self) -> dict[str, dict[str, Any]]:
        table = self.rt.local.table
        with self.rt.db.connect() as conn:
            return {r["ma_kh"]: dict(r) for r in conn.execute(sa.select(table)).mappings()}

    def update(self, key: str, **values: Any) -> None:
        table = self.rt.local.table
        with self.rt.db.begin() as conn:
            conn.execute(table.update().where(table.c.ma_kh == key).values(**values))

    def insert(self, **values: Any) -> None:
        with self.rt.db.begin() as conn:
            conn.execute(self.rt.local.table.insert().values(**values))

    def crm(self) -> dict[str, dict[str, Any]]:
        return {w["ref_id"] or f"crm:{w['public_id']}": w for w in self.emulator.contacts()}

    def close(self) -> None:
        self.rt.close()
        self.server.stop()


@pytest.fixture
def erp(db_url: str) -> Iterator[Erp]:
    e = Erp(db_url, ERP)
    yield e
    e.close()


def attrs(wire: dict[str, Any]) -> dict[str, list[Any]]:
    return {a["field_code"]: [v["display_value"] for v in a["value"]]
            for a in wire["attribute_structure"] if a["field_code"] != "more_infomation"}


def custom(wire: dict[str, Any]) -> dict[str, str]:
    return {v["value_type"]: v["display_value"] for a in wire["attribute_structure"]
            if a["field_code"] == "more_infomation" for v in a["value"]}


def expected(wire: dict[str, Any]) -> dict[str, Any]:
    """The ERP row a CRM contact must give, from the mapping file's own words."""
    a, c = attrs(wire), custom(wire)
    phone = (a.get("phone_number") or [None])[0]
    digits = re.sub(r"\D", "", phone or "")
    bday = (a.get("birthday") or [None])[0]
    bought = (a.get(BOUGHT) or [None])[0]
    return {
        "ho_ten": a["full_name"][0], "gioi_tinh": GENDER.get((a.get("gender") or [""])[0]),
        "dien_thoai": phone and "+84" + (digits[1:] if digits.startswith("0") else digits[2:]),
        "ngay_sinh": bday, "nhom_kh": ";".join(sorted(wire["tags"])) or None,
        "diem": int(c.get("Điểm", "0")), "kenh": c.get("Kênh"),
        "diem_thuong": int(a[POINTS][0]) if POINTS in a else None,
        "hang": RANK[a[RANK_CODE][0]] if RANK_CODE in a else None,
        "ngay_mua_gan_nhat": datetime.strptime(bought, "%d/%m/%Y").date() if bought else None,
        "thong_tin_khac": {k: v for k, v in c.items() if k not in ("Điểm", "Kênh")} or None}


def assert_mirrored(e: Erp) -> None:
    rows, crm = e.rows(), e.crm()
    assert rows.keys() == crm.keys()
    for key, wire in crm.items():
        row, want = rows[key], expected(wire)
        got = {k: row[k] for k in want}
        if got["diem"] is None:  # NULL reads as the default, 0: an added column keeps it
            got["diem"] = 0
        if got["thong_tin_khac"]:  # a label moved to its own column is ignored in the JSON
            got["thong_tin_khac"] = {k: v for k, v in got["thong_tin_khac"].items()
                                     if k not in ("Điểm", "Kênh")} or None
        if got["dien_thoai"] and not got["dien_thoai"].startswith("+84"):
            # written by the app in another form: the same number, so never rewritten
            got["dien_thoai"] = "+84" + re.sub(r"\D", "", got["dien_thoai"])[1:]
        assert got == want, key


def test_erp_table_syncs_both_ways_without_spurious_writes(erp: Erp) -> None:
    first = erp.cycle()
    assert first.counts["created_local"] == 30 and not writes(first)
    assert_mirrored(erp)
    assert not writes(erp.cycle())  # converged at once: nothing read differently on the way

    # an agent edits custom fields, dynamic attributes and the gender in the CRM
    crm = erp.crm()
    agent_key = next(k for k, w in crm.items() if not k.startswith("crm:") and custom(w))
    erp.emulator.agent_update(
        crm[agent_key]["public_id"], gender="male", custom={"Điểm": "155", "Kênh": "Hotline"},
        dynamic={POINTS: "730", RANK_CODE: "Bạc", BOUGHT: "02/03/2025"})
    r = erp.cycle()
    assert not writes(r) and r.counts["updated_local"] == 1
    row = erp.rows()[agent_key]
    assert (row["diem"], row["kenh"], row["diem_thuong"], row["hang"], row["gioi_tinh"]) == (
        155, "Hotline", 730, "BAC", "Nam")
    assert_mirrored(erp)

    # the app edits typed columns; the unmapped custom fields the CRM holds stay there
    app_key = next(k for k, w in crm.items() if k != agent_key and not k.startswith("crm:")
                   and set(custom(w)) - {"Điểm", "Kênh"})
    unmapped = {k: v for k, v in custom(crm[app_key]).items() if k not in ("Điểm", "Kênh")}
    erp.update(app_key, diem=321, diem_thuong=42, hang="KC", gioi_tinh="Khác",
               ngay_mua_gan_nhat=date(2025, 1, 31), nhom_kh="VIP;Đã gọi",
               thong_tin_khac={**unmapped, "Sở thích": "Du lịch"})
    r = erp.cycle()
    assert writes(r) == {"update": 1}
    wire = erp.crm()[app_key]
    assert custom(wire) == {**custom(crm[app_key]), "Điểm": "321", "Sở thích": "Du lịch"}
    assert attrs(wire)[POINTS] == ["42"] and attrs(wire)[RANK_CODE] == ["Kim cương"]
    assert attrs(wire)[BOUGHT] == ["31/01/2025"] and attrs(wire)["gender"] == ["other"]
    assert sorted(wire["tags"]) == ["VIP", "Đã gọi"]
    assert_mirrored(erp)

    # the app inserts a customer: add-more carries no dynamic attributes, an update follows
    erp.insert(ma_kh="KH-ERP-1", ho_ten="Trần Văn Tiến", dien_thoai="0395187319",
               gioi_tinh="Nam", ngay_sinh="17/05/1990", nhom_kh="Khách lẻ", diem=10,
               kenh="Website", diem_thuong=5, hang="DONG", ngay_mua_gan_nhat=date(2024, 12, 1),
               thong_tin_khac={"Màu sắc yêu thích": "Xanh"})
    assert writes(erp.cycle()) == {"add_more": 1}
    assert writes(erp.cycle()) == {"update": 1}  # the dynamic attributes, once it is seen
    wire = erp.crm()["KH-ERP-1"]
    assert attrs(wire)[POINTS] == ["5"] and attrs(wire)[RANK_CODE] == ["Đồng"]
    assert custom(wire) == {"Điểm": "10", "Kênh": "Website", "Màu sắc yêu thích": "Xanh"}
    assert_mirrored(erp)

    for _ in range(2):  # converged: a no-op cycle makes no write call at all
        r = erp.cycle(full=True)
        assert not writes(r) and r.counts["updated_local"] == 0, r.api_calls


def _without(text: str, *columns: str) -> str:
    """The mapping file without the entries of `columns` (an earlier version of it)."""
    blocks = re.split(r"\n(?=  - )", text)
    return "\n".join(b for b in blocks if not any(f"column: {c}\n" in b + "\n"
                                                  for c in columns))


def test_a_column_mapped_later_is_backfilled_from_the_crm(db_url: str, tmp_path: Path) -> None:
    v1 = tmp_path / "v1.yaml"
    v1.write_text(_without(ERP.read_text(encoding="utf-8"), "diem", "diem_thuong"), "utf-8")
    e = Erp(db_url, v1)
    try:
        e.cycle()
        assert "diem" not in e.rows()["KH-000001"]
        before = e.crm()
        # the operator adds the columns, then the entries to the mapping
        with e.rt.db.begin() as conn:
            for col in ("diem", "diem_thuong"):
                conn.execute(sa.text(f"ALTER TABLE customers ADD COLUMN {col} BIGINT"))
        e.rt.close()
        e.rt = e.runtime(ERP)
        r = e.cycle(full=True)
        assert not writes(r), r.api_calls  # pulled, never pushed empty
        assert e.crm() == before
        assert_mirrored(e)
        assert not writes(e.cycle())
    finally:
        e.close()


def test_the_pull_only_export_never_writes_to_the_crm(db_url: str) -> None:
    e = Erp(db_url, EXPORT, contacts=15)
    try:
        e.cycle()
        table = e.rt.local.table
        with e.rt.db.connect() as conn:
            rows = {r["ref_id"]: dict(r) for r in conn.execute(sa.select(table)).mappings()}
        crm = e.crm()
        assert rows.keys() == crm.keys()
        key = next(k for k, r in rows.items() if r["phones"] and not k.startswith("crm:"))
        national = ["0" + re.sub(r"\D", "", p)[-9:] for p in attrs(crm[key])["phone_number"]]
        assert rows[key]["phones"] == national  # all of them, in the national form
        with e.rt.db.begin() as conn:  # an app edits the export, and inserts a row
            conn.execute(table.update().where(table.c.ref_id == key).values(
                full_name="Sửa tay", custom_fields={"Ghi chú": "x"}))
            conn.execute(table.insert().values(ref_id="APP-1", full_name="Khách mới"))
        r = e.cycle()
        assert not writes(r)
        with e.rt.db.connect() as conn:
            now = {r["ref_id"]: dict(r) for r in conn.execute(sa.select(table)).mappings()}
        assert now[key] == rows[key]  # set back to the CRM's values
        assert "APP-1" in now and not writes(e.cycle(full=True))
    finally:
        e.close()
