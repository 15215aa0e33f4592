"""add, add-more (asynchronous), update, delete, add-note: success and refusal paths."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from .helpers import Api, FakeClock, MakeApi, attr, first

FULL: dict[str, Any] = {
    "fullName": "Trần Văn Tiến", "refId": "KH-900001", "refCode": "C900001",
    "phones": [{"data": "0395187319", "type": "personal", "valueType": "Cá nhân"},
               {"data": "02838123456", "value": "office"}],
    "emails": [{"data": "TienTV@Example.vn", "type": "home"}],
    "tags": ["Khách lẻ", "Đã gọi"], "gender": "male", "birthday": "05/09/1990",
    "address": "12 Lê Lợi, Quận 1", "job_title": "Kế toán", "passport": "079090001234",
    "note": "Khách cũ", "user_owner_email": "lan@cskh.example.vn",
    "more_infomation": [{"value_type": "Màu sắc yêu thích", "display_value": "Vàng"}],
    "dynamic_attributes": [{"field_code": "hTqLmZpXcR", "field_type": "select",
                            "dynamic_attribute_value": [{"display_value": "Vàng"}]}],
}


async def test_add_returns_the_snake_case_contact(api: Api) -> None:
    c = await api.ok("POST", "/api/contacts/add", json=FULL)
    assert len(c["public_id"]) == 24 and int(c["public_id"], 16) >= 0
    assert (c["ref_id"], c["ref_code"], c["tags"], c["is_deleted"]) == \
        ("KH-900001", "C900001", ["Khách lẻ", "Đã gọi"], False)
    assert c["created_date"] == c["last_updated_date"] and c["contact_type"] == "contact"
    assert attr(c, "phone_number") == [
        {"display_value": "0395187319", "data_type": "personal", "value_type": "Cá nhân"},
        {"display_value": "02838123456", "data_type": "office", "value_type": "Công ty"}]
    assert attr(c, "mail") == [
        {"display_value": "TienTV@Example.vn", "data_type": "home", "value_type": "Nhà"}]
    assert (first(c, "gender"), first(c, "birthday"), first(c, "contact_owner")) == \
        ("male", "05/09/1990", "lan@cskh.example.vn")
    custom = attr(c, "more_infomation")[0]
    assert (custom["value_type"], custom["display_value"]) == ("Màu sắc yêu thích", "Vàng")
    assert custom["data_type"].startswith("label")
    types = {e["field_code"]: e["field_type"] for e in c["attribute_structure"]}
    assert types["hTqLmZpXcR"] == "select" and types["note"] == "multi_text"
    assert api.emulator.find_by_ref_id("KH-900001")[0] == c


@pytest.mark.parametrize("change", [
    {"fullName": None}, {"fullName": "  "}, {"gender": "nam"}, {"birthday": "1990-09-05"},
    {"birthday": "31/02/1990"}, {"phones": [{"data": "0395187319", "type": "mobile"}]},
    {"phones": [{"data": 395187319}]}, {"phones": "0395187319"}, {"emails": [{"data": "x"}]},
    {"tags": "VIP"}, {"more_infomation": [{"display_value": "x"}]},
    {"dynamic_attributes": [{"field_code": "nope", "dynamic_attribute_value": []}]},
    {"dynamic_attributes": [{"field_code": "hTqLmZpXcR",
                             "dynamic_attribute_value": [{"display_value": "Nhựa"}]}]},
    {"dynamic_attributes": [{"field_code": "nBdYkWsEfJ",
                             "dynamic_attribute_value": [{"display_value": "2024-01-01"}]}]},
])
async def test_add_refuses_a_wrong_shape(api: Api, change: dict[str, Any]) -> None:
    assert await api.fail("POST", "/api/contacts/add", json=FULL | change) == "request_invalid"
    assert api.emulator.find_by_ref_id("KH-900001") == []


async def test_add_body_errors(api: Api) -> None:
    assert await api.fail("POST", "/api/contacts/add") == "request_body_required"
    assert await api.fail("POST", "/api/contacts/add", content=b"{oops") == "request_invalid"
    assert await api.fail("POST", "/api/contacts/add", json=[FULL]) == "request_invalid"


async def test_add_with_a_known_ref_id(make_api: MakeApi) -> None:
    dup = await make_api(add_more_delay=0)
    await dup.ok("POST", "/api/contacts/add", json=FULL)
    await dup.ok("POST", "/api/contacts/add", json=FULL)
    assert len(dup.emulator.find_by_ref_id("KH-900001")) == 2
    strict = await make_api(duplicate_on_resend=False)
    await strict.ok("POST", "/api/contacts/add", json=FULL)
    assert await strict.fail("POST", "/api/contacts/add", json=FULL) == "contact_existed"


async def test_add_more_is_asynchronous(make_api: MakeApi, clock: FakeClock) -> None:
    api = await make_api(add_more_delay=5.0)
    items = [FULL | {"refId": f"KH-{i}"} for i in range(3)]
    assert await api.ok("POST", "/api/contacts/add-more", json=items) is True
    assert (await api.page())["total_items"] == 0
    assert await api.ok("GET", "/api/contacts/get", params={"ref_id": "KH-0"}) is None
    clock.advance(4.9)
    assert (await api.page())["total_items"] == 0
    clock.advance(0.1)
    assert (await api.page())["total_items"] == 3  # due items appear on the next request
    assert [c["ref_id"] for c in api.emulator.contacts()] == ["KH-0", "KH-1", "KH-2"]


async def test_flush_pending_applies_the_queue_now(make_api: MakeApi) -> None:
    api = await make_api(add_more_delay=3600)
    await api.ok("POST", "/api/contacts/add-more", json=[FULL])
    assert api.emulator.pending == 1 and api.emulator.find_by_ref_id("KH-900001") == []
    assert api.emulator.flush_pending() == 1
    assert len(api.emulator.find_by_ref_id("KH-900001")) == 1


async def test_add_more_drops_invalid_items_silently(api: Api) -> None:
    items = [FULL, {"refId": "KH-no-name"}, "junk", FULL | {"refId": "KH-2", "gender": "?"}]
    assert await api.ok("POST", "/api/contacts/add-more", json=items) is True
    api.emulator.flush_pending()
    assert len(api.emulator.find_by_ref_id("KH-900001")) == 1
    assert api.emulator.find_by_ref_id("KH-no-name") == []
    assert api.emulator.find_by_ref_id("KH-2") == []


async def test_add_more_body_must_be_an_array(api: Api) -> None:
    assert await api.fail("POST", "/api/contacts/add-more", json=FULL) == "request_invalid"
    assert await api.fail("POST", "/api/contacts/add-more") == "request_body_required"


async def test_add_more_drop_rate(make_api: MakeApi) -> None:
    api = await make_api(add_more_delay=0, add_more_drop_rate=0.5)
    await api.ok("POST", "/api/contacts/add-more",
                 json=[FULL | {"refId": f"KH-{i}"} for i in range(200)])
    created = len(api.emulator.contacts())
    assert 60 < created < 140  # about half, silently


@pytest.mark.parametrize("duplicate, expected", [(True, 2), (False, 1)])
async def test_add_more_resend(make_api: MakeApi, duplicate: bool, expected: int) -> None:
    api = await make_api(add_more_delay=0, duplicate_on_resend=duplicate)
    await api.ok("POST", "/api/contacts/add-more", json=[FULL])
    await api.ok("POST", "/api/contacts/add-more", json=[FULL])
    assert len(api.emulator.find_by_ref_id("KH-900001")) == expected


async def test_update_by_ref_id_keeps_absent_fields_and_replaces_lists(api: Api) -> None:
    created = await api.ok("POST", "/api/contacts/add", json=FULL)
    summary = await api.ok("POST", "/api/contacts/update", json={
        "refId": "KH-900001", "fullName": "Trần Văn Tiến", "tags": ["VIP"],
        "phones": [{"data": "+84 395 187 319", "type": "home"}],
        "more_infomation": [{"value_type": "Điểm", "display_value": "90"}],
        "dynamic_attributes": [{"field_code": "vWabCEBkqM", "field_type": "single_text",
                                "dynamic_attribute_value": [{"display_value": "120"}]}]})
    assert summary == {
        "publicId": created["public_id"], "fullName": "Trần Văn Tiến",
        "displayName": "Trần Văn Tiến", "gender": "male", "passport": "079090001234",
        "address": "12 Lê Lợi, Quận 1", "note": "Khách cũ", "contactType": "contact",
        "emails": [{"data": "TienTV@Example.vn", "type": "home", "valueType": "Nhà"}],
        "phones": [{"data": "+84 395 187 319", "type": "home", "valueType": "Nhà"}]}
    after = api.emulator.find_by_ref_id("KH-900001")[0]
    assert after["tags"] == ["VIP"] and after["last_updated_date"] > created["last_updated_date"]
    assert [v["value_type"] for v in attr(after, "more_infomation")] == ["Điểm"]
    assert first(after, "vWabCEBkqM") == "120" and first(after, "hTqLmZpXcR") == "Vàng"
    assert first(after, "job_title") == "Kế toán"  # absent from the body: unchanged
    assert after["last_update_by"] == {"name": "OMI API"}


async def test_update_null_clears_and_ref_code_changes(api: Api) -> None:
    await api.ok("POST", "/api/contacts/add", json=FULL)
    await api.ok("POST", "/api/contacts/update", json={
        "refId": "KH-900001", "fullName": "X", "note": None, "emails": [], "refCode": "C2"})
    after = api.emulator.find_by_ref_id("KH-900001")[0]
    assert first(after, "note") is None and attr(after, "mail") == []
    assert after["ref_code"] == "C2" and after["ref_id"] == "KH-900001"


@pytest.mark.parametrize("body, code", [
    ({"refId": "KH-unknown", "fullName": "X"}, "contact_not_found"),
    ({"fullName": "X"}, "request_invalid"),
    ({"refId": "KH-900001"}, "request_invalid"),  # fullName is required [doc]
    ({"refId": "KH-900001", "fullName": "X", "gender": "f"}, "request_invalid"),
])
async def test_update_refusals(api: Api, body: dict[str, Any], code: str) -> None:
    await api.ok("POST", "/api/contacts/add", json=FULL)
    assert await api.fail("POST", "/api/contacts/update", json=body) == code
    assert api.emulator.find_by_ref_id("KH-900001")[0]["attribute_structure"][0]["value"][0][
        "display_value"] == "Trần Văn Tiến"


async def test_agent_created_contacts_cannot_be_updated_through_the_api(api: Api) -> None:
    pid = api.emulator.agent_create(full_name="Lê Thị Hồng")
    contact = api.emulator.contact(pid)
    assert contact is not None and contact["ref_id"] is None and contact["ref_code"] is None
    assert contact["create_by"] == {"name": "Nhân viên CSKH"}


async def test_delete_then_gone_everywhere_but_details(api: Api) -> None:
    c = await api.ok("POST", "/api/contacts/add", json=FULL)
    path = f"/api/contacts/delete/{c['public_id']}"
    assert await api.ok("DELETE", path) is True
    assert await api.fail("DELETE", path) == "contact_not_found"
    assert await api.fail("DELETE", "/api/contacts/delete/" + "0" * 24) == "contact_not_found"
    assert await api.ok("GET", "/api/contacts/get", params={"ref_id": "KH-900001"}) is None
    assert await api.fail("POST", "/api/contacts/update",
                          json={"refId": "KH-900001", "fullName": "X"}) == "contact_not_found"
    gone = await api.ok("GET", f"/api/contacts/details/{c['public_id']}")
    assert gone["is_deleted"] is True and gone["last_updated_date"] > c["last_updated_date"]
    assert api.emulator.find_by_ref_id("KH-900001") == []


async def test_add_note_stores_notes_and_matches_phones(api: Api) -> None:
    c = await api.ok("POST", "/api/contacts/add", json=FULL)
    notes = [{"note_by": "lan@cskh.example.vn", "content": "Đã gọi, hẹn mai",
              "phone": "84395187319"},
             {"content": "Khách lạ", "phone": "0999999999"}]
    assert await api.ok("POST", "/api/contacts/add-note", json=notes) is True
    stored = api.emulator.notes
    assert [n["content"] for n in stored] == ["Đã gọi, hẹn mai", "Khách lạ"]
    assert stored[0]["public_id"] == c["public_id"] and stored[1]["public_id"] is None
    assert stored[1]["note_by"] is None


@pytest.mark.parametrize("body", [
    [{"content": "x"}], [{"phone": "0395187319"}], [{"content": "", "phone": "0395"}],
    {"content": "x", "phone": "0395187319"}, ["x"],
])
async def test_add_note_refusals_store_nothing(api: Api, body: Any) -> None:
    good = {"content": "ok", "phone": "0395187319"}
    batch = [good, *body] if isinstance(body, list) else body
    assert await api.fail("POST", "/api/contacts/add-note", json=batch) == "request_invalid"
    assert api.emulator.notes == []


_json = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=12)
    | st.sampled_from(["male", "home", "Nhà", "0393123456", "01/02/1990", "hTqLmZpXcR"]),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(
        st.sampled_from(["fullName", "refId", "phones", "emails", "data", "type", "value",
                         "valueType", "tags", "gender", "birthday", "more_infomation",
                         "value_type", "display_value", "dynamic_attributes", "field_code",
                         "dynamic_attribute_value", "content", "phone", "keyword", "filters"]),
        inner, max_size=4),
    max_leaves=12)


@settings(max_examples=150, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(body=_json, path=st.sampled_from(["add", "add-more", "update", "add-note", "list"]))
async def test_any_json_body_gets_an_envelope_never_a_crash(api: Api, body: Any,
                                                            path: str) -> None:
    response = await api.call("POST", f"/api/contacts/{path}", json=body)
    assert response.status_code == 200, response.text
    assert response.json()["status_code"] in (9999, -9999)
