"""The listing read lazily: `page_from_wire` on raw bytes, `Listed` (digest, ref_id hint,
contact()), and `parse_envelope(raw=True)`."""

from __future__ import annotations

import json
from typing import Any

import msgspec
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from xxhash import xxh3_128_hexdigest

from sync.api import adapter
from sync.api.adapter import Listed
from sync.errors import ProtocolError, RetriableError

from .test_api_adapter import CONTRACT_EXAMPLE, attr


def compact(obj: Any) -> bytes:
    """JSON as the emulator (and msgspec) write it: compact, non-ASCII kept as UTF-8."""
    return json.dumps(obj, ensure_ascii=False, separators=(",", ":")).encode()


SECOND: dict[str, Any] = {
    "public_id": "bb2b8f89e91ca5655bc03567", "created_date": 1587023890999,
    "last_updated_date": 1588826965999, "is_deleted": False, "tags": [],
    "ref_id": None, "ref_code": None,
    "attribute_structure": [attr("full_name", "Lê Thị Hồng Nhung"),
                            attr("phone_number", {"display_value": "84912345678",
                                                  "data_type": "home"}, field_type="phone")]}
PAYLOAD: dict[str, Any] = {"items": [CONTRACT_EXAMPLE, SECOND], "page_number": 1,
                           "page_size": 2, "total_items": 2, "total_pages": 1,
                           "has_next": False}


def raw_page(payload: dict[str, Any] = PAYLOAD, page: int = 1) -> adapter.Page:
    return adapter.page_from_wire(msgspec.Raw(compact(payload)), page)


def listed_one(item: Any) -> Listed:
    [x] = adapter.page_from_wire(msgspec.Raw(compact({"items": [item]})), 1).listed
    return x


# --- page_from_wire ------------------------------------------------------------------------------

def test_raw_and_decoded_payloads_give_the_same_items() -> None:
    from_raw = raw_page()
    from_dict = adapter.page_from_wire(json.loads(compact(PAYLOAD)), 1)
    assert from_raw.listed == from_dict.listed
    assert from_raw.items == from_dict.items
    assert (from_raw.page_number, from_raw.page_size, from_raw.total_items,
            from_raw.total_pages, from_raw.has_next) == (1, 2, 2, 1, False)
    first, second = from_raw.listed
    assert (first.public_id, first.ref_id, first.is_deleted) == (
        "ad1a7e78d80b94544ab92456", "KH-000123", False)
    assert (second.public_id, second.ref_id, second.is_deleted) == (
        "bb2b8f89e91ca5655bc03567", None, False)
    # each item's bytes exactly as served, and their digest: computed only when there is
    # something to look up (`known`), else by contact()
    assert first.raw == compact(CONTRACT_EXAMPLE) and second.raw == compact(SECOND)
    assert first.digest is None and second.digest is None
    assert first.contact().digest == xxh3_128_hexdigest(first.raw)
    looked_up = adapter.page_from_wire(msgspec.Raw(compact(PAYLOAD)), 1, lambda d: None)
    assert [x.digest for x in looked_up.listed] == [xxh3_128_hexdigest(x.raw)
                                                    for x in from_raw.listed]
    assert [x.contact() for x in looked_up.listed] == list(from_raw.items)


def test_a_differently_serialised_page_parses_alike_with_other_digests() -> None:
    """A server that re-serialises (spaces, escapes) only costs a parse: same contacts,
    another digest."""
    spaced = json.dumps(PAYLOAD, ensure_ascii=True).encode()
    other = adapter.page_from_wire(msgspec.Raw(spaced), 1)
    page = raw_page()
    assert [(x.public_id, x.ref_id, x.is_deleted) for x in other.listed] == \
        [(x.public_id, x.ref_id, x.is_deleted) for x in page.listed]
    assert other.items == page.items
    assert all(a.contact().digest != b.contact().digest
               for a, b in zip(other.listed, page.listed, strict=True))


def test_digest_is_stable_and_changes_with_any_byte() -> None:
    assert raw_page().listed[0] == raw_page().listed[0]  # the same page read twice
    a, b = raw_page().listed[0].contact(), raw_page().listed[0].contact()
    assert a.digest == b.digest and a.digest is not None and a == b
    raw = compact(CONTRACT_EXAMPLE)
    # one contact differing by one byte anywhere (a timestamp digit, a name's letter, a key's
    # order) gets another digest
    variants = [
        {**CONTRACT_EXAMPLE, "last_updated_date": CONTRACT_EXAMPLE["last_updated_date"] + 1},
        {**CONTRACT_EXAMPLE, "last_update_by": {"name": "TestBoss 124"}},
        {**CONTRACT_EXAMPLE, "tags": ["Khách lẽ"]},
        {"ref_id": CONTRACT_EXAMPLE["ref_id"],
         **{k: v for k, v in CONTRACT_EXAMPLE.items() if k != "ref_id"}},
    ]
    digests = {listed_one(v).contact().digest for v in variants}
    assert a.digest not in digests and len(digests) == len(variants)
    for i in range(len(raw)):  # every single-byte change that keeps the JSON valid
        flipped = bytearray(raw)
        flipped[i] = ord("0") if raw[i] != ord("0") else ord("1")
        try:
            json.loads(flipped)
        except ValueError:
            continue
        try:
            x = adapter.page_from_wire(msgspec.Raw(b'{"items":[' + bytes(flipped) + b"]}"), 1)
        except ProtocolError:
            continue
        assert adapter.item_digest(x.listed[0].raw) != a.digest, f"byte {i} changed, same digest"


@pytest.mark.parametrize("item", [
    1, "x", None, [], [{"public_id": "p"}], {"ref_id": "KH-1"}, {"public_id": None},
    {"public_id": ""}, {"public_id": "   "},
])
def test_an_item_that_is_not_a_contact_with_a_public_id_is_a_protocol_error(item: Any) -> None:
    good = {"public_id": "p1", "ref_id": "KH-1"}
    for items in ([item], [good, item], [item, good]):
        with pytest.raises(ProtocolError, match="public_id"):
            adapter.page_from_wire(msgspec.Raw(compact({"items": items})), 1)
        with pytest.raises(ProtocolError, match="public_id"):
            adapter.page_from_wire({"items": items}, 1)


@pytest.mark.parametrize("payload", [b"null", b"[]", b'"items"', b"{}",
                                     b'{"items":{"a":1}}', b'{"items":"x"}'])
def test_a_payload_without_an_items_list_is_a_protocol_error(payload: bytes) -> None:
    with pytest.raises(ProtocolError):
        adapter.page_from_wire(msgspec.Raw(payload), 1)
    with pytest.raises(ProtocolError):
        adapter.page_from_wire(json.loads(payload), 1)


def test_items_null_is_an_empty_page() -> None:
    # a Go-style server writes an empty list as null (before: every cycle of an empty tenant
    # failed, and the app's rows never reached the CRM)
    body = b'{"items":null,"page_number":1,"page_size":100,"total_items":0,"total_pages":0}'
    for payload in (msgspec.Raw(body), json.loads(body)):
        page = adapter.page_from_wire(payload, 1)
        assert page.listed == () and not page.has_next and page.total_items == 0


@pytest.mark.parametrize(("head", "expected"), [
    ({"ref_id": "KH-1"}, "KH-1"),
    ({"refId": "KH-2"}, "KH-2"),
    ({"ref_id": "KH-1", "refId": "KH-2"}, "KH-1"),  # snake_case first, as contact_from_wire
    ({"ref_id": None, "refId": "KH-2"}, "KH-2"),
    ({"ref_id": "  KH-3  "}, "KH-3"),  # normalised like the parsed contact's
    ({"ref_id": 123}, "123"),
    ({"ref_id": ""}, None),
    ({"ref_id": None}, None),
    ({}, None),
])
def test_ref_id_hint_comes_from_ref_id_or_refId(head: dict[str, Any],
                                                 expected: str | None) -> None:
    item = {"public_id": "p1", **head, "attribute_structure": [attr("full_name", "A")]}
    x = listed_one(item)
    assert x.ref_id == expected
    assert x.contact().ref_id == expected  # the hint agrees with the parsed contact


def test_ref_id_only_inside_attributes_is_no_hint_but_is_parsed() -> None:
    """[assumed] 8: the partner id may sit in attribute_structure: the hint is None (a skip
    then only misses), the parsed contact has it."""
    x = listed_one({"public_id": "p1", "attribute_structure": [attr("ref_id", "KH-9")]})
    assert x.ref_id is None
    assert x.contact().ref_id == "KH-9"


def test_is_deleted_is_read_strictly() -> None:
    assert listed_one({"public_id": "p", "is_deleted": True}).is_deleted is True
    for value in (False, None, "true", 1):
        assert listed_one({"public_id": "p", "is_deleted": value}).is_deleted is False


def test_contact_is_the_parsed_item_and_carries_the_digest() -> None:
    for x, obj in zip(raw_page().listed, PAYLOAD["items"], strict=True):
        c = x.contact()
        assert c == adapter.contact_from_wire(json.loads(x.raw))
        assert c == adapter.contact_from_wire(obj)
        assert c.digest == adapter.item_digest(x.raw)
        assert c.public_id == x.public_id
    c = raw_page().listed[0].contact()
    assert (c.full_name, c.ref_code, c.updated_ms) == ("Trần Văn Tiến", "C123", 1588826965324)
    # the page's `items` parses every item, digests included
    assert [c.digest for c in raw_page().items] == [adapter.item_digest(x.raw)
                                                    for x in raw_page().listed]
    # a contact built by hand has no digest, and equality ignores it
    assert adapter.contact_from_wire(CONTRACT_EXAMPLE).digest is None


# Wire objects of every shape the tolerant reading meets: known and unknown codes, values as a
# list of objects, a lone object, a bare scalar, lists with nulls and scalars; any JSON scalar
# where text is expected; entries that are not objects.
_scalar = st.none() | st.booleans() | st.integers(-10**12, 10**14) | st.floats(
    allow_nan=False, allow_infinity=False) | st.sampled_from(
    ["", " ", "Nam", "nữ", "home", "Cá nhân", "0912 345 678", "+84 393 123 456",
     "a@b.vn", "06/03/1991", "1991-03-06", "688089600000", "  Trần  Văn ", "x\ny\r\n"]) | st.text(
    max_size=6)
_value = st.fixed_dictionaries({}, optional={
    "display_value": _scalar, "data_type": _scalar, "value_type": _scalar, "other": _scalar})
_values = st.none() | _scalar | _value | st.lists(_value, max_size=3) | st.lists(
    st.none() | _scalar | _value, max_size=3)
_code = st.sampled_from(["full_name", "job_title", "address", "passport", "note", "gender",
                         "phone_number", "mail", "birthday", "contact_owner", "ref_id", "refId",
                         "ref_code", "more_infomation", "hTqLmZpXcR"]) | _scalar
_entry = st.fixed_dictionaries({}, optional={
    "field_code": _code, "field_type": st.sampled_from(["single_text", "multi_text"]) | _scalar,
    "value": _values, "identify": st.booleans()})
_wire = st.fixed_dictionaries({}, optional={
    "public_id": _scalar, "ref_id": _scalar, "refId": _scalar, "ref_code": _scalar,
    "refCode": _scalar, "created_date": _scalar, "last_updated_date": _scalar,
    "is_deleted": _scalar, "tags": st.lists(_scalar | st.fixed_dictionaries({"name": _scalar}),
                                            max_size=3) | _scalar,
    "attribute_structure": st.lists(_entry | _scalar, max_size=6) | _scalar | _entry,
    "create_by": st.fixed_dictionaries({"name": _scalar})})


@settings(max_examples=400, deadline=None, derandomize=True)
@given(_wire)
def test_an_item_read_from_its_json_is_the_object_read_tolerantly(obj: dict[str, Any]) -> None:
    """contact_from_json decodes the usual shape straight into its fields, and takes the
    tolerant reading for any other: both give what contact_from_wire gives."""
    raw = compact(obj)
    assert adapter.contact_from_json(raw, digest="d") == adapter.contact_from_wire(obj)


def test_the_usual_shape_is_read_without_the_tolerant_reading(
        monkeypatch: pytest.MonkeyPatch) -> None:
    for obj in PAYLOAD["items"]:
        expected = adapter.contact_from_wire(obj)
        with monkeypatch.context() as m:
            m.setattr(adapter, "_tolerant", None)  # not called
            assert adapter.contact_from_json(compact(obj)) == expected
    lone = {**SECOND, "attribute_structure": [attr("full_name", "A") | {"value": "A"}]}
    with monkeypatch.context() as m:
        m.setattr(adapter, "_tolerant", None)
        with pytest.raises(TypeError):  # a lone value is another shape: read tolerantly
            adapter.contact_from_json(compact(lone))
    assert adapter.contact_from_json(compact(lone)).full_name == "A"


def test_page_numbers_and_has_next_from_a_raw_payload() -> None:
    page = adapter.page_from_wire(msgspec.Raw(compact(
        {"items": [SECOND], "page_number": "2", "total_pages": 3, "total_items": 5})), 2)
    assert (page.page_number, page.page_size, page.total_pages, page.has_next) == (2, 1, 3, True)
    last = adapter.page_from_wire(msgspec.Raw(b'{"items":[]}'), 4)
    assert (last.page_number, last.listed, last.has_next) == (4, (), False)


# --- parse_envelope(raw=True) --------------------------------------------------------------------

def envelope(payload: bytes) -> bytes:
    return b'{"status_code":9999,"message":"ok","payload":' + payload + b"}"


def test_raw_envelope_returns_the_payload_bytes_undecoded() -> None:
    payload = compact(PAYLOAD)
    body = envelope(payload)
    got = adapter.parse_envelope(200, body, "list", raw=True)
    assert isinstance(got, msgspec.Raw)
    assert bytes(got) == payload
    decoded = adapter.parse_envelope(200, body, "list")
    assert not isinstance(decoded, msgspec.Raw)
    assert decoded == json.loads(payload)
    # the raw payload feeds page_from_wire with each item's bytes as served
    assert adapter.page_from_wire(got, 1).listed == raw_page().listed
    # other payload shapes, both ways
    for value in (b"true", b"[1,2]", b'"x"', b"null", b'{"a":{"b":[]}}'):
        assert bytes(adapter.parse_envelope(200, envelope(value), "get", raw=True)) == value
        assert adapter.parse_envelope(200, envelope(value), "get") == json.loads(value)


def test_envelope_without_payload() -> None:
    body = b'{"status_code":9999}'
    assert adapter.parse_envelope(200, body, "delete") is None
    assert bytes(adapter.parse_envelope(200, body, "list", raw=True)) == b"null"


@pytest.mark.parametrize("raw", [False, True])
@pytest.mark.parametrize("body", [
    b'{"status_code":9999,"payload":{"items":[{"public_id":"', b"", b"{", b"\xff\xfe",
    b"not json", b'{"status_code":9999} trailing'])
def test_malformed_body_is_retriable(body: bytes, raw: bool) -> None:
    with pytest.raises(RetriableError):
        adapter.parse_envelope(200, body, "list", raw=raw)


@pytest.mark.parametrize("raw", [False, True])
@pytest.mark.parametrize("body", [b"[]", b"[1]", b"1", b'"x"', b"null", b"true"])
def test_json_that_is_not_an_object_is_a_protocol_error(body: bytes, raw: bool) -> None:
    with pytest.raises(ProtocolError) as exc:
        adapter.parse_envelope(200, body, "list", raw=raw)
    assert not isinstance(exc.value, RetriableError)


# --- page_from_wire(known=...) -------------------------------------------------------------------

def test_a_known_digest_is_taken_as_agreed_without_decoding_the_item() -> None:
    plain = raw_page()
    first, second = plain.listed
    assert first.agreed_key is None and second.agreed_key is None
    digest = adapter.item_digest(first.raw)
    known = {digest: ("ad1a7e78d80b94544ab92456", "KH-000123")}
    got = adapter.page_from_wire(msgspec.Raw(compact(PAYLOAD)), 1, known.get)
    a, b = got.listed
    assert (a.public_id, a.agreed_key, a.is_deleted, a.digest, a.raw) == (
        first.public_id, "KH-000123", False, digest, first.raw)
    assert a.ref_id is None  # not read: the key is known
    # not known: read as without `known`, its digest computed for the lookup
    assert b == second._replace(digest=adapter.item_digest(second.raw))
    assert a.contact() == first.contact()  # still parsed in full on demand


def test_known_bytes_are_not_checked_again() -> None:
    """An item that is not a contact aborts the page, unless its digest is known, which shows
    it was not decoded (a known digest is of JSON that was a valid contact when agreed)."""
    odd = compact({"not": "a contact"})
    payload = b'{"items":[' + odd + b"]}"
    with pytest.raises(ProtocolError):
        adapter.page_from_wire(msgspec.Raw(payload), 1)
    digest = xxh3_128_hexdigest(odd)
    [x] = adapter.page_from_wire(msgspec.Raw(payload), 1, {digest: ("p-1", "K1")}.get).listed
    assert (x.public_id, x.agreed_key, x.raw) == ("p-1", "K1", odd)


# --- list_payload: the envelope and the items in one pass ----------------------------------------

def test_list_payload_splits_a_successful_page_in_one_pass() -> None:
    body = envelope(compact(PAYLOAD))
    got = adapter.list_payload(200, body)
    assert not isinstance(got, msgspec.Raw)  # decoded with its items, not left raw
    page = adapter.page_from_wire(got, 1)
    assert page == raw_page()
    assert [x.raw for x in page.listed] == [compact(CONTRACT_EXAMPLE), compact(SECOND)]


@pytest.mark.parametrize(("status", "body"), [
    (200, envelope(b"null")), (200, b'{"status_code":9999}'), (200, envelope(b"[]")),
    (200, envelope(b'{"items":"x"}')), (200, envelope(b'{"items":[1]}')),
    (200, envelope(b'{"page_number":1}')), (200, b'{"status_code":-9999,"message":"boom"}'),
    (200, b'{"status_code":-9999,"message":"api_key_invalid"}'), (200, b"[]"),
    (200, b"not json"), (200, b'{"status_code":9999,"payload":{"items":['), (401, b""),
    (429, b""), (500, b"<html>"), (503, envelope(compact(PAYLOAD))), (404, b"{}"),
    (200, b'{"status_code":"9999","payload":{"items":[]}}'), (201, envelope(b'{"items":[]}')),
])
def test_list_payload_fails_as_parse_envelope_does(status: int, body: bytes) -> None:
    """Only a well-formed success takes the one-pass path: anything else ends as the generic
    path ends (the same exception, or the same page)."""
    def outcome(parse: Any) -> Any:
        try:
            return adapter.page_from_wire(parse(), 1)
        except Exception as exc:  # compared below
            return type(exc), str(exc)

    one_pass = outcome(lambda: adapter.list_payload(status, body))
    generic = outcome(lambda: adapter.parse_envelope(status, body, "list", raw=True))
    assert one_pass == generic
