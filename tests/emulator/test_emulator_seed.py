"""Seeded data: realistic Vietnamese contacts, deterministic, fast; wire JSON stays exact."""

from __future__ import annotations

import json
import re
import time
from collections import Counter
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from sync.emulator import Emulator, EmulatorConfig
from sync.emulator.model import national_phone, to_wire, wire_json

from .helpers import attr, first


def _contacts(n: int, seed: int = 1) -> list[dict[str, Any]]:
    return Emulator(EmulatorConfig(contacts=n, seed=seed)).contacts()


def test_same_seed_same_data_other_seed_other_data() -> None:
    assert _contacts(200) == _contacts(200)
    assert _contacts(200, seed=2) != _contacts(200)


def test_seeded_contacts_look_vietnamese() -> None:
    contacts = _contacts(1000)
    names = [first(c, "full_name") or "" for c in contacts]
    assert all(len(n.split()) >= 3 for n in names)
    assert sum(bool(re.search(r"[ăâđêôơưạảấầẩẫậắằẳẵặẹẻẽếềểễệỉịọỏốồổỗộớờởỡợụủứừửữựỳỵỷỹ"
                              r"áàãéèíìóòõúùýĐ]", n)) for n in names) > 900
    phones = [v["display_value"] for c in contacts for v in attr(c, "phone_number")]
    forms = Counter("plus" if p.startswith("+84 ") else "84" if p.startswith("84") else "0"
                    for p in phones)
    assert min(forms.values()) > 50  # all three written forms occur
    assert all(len(national_phone(p)) in (10, 11) and national_phone(p).startswith("0")
               for p in phones)
    seconds = sum(len(attr(c, "phone_number")) == 2 for c in contacts)
    assert 120 < seconds < 280
    emails = [v["display_value"] for c in contacts for v in attr(c, "mail")]
    assert any(e != e.lower() for e in emails) and all("@" in e for e in emails)
    tags = Counter(t for c in contacts for t in c["tags"])
    assert set(tags) == {"Khách lẻ", "Khách sỉ", "VIP", "Đã gọi", "Tiềm năng"}
    labels = Counter(v["value_type"] for c in contacts
                     for v in attr(c, "more_infomation"))
    assert set(labels) == {"Màu sắc yêu thích", "Điểm", "Kênh"}
    with_ref = [c for c in contacts if c["ref_id"]]
    assert 850 < len(with_ref) < 950
    assert all(re.fullmatch(r"KH-\d{6}", c["ref_id"]) and c["ref_code"]
               for c in with_ref)
    assert all(c["ref_code"] is None for c in contacts if not c["ref_id"])
    dynamic = sum(first(c, "hTqLmZpXcR") is not None for c in contacts)
    assert 300 < dynamic < 500
    for code in ("birthday", "address", "job_title", "passport", "note", "contact_owner"):
        assert any(first(c, code) for c in contacts), code


def test_ten_thousand_contacts_seed_quickly() -> None:
    start = time.perf_counter()
    emu = Emulator(EmulatorConfig(contacts=10_000))
    assert time.perf_counter() - start < 3.0
    assert len(emu.store.ordered("created")) == 10_000


def test_cached_wire_json_equals_the_dict_form() -> None:
    emu = Emulator(EmulatorConfig(contacts=300))
    for contact in emu.store.ordered("created"):
        assert json.loads(wire_json(contact, emu.field_types)) == to_wire(contact,
                                                                         emu.field_types)


@settings(max_examples=60, deadline=None)
@given(name=st.text(min_size=1).filter(str.strip), note=st.text(), tag=st.text(min_size=1)
       .filter(str.strip))
def test_wire_json_escapes_anything(name: str, note: str, tag: str) -> None:
    emu = Emulator()
    pid = emu.agent_create(full_name=name, note=note, tags=[tag], custom={'Nhãn "x"\\': name})
    contact = emu.store.by_id[pid]
    assert json.loads(wire_json(contact, emu.field_types)) == to_wire(contact, emu.field_types)
