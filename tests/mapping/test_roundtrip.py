"""Round trips: every mapped field type survives CRM -> local -> CRM and local -> CRM -> local
without a spurious change (property tests, Vietnamese text included).

The CRM side is the emulator in-process (its agent interface makes the CRM's contacts, its update
endpoint takes the pushes, its wire objects are read back through the adapter); the local side is
a real SQLite table built from the mapping, so column types are the store's own.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sync.api.adapter import contact_from_wire, update_body
from sync.convert import Converter
from sync.emulator import Emulator, EmulatorConfig
from sync.emulator.operations import update
from sync.mapping import MappingSpec
from sync.mapping_file import load_mapping, parse_mapping
from sync.record import Contact, Fields
from sync.store.local import build_table

from .conftest import SHIPPED
from .strategies import LAYOUT, crm_contact, local_row

# Every column type each kind of attribute can have, over two mappings (one entry per source).
KITCHEN_A = """
table: kitchen_a
key_column: ma
custom_fields_column: khac
fields:
  - {field: full_name, column: ho_ten}
  - {field: phone, column: dt, phone_format: e164}
  - {field: email, column: email}
  - {field: gender, column: gt, values: {Nam: male, Nữ: female, Khác: other}}
  - {field: birthday, column: ns, type: text, date_format: dd/MM/yyyy}
  - {field: address, column: dc}
  - {field: job_title, column: cv}
  - {field: passport, column: cccd}
  - {field: note, column: gc}
  - {field: tags, column: nhom, format: delimited, separator: ";"}
  - {field: owner_email, column: nv}
  - {custom: Điểm, column: diem, type: integer, default: 0}
  - {custom: Hệ số, column: he_so, type: number}
  - {custom: Ngày cấp, column: ngay_cap, type: date}
  - {custom: Khách VIP, column: vip, type: boolean}
  - {custom: Thành viên, column: tv, type: boolean, values: {true: Có, false: Không}}
  - {custom: Kênh, column: kenh, values: {web: Website, zalo: Zalo OA}}
  - {custom: Mã vùng, column: ma_vung, type: integer, values: {1: Miền Bắc, 2: Miền Nam}}
  - {dynamic: dSingle, field_type: single_text, column: d_single, type: integer}
  - {dynamic: dMulti, field_type: multi_text, column: d_multi}
  - {dynamic: dNumber, field_type: number, column: d_number}
  - {dynamic: dDate, field_type: date, column: d_date, type: text, date_format: yyyy/MM/dd}
  - {dynamic: dRadio, field_type: radio, column: d_radio, type: boolean,
     values: {true: Có, false: Không}}
  - {dynamic: dSelect, field_type: select, column: d_select, type: integer,
     values: {1: Đồng, 2: Bạc, 3: Vàng, 4: Kim cương}}
  - {dynamic: dCheck, field_type: checkbox, column: d_check, format: delimited, separator: "|"}
"""
KITCHEN_B = """
table: kitchen_b
custom_fields_column: null
fields:
  - {field: full_name, column: full_name}
  - {field: phones, column: phones}
  - {field: emails, column: emails, type: text}
  - {field: gender, column: gender}
  - {field: birthday, column: birthday}
  - {field: tags, column: tags, type: text}
  - {field: note, column: note}
  - {custom: Điểm, column: diem}
  - {custom: Ngày cấp, column: ngay_cap, type: text, date_format: '%Y%m%d'}
  - {custom: Hệ số, column: he_so, type: number, default: 1.5}
  - {dynamic: dSingle, field_type: single_text, column: d_single}
  - {dynamic: dMulti, field_type: multi_text, column: d_multi}
  - {dynamic: dNumber, field_type: number, column: d_number, type: integer}
  - {dynamic: dDate, field_type: date, column: d_date}
  - {dynamic: dRadio, field_type: radio, column: d_radio}
  - {dynamic: dSelect, field_type: select, column: d_select}
  - {dynamic: dCheck, field_type: checkbox, column: d_check}
  - {dynamic: vWabCEBkqM, field_type: single_text, column: d_number_text, type: number}
"""
SPECS: dict[str, MappingSpec] = {
    "kitchen_a": parse_mapping(KITCHEN_A), "kitchen_b": parse_mapping(KITCHEN_B),
    **{name: load_mapping(path) for name, path in SHIPPED.items() if name != "top-level default"}}
EXAMPLES = settings(max_examples=60, deadline=None,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
_ids = itertools.count()


class Sides:
    """One mapping's two sides: the emulator (CRM) and a SQLite table (local)."""

    def __init__(self, spec: MappingSpec):
        self.spec, self.conv = spec, Converter(spec)
        self.emu = Emulator(EmulatorConfig(layout=LAYOUT))
        self.db = sa.create_engine("sqlite://")
        self.table = build_table(spec)
        self.table.metadata.create_all(self.db)

    def store(self, row: dict[str, Any]) -> dict[str, Any]:
        """Write a row and read it back: the column types are the real ones."""
        with self.db.begin() as conn:
            conn.execute(self.table.delete())
            conn.execute(self.table.insert(), [row])
            return dict(conn.execute(sa.select(self.table)).mappings().one())

    def push(self, ref_id: str, fields: Fields, previous: Contact) -> Contact:
        """update with what the engine would send, then the CRM's contact as listed."""
        body = update_body(self.conv.to_contact(ref_id, fields, previous))
        update(self.emu, body)
        (wire,) = self.emu.find_by_ref_id(ref_id)
        return contact_from_wire(wire)

    def contact(self, agent: dict[str, Any]) -> Contact:
        """A contact made in the CRM by an agent, as the list endpoint shows it."""
        pid = self.emu.agent_create(**agent)
        wire = self.emu.contact(pid)
        assert wire is not None
        return contact_from_wire(wire)


@pytest.fixture(scope="module", params=sorted(SPECS))
def sides(request: pytest.FixtureRequest) -> Iterator[Sides]:
    s = Sides(SPECS[request.param])
    yield s
    s.db.dispose()


def _diff(a: Fields, b: Fields) -> dict[str, tuple[Any, Any]]:
    return {k: (a.get(k), b.get(k)) for k in a.keys() | b.keys() if a.get(k) != b.get(k)}


@EXAMPLES
@given(data=st.data())
def test_crm_to_local_to_crm(sides: Sides, data: st.DataObject) -> None:
    ref = f"KH-{next(_ids)}"
    agent = data.draw(crm_contact(sides.spec, ref))
    remote = sides.contact(agent)
    remote_f = sides.conv.remote_fields(remote)
    row = sides.store({sides.spec.key_column: ref, **sides.conv.row_values(remote_f)})
    local_f = sides.conv.row_fields(row)
    assert _diff(remote_f, local_f) == {}, row
    # ...and the local version, pushed back, is what the CRM already held
    again = sides.conv.remote_fields(sides.push(ref, local_f, remote))
    assert _diff(remote_f, again) == {}


@EXAMPLES
@given(data=st.data())
def test_local_to_crm_to_local(sides: Sides, data: st.DataObject) -> None:
    ref = f"KH-{next(_ids)}"
    row = sides.store(data.draw(local_row(sides.spec, ref)))
    local_f = sides.conv.row_fields(row)
    remote = sides.push(ref, local_f, sides.contact({"full_name": "Khách", "ref_id": ref}))
    remote_f = sides.conv.remote_fields(remote)
    assert _diff(local_f, remote_f) == {}, row
    # ...and the CRM's version, pulled, writes what the row already held
    back = sides.conv.row_fields(sides.store({sides.spec.key_column: ref,
                                              **sides.conv.row_values(remote_f)}))
    assert _diff(local_f, back) == {}


def test_the_kitchen_mappings_cover_every_kind_and_column_type() -> None:
    seen = {(f.crm_kind, f.column_type, bool(f.values)) for name in ("kitchen_a", "kitchen_b")
            for f in SPECS[name].fields}
    kinds = {k for k, _, _ in seen}
    assert kinds >= {"text", "multiline", "phone", "email", "gender", "date", "number", "set",
                     "phones", "emails"}
    assert {t for _, t, _ in seen} == {"text", "integer", "number", "date", "boolean", "json"}
    types = {f.field_type for name in ("kitchen_a", "kitchen_b") for f in SPECS[name].fields}
    assert types >= {"single_text", "multi_text", "number", "date", "radio", "select",
                     "checkbox"}


def test_shipped_mappings_are_all_under_test() -> None:
    assert {p.name for p in (Path(__file__).parents[2] / "mappings").glob("*.yaml")} == {
        "default.yaml", "erp-customers.example.yaml", "export-pull-only.example.yaml"}
