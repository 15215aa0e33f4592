"""The converter's shortcut for contacts read from the wire: `remote_fields` takes the values the
adapter already normalised as they are (`Contact.from_wire`). It must give exactly what the
full canonicalisation gives, for any wire contact and any mapping, errors included."""

from __future__ import annotations

import unicodedata
from dataclasses import replace
from typing import Any

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from sync.api.adapter import contact_from_wire
from sync.convert import Converter, RowError
from sync.mapping_file import load_mapping, parse_mapping
from sync.record import Contact, Fields

from .conftest import SHIPPED
from .strategies import LAYOUT

# Edge cases of every field the shortcut covers: a default, a value map, typed columns,
# custom labels that differ only by case or spacing, a note in a text column, dates in text.
ODD = parse_mapping("""
table: odd
key_column: ref_id
custom_fields_column: extra
fields:
  - {field: full_name, column: name}
  - {field: job_title, column: job, default: "chưa rõ"}
  - {field: address, column: addr, values: {"HN": "Hà Nội"}}
  - {field: passport, column: passport_no}
  - {field: note, column: note}
  - {field: phone, column: phone, phone_format: e164}
  - {field: email, column: email}
  - {field: owner_email, column: owner}
  - {field: birthday, column: born, type: text, date_format: dd/MM/yyyy}
  - {field: gender, column: gender}
  - {field: tags, column: tags, format: delimited, separator: ";"}
  - {custom: "Điểm", column: points, type: integer}
  - {custom: "Màu sắc yêu thích", column: colour}
  - {custom: "Ngày hẹn", column: due, type: text, date_format: dd/MM/yyyy}
  - {custom: "Kênh", column: channel, default: "Website"}
  - {dynamic: dSingle, field_type: single_text, column: d_single}
  - {dynamic: dMulti, field_type: multi_text, column: d_multi}
  - {dynamic: dNumber, field_type: number, column: d_number}
""", "odd.yaml")
CONVERTERS = [Converter(load_mapping(path)) for path in SHIPPED.values()] + [Converter(ODD)]

# text as agents type it: stray and odd spaces, line breaks, decomposed diacritics, digits,
# the characters of phones and emails
_CHARS = "aăđêôơưAĐ ễệ\t\n\u00a0\u3000 +.-()/@0123456789xyzXYZ,"
messy = st.text(_CHARS, max_size=20).flatmap(
    lambda t: st.sampled_from([t, unicodedata.normalize("NFD", t), t.upper()]))
display = st.one_of(st.none(), messy, st.integers(-10**6, 10**12),
                    st.sampled_from(["06/03/1991", "1991-03-06", "31/02/2000", "Nam", "nữ",
                                     " 90 ", "1,5", "0393 123 456", "+84 393123456",
                                     "A@B.VN", "Hà Nội", "hn", "Dòng 1\nDòng 2 ",
                                     "hai  dấu cách", "tab\there", "Khác"]))
value = st.fixed_dictionaries({"display_value": display},
                              optional={"data_type": st.one_of(st.none(), messy),
                                        "value_type": st.one_of(st.none(), messy, st.sampled_from(
                                            ["Điểm", "Màu sắc yêu thích", " điểm ", "Kênh",
                                             "Ngày hẹn", "Nguồn"]))})
CODES = ["full_name", "job_title", "address", "passport", "note", "gender", "phone_number",
         "mail", "birthday", "contact_owner", "more_infomation", "ref_id",
         *(f["field_code"] for f in LAYOUT)]
attribute = st.fixed_dictionaries({
    "field_code": st.sampled_from(CODES),
    "field_type": st.sampled_from(["single_text", "multi_text", "number", "date", "select",
                                   "checkbox", "phone", "email", "customize"]),
    "value": st.one_of(st.lists(value, max_size=3), value, display)})
wire = st.fixed_dictionaries({
    "public_id": st.text("0123456789abcdef", min_size=4, max_size=8),
    "ref_id": st.one_of(st.none(), messy), "ref_code": st.one_of(st.none(), messy),
    "tags": st.lists(st.one_of(messy, st.fixed_dictionaries({"name": messy})), max_size=3),
    "attribute_structure": st.lists(attribute, max_size=12)})


def _outcome(conv: Converter, c: Contact) -> Fields | str:
    try:
        return conv.remote_fields(c)
    except RowError as exc:
        return f"RowError: {exc}"


@pytest.mark.parametrize("conv", CONVERTERS, ids=[*SHIPPED, "odd"])
@settings(max_examples=1000, deadline=None)
@given(obj=wire)
# a single_text attribute the CRM serves as multi_text: the adapter keeps its line break
@example(obj={"public_id": "ab", "attribute_structure": [
    {"field_code": "dSingle", "field_type": "multi_text",
     "value": [{"display_value": "Dòng 1\nDòng 2"}]}]})
def test_wire_read_values_are_taken_as_canonical_only_where_canon_agrees(
        conv: Converter, obj: dict[str, Any]) -> None:
    c = contact_from_wire(obj)
    assert c.from_wire
    assert _outcome(conv, c) == _outcome(conv, replace(c, from_wire=False))


def test_a_contact_built_by_hand_is_canonicalised() -> None:
    conv = CONVERTERS[0]
    c = Contact(ref_id="KH-1", full_name="  Nguyễn   Văn  A ", phones=())
    assert not c.from_wire
    assert conv.remote_fields(c)["full_name"] == "Nguyễn Văn A"
