"""The wire adapter: envelope errors, tolerant reading, request bodies, round trips."""

from __future__ import annotations

import json
from dataclasses import replace
from datetime import UTC, date, datetime, timedelta
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sync.api import adapter
from sync.api.adapter import NoteIn, TokenRejected
from sync.errors import AuthError, ProtocolError, RateLimited, RemoteError, RetriableError
from sync.record import Contact, CustomEntry, DynamicValue, Item, norm_multiline, norm_text

CONTRACT_EXAMPLE: dict[str, Any] = {
    "public_id": "ad1a7e78d80b94544ab92456",
    "created_date": 1587023890765,
    "last_updated_date": 1588826965324,
    "create_by": {"name": "TestBoss 123"},
    "last_update_by": {"name": "TestBoss 123"},
    "contact_type": "contact",
    "is_deleted": False,
    "tags": ["Khách lẻ"],
    "tags_view": None,
    "ref_id": "KH-000123",
    "ref_code": "C123",
    "attribute_structure": [
        {"identify": False, "field_code": "full_name", "field_type": "single_text",
         "value": [{"display_value": "Trần Văn Tiến", "data_type": None, "value_type": None}]},
        {"identify": False, "field_code": "phone_number", "field_type": "phone",
         "value": [{"display_value": "0395187319", "data_type": "personal",
                    "value_type": "Cá nhân"}]},
        {"identify": False, "field_code": "mail", "field_type": "email",
         "value": [{"display_value": "tientv@example.vn", "data_type": "personal",
                    "value_type": "Cá nhân"}]},
        {"identify": False, "field_code": "more_infomation", "field_type": "customize",
         "value": [{"display_value": "Vàng", "data_type": "label2",
                    "value_type": "Màu sắc yêu thích"}]},
    ],
}


def attr(code: str, *values: Any, field_type: str = "single_text") -> dict[str, Any]:
    return {"field_code": code, "field_type": field_type,
            "value": [v if isinstance(v, dict) else {"display_value": v} for v in values]}


def test_contract_example() -> None:
    c = adapter.contact_from_wire(CONTRACT_EXAMPLE)
    assert c == Contact(
        ref_id="KH-000123", ref_code="C123", full_name="Trần Văn Tiến",
        phones=(Item("0395187319", "personal"),), emails=(Item("tientv@example.vn", "personal"),),
        tags=frozenset({"Khách lẻ"}), custom=(CustomEntry("Màu sắc yêu thích", "Vàng", "label2"),),
        public_id="ad1a7e78d80b94544ab92456", created_ms=1587023890765,
        updated_ms=1588826965324)


def test_tolerant_variants() -> None:
    base = {"public_id": "p1", "attribute_structure": [attr("full_name", "A")]}
    assert adapter.contact_from_wire({**base, "refId": "R", "refCode": "C"}).ref_id == "R"
    in_attrs = {"public_id": "p1", "attribute_structure": [attr("ref_id", "R2"),
                                                           attr("ref_code", "C2")]}
    c = adapter.contact_from_wire(in_attrs)
    assert (c.ref_id, c.ref_code, c.full_name) == ("R2", "C2", None)
    tags = adapter.contact_from_wire({**base, "tags": [{"name": "Đã gọi"}, "Khách lẻ", None]})
    assert tags.tags == frozenset({"Đã gọi", "Khách lẻ"})
    unknown = adapter.contact_from_wire({**base, "surprise": {"x": 1}, "tags": None,
                                         "attribute_structure": [attr("full_name", "A"), 7]})
    assert unknown == Contact(full_name="A", public_id="p1")
    assert adapter.contact_from_wire({}) == Contact()


def test_phone_forms_give_equal_contacts() -> None:
    forms = ["0393123456", "84393123456", "+84 393 123 456", "+84-393.123.456"]
    contacts = [adapter.contact_from_wire({"public_id": "p", "attribute_structure": [
        attr("phone_number", {"display_value": f, "data_type": "home"}, field_type="phone"),
        attr("mail", {"display_value": "TienTV@Example.VN", "value_type": "Công ty"})]})
        for f in forms]
    c = contacts[0]
    assert all(other == c for other in contacts)  # Contact holds a dict: not hashable
    assert c.phones == (Item("0393123456", "home"),)
    assert c.emails == (Item("tientv@example.vn", "office"),)  # kind from the label
    dup = adapter.contact_from_wire({"attribute_structure": [
        attr("phone_number", "0393123456", "+84393123456", field_type="phone")]})
    assert dup.phones == (Item("0393123456", None),)


def test_standard_and_dynamic_attributes() -> None:
    c = adapter.contact_from_wire({"public_id": "p", "attribute_structure": [
        attr("job_title", "  Kế   toán "), attr("gender", "Nam", field_type="radio"),
        attr("address", "1 Lê Lợi"), attr("passport", "B123"),
        attr("note", "dòng 1  \r\ndòng 2", field_type="multi_text"),
        attr("birthday", "31/12/1990", field_type="date"),
        attr("contact_owner", "Agent@Example.vn"),
        attr("vWabCEBkqM", "90"), attr("hTqLmZpXcR", "Bạc", "Vàng", field_type="checkbox"),
        {"field_code": "empty", "field_type": "single_text", "value": None}]})
    assert (c.job_title, c.gender, c.address, c.passport) == ("Kế toán", "male", "1 Lê Lợi", "B123")
    assert c.note == "dòng 1\ndòng 2"
    assert c.birthday == date(1990, 12, 31)
    assert c.owner_email == "agent@example.vn"
    assert c.dynamic == {"vWabCEBkqM": DynamicValue("single_text", ("90",)),
                         "hTqLmZpXcR": DynamicValue("checkbox", ("Bạc", "Vàng")),
                         "empty": DynamicValue("single_text", ())}


@pytest.mark.parametrize("raw", ["31/12/1990", "1990-12-31", 662601600000, "662601600000"])
def test_birthday_forms(raw: object) -> None:
    c = adapter.contact_from_wire({"attribute_structure": [attr("birthday", raw)]})
    assert c.birthday == date(1990, 12, 31)


def test_unreadable_birthday_is_none() -> None:
    assert adapter.contact_from_wire({"attribute_structure": [attr("birthday", "soon")]}) \
        .birthday is None


FULL = Contact(
    ref_id="KH-1", ref_code="C1", full_name="Nguyễn Thị Ánh Tuyết",
    phones=(Item("0393123456", "home"), Item("0901000000", None)),
    emails=(Item("a@b.vn", "office"),), gender="female", birthday=date(1990, 1, 2),
    address="Hà Nội", job_title=None, passport=None, note="n", tags=frozenset({"b", "a"}),
    owner_email="agent@x.vn", custom=(CustomEntry("Điểm", "90", "k1"),),
    dynamic={"vWabCEBkqM": DynamicValue("single_text", ("demo",))}, public_id="p")


def test_create_body_shape() -> None:
    assert adapter.create_body(FULL) == {
        "fullName": "Nguyễn Thị Ánh Tuyết", "refId": "KH-1", "refCode": "C1", "note": "n",
        "birthday": "02/01/1990", "gender": "female", "address": "Hà Nội",
        "user_owner_email": "agent@x.vn",
        "phones": [{"data": "0393123456", "type": "home", "valueType": "Nhà"},
                   {"data": "0901000000"}],
        "emails": [{"data": "a@b.vn", "type": "office", "valueType": "Công ty"}],
        "tags": ["a", "b"], "more_infomation": [{"value_type": "Điểm", "display_value": "90"}]}
    assert adapter.create_body(Contact(full_name="X")) == {"fullName": "X"}


def test_update_body_shape() -> None:
    body = adapter.update_body(FULL)
    assert body["refId"] == "KH-1" and body["fullName"] == "Nguyễn Thị Ánh Tuyết"
    assert body["job_title"] == "" and body["passport"] == ""  # cleared, not left unchanged
    assert body["dynamic_attributes"] == [{"field_code": "vWabCEBkqM",
                                           "field_type": "single_text",
                                           "dynamic_attribute_value": [{"display_value": "demo"}]}]
    bare = adapter.update_body(Contact(ref_id="R", full_name="X"))
    assert (bare["phones"], bare["emails"], bare["tags"], bare["more_infomation"]) == \
        ([], [], [], [])  # lists always whole: a list present replaces the CRM's
    assert "dynamic_attributes" not in bare and "gender" not in bare
    with pytest.raises(ValueError, match="pull-only"):
        adapter.update_body(Contact(full_name="X", public_id="p9"))
    with pytest.raises(ValueError, match="fullName"):
        adapter.update_body(Contact(ref_id="R"))


def test_notes_and_get_query() -> None:
    assert adapter.notes_body([NoteIn("+84 393 123 456", "gọi lại", "a@x.vn"),
                               NoteIn("0393123456", "ok")]) == [
        {"phone": "0393123456", "content": "gọi lại", "note_by": "a@x.vn"},
        {"phone": "0393123456", "content": "ok"}]
    assert adapter.get_query(ref_id="R", phone=None) == {"ref_id": "R"}
    assert adapter.get_query(email="a@b.vn") == {"email": "a@b.vn"}
    for bad in ({}, {"ref_id": "R", "phone": "0"}):
        with pytest.raises(ValueError, match="exactly one"):
            adapter.get_query(**bad)


# --- envelope -------------------------------------------------------------------------------

def body(obj: Any) -> bytes:
    return json.dumps(obj).encode()


def test_envelope_success_and_failures() -> None:
    assert adapter.parse_envelope(200, body({"status_code": 9999, "payload": [1]}), "list") == [1]
    with pytest.raises(RemoteError) as remote:
        adapter.parse_envelope(200, body({"status_code": -9999, "message": "request_invalid"}),
                               "update")
    assert remote.value.code == "request_invalid" and remote.value.endpoint == "update"
    with pytest.raises(AuthError):
        adapter.parse_envelope(200, body({"status_code": -9999, "message": "api_key_invalid"}),
                               "auth")
    with pytest.raises(TokenRejected):
        adapter.parse_envelope(200, body({"status_code": -9999, "message": "api_key_invalid"}),
                               "list")
    with pytest.raises(TokenRejected) as documented:
        adapter.parse_envelope(200, body({"status_code": -9999, "message": "api_key_invalid"}),
                               "list")
    assert documented.value.code is None  # refused again and again: a refused key
    with pytest.raises(TokenRejected) as worded:
        adapter.parse_envelope(200, body({"status_code": -9999, "message": "Token is expired"}),
                               "update")
    assert worded.value.code == "Token is expired"  # refused again and again: the answer
    with pytest.raises(RemoteError):
        adapter.parse_envelope(200, body({"status_code": -9999, "message": "access_denied"}),
                               "update")
    with pytest.raises(TokenRejected):
        adapter.parse_envelope(401, b"", "list")
    with pytest.raises(AuthError):
        adapter.parse_envelope(401, b"", "auth")


def test_envelope_transient_and_protocol() -> None:
    with pytest.raises(RateLimited) as limited:
        adapter.parse_envelope(429, b"{}", "list", retry_after="0.5")
    assert limited.value.retry_after == 0.5
    with pytest.raises(RateLimited) as no_header:
        adapter.parse_envelope(429, b"", "list")
    assert no_header.value.retry_after is None
    for status, raw in ((500, b"<html>500</html>"), (503, b""), (504, b"<html/>"),
                        (200, b'{"status_code":9999,"payload":{"items":[{"public_id":"'),
                        (200, b""), (200, b"\xff\xfe")):
        with pytest.raises(RetriableError) as exc:
            adapter.parse_envelope(status, raw, "list")
        assert not isinstance(exc.value, RateLimited)
    for status, raw in ((200, b"[]"), (200, b'{"status_code": 1}'), (404, b"<html/>")):
        with pytest.raises(ProtocolError):
            adapter.parse_envelope(status, raw, "list")


def test_retry_after_http_date() -> None:
    assert adapter.retry_after_seconds("Wed, 21 Oct 2015 07:28:00 GMT") == 0.0
    assert adapter.retry_after_seconds("nonsense") is None


@pytest.mark.parametrize(("header", "expected"), [
    ("3", 3.0), ("0.05", 0.05), ("-5", 0.0),  # seconds; a negative delay is no delay
    ("Wed, 21 Oct 2015 07:28:00 GMT", 0.0),  # RFC 1123, in the past
    ("Sun Nov  6 08:49:37 1994", 0.0),  # asctime: no time zone, read as UTC
    ("Sun, 06 Nov 1994 08:49:37 -0000", 0.0),  # "-0000": no time zone either
    ("garbage", None), ("", None), (None, None),
    ("1e999", None), ("inf", None), ("nan", None),  # overflowing / not finite
    ("Sun, 06 Nov 99999 08:49:37 GMT", None),  # a year datetime cannot hold
])
def test_retry_after_never_raises(header: str | None, expected: float | None) -> None:
    assert adapter.retry_after_seconds(header) == expected


def test_retry_after_future_date_without_time_zone() -> None:
    when = datetime.now(UTC) + timedelta(seconds=60)
    for header in (when.strftime("%a %b %d %H:%M:%S %Y"),
                   when.strftime("%a, %d %b %Y %H:%M:%S -0000"),
                   when.strftime("%a, %d %b %Y %H:%M:%S GMT")):
        seconds = adapter.retry_after_seconds(header)
        assert seconds is not None and 50 < seconds <= 60, header
    with pytest.raises(RateLimited) as limited:
        adapter.parse_envelope(429, b"", "list", retry_after="Sun Nov  6 08:49:37 1994")
    assert limited.value.retry_after == 0.0


def test_page_and_layout_shapes() -> None:
    page = adapter.page_from_wire({"items": [CONTRACT_EXAMPLE], "page_number": 2,
                                   "page_size": 37, "total_items": 38, "total_pages": 2}, 2)
    assert (page.page_number, page.page_size, page.has_next, len(page.items)) == (2, 37, False, 1)
    bads: list[Any] = [None, [], {}, {"items": [1]}, {"items": [{"ref_id": "x"}]}]
    for bad in bads:
        with pytest.raises(ProtocolError):
            adapter.page_from_wire(bad, 1)
    fields = adapter.layout_from_wire({"items": [{"field_code": "c", "field_type": "select",
                                                  "options": ["A", {"name": "B"}]}]})
    assert fields[0].options == ("A", "B") and fields[0].field_name == "c"
    with pytest.raises(ProtocolError):
        adapter.layout_from_wire([{"field_name": "x"}])


# --- round trip: Contact -> update body -> server echo -> Contact ------------------------------

def echo(b: dict[str, Any]) -> dict[str, Any]:
    """What a server that stored the update body would list (data_type from `type`)."""
    def a(code: str, ft: str, values: list[tuple[Any, Any, Any]]) -> dict[str, Any]:
        return {"field_code": code, "field_type": ft, "value": [
            {"display_value": d, "data_type": t, "value_type": v} for d, t, v in values]}
    out = [a("full_name", "single_text", [(b["fullName"], None, None)])]
    for key, code in (("job_title", "job_title"), ("address", "address"),
                      ("passport", "passport"), ("note", "note"), ("gender", "gender"),
                      ("birthday", "birthday"), ("user_owner_email", "contact_owner")):
        if b.get(key):
            out.append(a(code, "single_text", [(b[key], None, None)]))
    for key, code in (("phones", "phone_number"), ("emails", "mail")):
        out.append(a(code, key, [(i["data"], i.get("type"), i.get("valueType")) for i in b[key]]))
    out.append(a("more_infomation", "customize",
                 [(e["display_value"], None, e["value_type"]) for e in b["more_infomation"]]))
    for d in b.get("dynamic_attributes", []):
        out.append(a(d["field_code"], d["field_type"],
                     [(v["display_value"], None, None) for v in d["dynamic_attribute_value"]]))
    return {"ref_id": b["refId"], "ref_code": b.get("refCode"), "tags": b["tags"],
            "attribute_structure": out}


_text: st.SearchStrategy[str] = st.text(
    st.characters(codec="utf-8", categories=("L", "N", "P", "Zs")), max_size=12,
).map(lambda raw: norm_text(raw) or "").filter(bool)
_kind = st.sampled_from([None, "home", "personal", "office"])
_email = st.from_regex(r"[a-z0-9]{1,8}@[a-z]{1,6}\.vn", fullmatch=True)
_dyn_code = st.from_regex(r"[a-zA-Z]{10}", fullmatch=True)
contacts = st.builds(
    Contact, ref_id=_text, full_name=_text, ref_code=st.none() | _text,
    phones=st.lists(st.from_regex(r"0[35789][0-9]{8}", fullmatch=True), unique=True,
                    max_size=3).flatmap(lambda ps: st.tuples(*(st.builds(Item, st.just(p), _kind)
                                                               for p in ps))),
    emails=st.lists(_email, unique=True, max_size=2).flatmap(
        lambda es: st.tuples(*(st.builds(Item, st.just(e), _kind) for e in es))),
    gender=st.sampled_from([None, "male", "female", "other"]),
    birthday=st.none() | st.dates(date(1900, 1, 1), date(2100, 12, 31)),
    address=st.none() | _text, job_title=st.none() | _text, passport=st.none() | _text,
    note=st.none() | st.lists(_text, min_size=1, max_size=3).map("\n".join).map(norm_multiline),
    tags=st.frozensets(_text, max_size=4), owner_email=st.none() | _email,
    custom=st.lists(st.builds(CustomEntry, _text, _text), max_size=3).map(tuple),
    dynamic=st.dictionaries(_dyn_code, st.builds(
        DynamicValue, st.sampled_from(["single_text", "multi_text", "number", "checkbox"]),
        st.lists(_text, min_size=1, max_size=2).map(tuple)), max_size=3),
    public_id=st.none(), created_ms=st.none(), updated_ms=st.none(), is_deleted=st.just(False))


@settings(max_examples=150, deadline=None, derandomize=True)
@given(contacts)
def test_update_body_round_trip(c: Contact) -> None:
    assert adapter.contact_from_wire(echo(adapter.update_body(c))) == c


# What an update body cannot clear by leaving a key out: left out, the CRM keeps its value
_UNCLEARABLE = ("ref_code", "birthday", "gender", "owner_email")


def test_a_partial_update_sends_what_changed_and_what_the_api_requires() -> None:
    after = replace(FULL, job_title="Trưởng phòng", note=None, tags=frozenset({"a"}))
    body = adapter.update_body(after, FULL)
    assert body == {"refId": "KH-1", "fullName": "Nguyễn Thị Ánh Tuyết",
                    "phones": adapter.update_body(FULL)["phones"],
                    "job_title": "Trưởng phòng", "note": "", "tags": ["a"]}
    assert adapter.update_body(FULL, FULL).keys() == {"refId", "fullName", "phones"}
    changed = replace(FULL, dynamic={**FULL.dynamic, "aB3": DynamicValue("number", ("1",))})
    assert [d["field_code"] for d in adapter.update_body(changed, FULL)["dynamic_attributes"]] \
        == ["aB3", "vWabCEBkqM"]  # sent whole, like every list


@settings(max_examples=150, deadline=None, derandomize=True)
@given(contacts, contacts)
def test_a_partial_update_over_the_crm_copy_gives_the_contact(before: Contact,
                                                              after: Contact) -> None:
    """A server that keeps what a body leaves out and replaces what it sends, given the CRM's
    copy and then the partial body, holds the contact: as the whole body would, but what no
    body can clear."""
    after = replace(after, ref_id=before.ref_id)
    partial = adapter.update_body(after, before)
    assert {"refId", "fullName", "phones"} <= partial.keys()
    for key, attr in adapter._UPDATE_ATTRS.items():
        if getattr(after, attr) == getattr(before, attr):
            assert key not in partial, key
    stored = {**adapter.update_body(before), **partial}
    kept = {a: getattr(before, a) for a in _UNCLEARABLE if getattr(after, a) is None}
    if not after.dynamic:
        kept["dynamic"] = before.dynamic
    assert adapter.contact_from_wire(echo(stored)) == replace(after, **kept)


@settings(max_examples=50, deadline=None, derandomize=True)
@given(contacts)
def test_create_body_round_trip(c: Contact) -> None:
    b = adapter.create_body(c)
    full = {"phones": [], "emails": [], "tags": [], "more_infomation": [], **b}
    assert adapter.contact_from_wire(echo(full)) == replace(c, dynamic={})  # add has no dynamics


_BEFORE = Contact(ref_id="KH-1", full_name="Lê Văn A", address="1 Hai Bà Trưng",
                  gender="male", job_title="Thợ", note=None)


@pytest.mark.parametrize(("sent", "summary", "missed"), [
    (replace(_BEFORE, address="2 Lý Thái Tổ"), {"address": "1 Hai Bà Trưng"}, ["address"]),
    (replace(_BEFORE, address="2 Lý Thái Tổ"), {"address": " 2 Lý Thái Tổ "}, []),
    (replace(_BEFORE, address="2 Lý Thái Tổ"), {}, []),  # not shown: taken
    (replace(_BEFORE, address="2 Lý Thái Tổ"), {"address": "3 Khác"}, []),  # an agent's
    (replace(_BEFORE, address=None), {"address": "1 Hai Bà Trưng"}, ["address"]),  # a clear
    (replace(_BEFORE, address=None), {"address": None}, []),
    (replace(_BEFORE, address=None), {"address": ""}, []),
    (replace(_BEFORE, gender="female"), {"gender": "Nam"}, ["gender"]),  # the label read
    (replace(_BEFORE, gender="female"), {"gender": {"x": 1}}, []),  # unreadable: taken
    (replace(_BEFORE, note="ghi chú"), {"note": None, "address": "1 Hai Bà Trưng"}, ["note"]),
    (_BEFORE, {"address": "1 Hai Bà Trưng", "fullName": "Lê Văn A"}, []),  # nothing changed
])
def test_not_taken_reads_the_update_summary(sent: Contact, summary: dict[str, Any],
                                            missed: list[str]) -> None:
    assert adapter.not_taken(summary, sent, _BEFORE) == missed


def test_shown_as_before_names_the_changed_attributes_read_back_unchanged() -> None:
    sent = replace(_BEFORE, job_title="Kỹ sư", ref_code="C9")
    assert adapter.shown_as_before(_BEFORE, sent, _BEFORE) == ["job_title", "ref_code"]
    assert adapter.shown_as_before(sent, sent, _BEFORE) == []
    assert adapter.shown_as_before(replace(_BEFORE, job_title="Khác"), sent, _BEFORE) == [
        "ref_code"]


def test_not_clearable_names_the_clears_an_update_cannot_send() -> None:
    before = replace(_BEFORE, ref_code="C1", birthday=date(1990, 1, 2), owner_email="a@b.vn",
                     passport="B123")
    cleared = replace(before, ref_code=None, birthday=None, gender=None, owner_email=None,
                      job_title=None, passport=None, address=None)
    assert adapter.not_clearable(cleared, before) == ["ref_code", "birthday", "gender",
                                                      "owner_email"]
    assert adapter.not_clearable(before, before) == []
    assert adapter.update_changes(cleared, before) == [
        "ref_code", "job_title", "birthday", "gender", "passport", "address", "owner_email"]


def test_an_update_summary_naming_another_contact_is_told() -> None:
    before = Contact(ref_id="KH-1", public_id="p-1", full_name="An")
    assert adapter.taken_by_another({"publicId": "p-1"}, before) is None
    assert adapter.taken_by_another({"publicId": "p-2"}, before) == "p-2"
    assert adapter.taken_by_another({"fullName": "An"}, before) is None  # names none
    assert adapter.taken_by_another(None, before) is None
    assert adapter.taken_by_another({"publicId": "p-2"},
                                    Contact(ref_id="KH-1", full_name="An")) is None
