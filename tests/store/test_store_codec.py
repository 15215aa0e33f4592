"""sync.codec: deterministic JSON and hashes for Fields and Contact."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from datetime import date, datetime
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sync.codec import (
    contact_dumps,
    contact_from_json,
    contact_loads,
    contact_to_json,
    dumps,
    fields_dumps,
    fields_from_json,
    fields_hash,
    fields_loads,
    fields_to_json,
    value_from_json,
    value_to_json,
)
from sync.record import Contact, CustomEntry, DynamicValue, Fields, Item

ROOT = Path(__file__).resolve().parents[2]
VIETNAMESE = ("aăâbcdđeêghiklmnoôơpqrstuưvxyáàảãạắằẳẵặấầẩẫậéèẻẽẹếềểễệíìỉĩịóòỏõọ"
              "ốồổỗộớờởỡợúùủũụứừửữựýỳỷỹỵ")
vn_text = st.text(alphabet=VIETNAMESE + VIETNAMESE.upper() + " 0123456789.,-", max_size=30)
any_text = st.one_of(vn_text, st.text(max_size=20))
values = st.one_of(
    st.none(), any_text, st.integers(), st.booleans(),
    st.floats(allow_nan=False), st.dates(),
    st.frozensets(any_text, max_size=5), st.tuples(any_text, any_text),
    st.lists(any_text, max_size=4).map(tuple),
)
fields = st.dictionaries(any_text, values, max_size=12)
items = st.builds(Item, vn_text, st.sampled_from([None, "home", "personal", "office"]))
optional_text = st.none() | vn_text
contacts = st.builds(
    Contact,
    ref_id=optional_text, ref_code=optional_text, full_name=optional_text,
    phones=st.lists(items, max_size=3).map(tuple), emails=st.lists(items, max_size=3).map(tuple),
    gender=st.sampled_from([None, "male", "female", "other"]), birthday=st.none() | st.dates(),
    address=optional_text, job_title=optional_text, passport=optional_text, note=optional_text,
    tags=st.frozensets(vn_text, max_size=4), owner_email=optional_text,
    custom=st.lists(st.builds(CustomEntry, vn_text, vn_text, optional_text), max_size=3).map(tuple),
    dynamic=st.dictionaries(vn_text, st.builds(DynamicValue, st.sampled_from(["text", "select"]),
                                               st.lists(vn_text, max_size=3).map(tuple)),
                            max_size=3),
    public_id=optional_text, created_ms=st.none() | st.integers(0, 2**53),
    updated_ms=st.none() | st.integers(0, 2**53), is_deleted=st.booleans(),
)


@given(fields)
def test_fields_round_trip(f: dict) -> None:  # type: ignore[type-arg]
    data = fields_to_json(f)
    assert json.loads(json.dumps(data)) == data  # plain JSON data
    back = fields_from_json(json.loads(dumps(data)))
    assert back == f
    assert {k: type(v) for k, v in back.items()} == {k: type(v) for k, v in f.items()}
    assert fields_loads(fields_dumps(f)) == f


@given(fields)
def test_hash_ignores_key_order_and_set_order(f: dict) -> None:  # type: ignore[type-arg]
    reordered = dict(reversed(list(f.items())))
    assert fields_hash(reordered) == fields_hash(f)
    assert fields_dumps(reordered) == fields_dumps(f)
    assert len(fields_hash(f)) == 32


@settings(max_examples=200)
@given(contacts)
def test_contact_round_trip(c: Contact) -> None:
    back = contact_from_json(json.loads(dumps(contact_to_json(c))))
    assert back == c
    assert contact_loads(contact_dumps(c)) == c


def test_hash_differs_on_changes() -> None:
    base: Fields = {"full_name": "Nguyễn Văn An", "tags": frozenset({"vip"})}
    assert fields_hash(base) != fields_hash({**base, "full_name": "Nguyễn Văn Ân"})
    assert fields_hash(base) != fields_hash({**base, "tags": frozenset({"vip", "mới"})})
    assert fields_hash(base) != fields_hash({**base, "note": None})  # a key more
    assert fields_hash({"x": ("a", "b")}) != fields_hash({"x": frozenset({"a", "b"})})
    assert fields_hash({"x": "2024-01-02"}) != fields_hash({"x": date(2024, 1, 2)})


SAMPLE: Fields = {
    "full_name": "Trần Thị Bích Ngọc", "phone": "0393123456", "birthday": date(1990, 5, 17),
    "tags": frozenset({"khách quen", "VIP", "hà nội"}), "phones": ("0393123456", "0912"),
    "custom:Hạng thẻ": "Vàng", "dynamic:loyalty": 1200, "score": 4.5, "active": True,
    "note": None,
}
GOLDEN_HASH = "bbcc81857233e775259d1c4655dff05a"  # blake2b-128 of SAMPLE_TEXT
SAMPLE_TEXT = (
    '{"active":true,"birthday":{"$date":"1990-05-17"},"custom:Hạng thẻ":"Vàng",'
    '"dynamic:loyalty":1200,"full_name":"Trần Thị Bích Ngọc","note":null,'
    '"phone":"0393123456","phones":{"$list":["0393123456","0912"]},"score":4.5,'
    '"tags":{"$set":["VIP","hà nội","khách quen"]}}'
)


def test_canonical_text_is_fixed() -> None:
    assert fields_dumps(SAMPLE) == SAMPLE_TEXT
    # a golden value: changing the encoding would make every stored hash look changed
    assert fields_hash(SAMPLE) == GOLDEN_HASH


def test_hash_is_stable_across_processes() -> None:
    """Not tied to the process's string hash seed (set iteration order)."""
    code = ("from sync.codec import fields_hash;"
            "print(fields_hash({'tags': frozenset(f'tag {i}' for i in range(50)), 'x': 1}))")
    procs = [subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True,
                              cwd=ROOT, env={**os.environ, "PYTHONHASHSEED": seed,
                                             "PYTHONPATH": str(ROOT)})
             for seed in ("1", "2", "3")]
    hashes = {p.communicate(timeout=30)[0].strip() for p in procs}
    assert hashes == {fields_hash({"tags": frozenset(f"tag {i}" for i in range(50)), "x": 1})}


def test_rejects_what_is_not_a_field_value() -> None:
    with pytest.raises(TypeError, match="'when'"):
        fields_to_json({"when": datetime(2024, 1, 1)})
    with pytest.raises(TypeError, match="'xs'"):
        fields_to_json({"xs": ["a"]})  # type: ignore[dict-item]
    with pytest.raises(ValueError):
        value_from_json({"$what": 1})
    with pytest.raises(ValueError):
        value_from_json(["a"])


def test_value_round_trip_examples() -> None:
    for v in (None, "Đà Nẵng", 0, -3, 1.5, True, False, date(2000, 2, 29), frozenset(),
              frozenset({"b", "a"}), (), ("x", "y")):
        assert value_from_json(json.loads(dumps(value_to_json(v)))) == v


def test_contact_json_is_compact_and_complete() -> None:
    assert contact_to_json(Contact()) == {}
    c = Contact(ref_id="KH001", full_name="Lê Văn Tám", phones=(Item("0912345678", "home"),),
                custom=(CustomEntry("Hạng", "Bạc", "k1"),), birthday=date(1985, 3, 8),
                dynamic={"f1": DynamicValue("select", ("a", "b"))}, public_id="abc",
                created_ms=1, updated_ms=2, is_deleted=True, tags=frozenset({"b", "a"}))
    data = contact_to_json(c)
    assert data["phones"] == [{"value": "0912345678", "kind": "home"}]
    assert data["custom"] == [{"label": "Hạng", "value": "Bạc", "key": "k1"}]
    assert data["birthday"] == "1985-03-08" and data["tags"] == ["a", "b"]
    assert data["dynamic"] == {"f1": {"field_type": "select", "values": ["a", "b"]}}
    assert "Lê Văn Tám" in contact_dumps(c)  # non-ASCII kept as is
    assert contact_from_json(data) == c


def test_a_set_is_written_sorted_whether_seen_before_or_not() -> None:
    """Sorted members are remembered per set (the mapping's signature recurs in every base):
    a set seen again, an equal set, and more sets than are remembered all encode alike."""
    sets = [frozenset({f"t{i}", f"a{i}", "m"}) for i in range(300)]
    for s in sets + sets + [frozenset(set(s)) for s in sets]:
        assert fields_to_json({"tags": s}) == {"tags": {"$set": sorted(s)}}
        assert fields_loads(fields_dumps({"tags": s})) == {"tags": s}
