"""GET /api/contacts/get, details and the dynamic attribute layout."""

from __future__ import annotations

import pytest

from sync.emulator import DEFAULT_LAYOUT

from .helpers import Api, MakeApi, first


@pytest.mark.parametrize("stored", ["0393123456", "84393123456", "+84 393 123 456"])
@pytest.mark.parametrize("asked", ["0393123456", "84393123456", "+84393123456"])
async def test_get_by_phone_in_any_form(api: Api, stored: str, asked: str) -> None:
    pid = api.emulator.agent_create(full_name="Phạm Minh", phones=[stored])
    found = await api.ok("GET", "/api/contacts/get", params={"phone": asked})
    assert found["public_id"] == pid
    assert first(found, "phone_number") == stored  # stored as sent, never normalised


async def test_get_by_email_ref_id_and_ref_code(api: Api) -> None:
    pid = api.emulator.agent_create(full_name="Võ Thu", emails=["Thu.Vo@Yahoo.com.vn"],
                                    ref_id="ERP-7", ref_code="R7")
    for params in ({"email": "thu.vo@yahoo.com.vn"}, {"email": "THU.VO@YAHOO.COM.VN"},
                   {"ref_id": "ERP-7"}, {"ref_code": "R7"}):
        found = await api.ok("GET", "/api/contacts/get", params=params)
        assert found["public_id"] == pid, params


async def test_get_without_a_match_is_null(api: Api) -> None:
    for params in ({"ref_id": "KH-nobody"}, {"phone": "0900000001"}, {"email": "a@b.vn"}):
        assert await api.ok("GET", "/api/contacts/get", params=params) is None


async def test_get_returns_the_oldest_of_several(api: Api) -> None:
    older = api.emulator.agent_create(full_name="A", ref_id="SAME")
    api.emulator.agent_create(full_name="B", ref_id="SAME")
    found = await api.ok("GET", "/api/contacts/get", params={"ref_id": "SAME"})
    assert found["public_id"] == older


async def test_get_needs_an_identifier(api: Api) -> None:
    assert await api.fail("GET", "/api/contacts/get") == "request_invalid"
    assert await api.fail("GET", "/api/contacts/get", params={"phone": "abc"}) \
        == "request_invalid"


async def test_get_follows_edits(api: Api) -> None:
    pid = api.emulator.agent_create(full_name="C", phones=["0911111111"])
    api.emulator.agent_update(pid, phones=[("0922222222", "office")])
    assert await api.ok("GET", "/api/contacts/get", params={"phone": "0911111111"}) is None
    found = await api.ok("GET", "/api/contacts/get", params={"phone": "0922222222"})
    assert found["public_id"] == pid


async def test_details(api: Api) -> None:
    listed = (await api.page(size=1))["items"][0]
    assert await api.ok("GET", f"/api/contacts/details/{listed['public_id']}") == listed
    assert await api.fail("GET", "/api/contacts/details/" + "f" * 24) == "contact_not_found"


async def test_layout_default_and_custom(make_api: MakeApi) -> None:
    api = await make_api()
    assert await api.ok("GET", "/api/source_contact_layout/get") == list(DEFAULT_LAYOUT)
    custom = [{"field_code": "abcDEF1234", "field_name": "Sở thích", "field_type": "checkbox",
               "options": ["Đọc sách", "Du lịch"]}]
    other = await make_api(layout=custom)
    layout = await other.ok("GET", "/api/source_contact_layout/get")
    assert layout == [custom[0] | {"is_required": False}]


async def test_changing_the_layout_rerenders_dynamic_fields(api: Api) -> None:
    pid = api.emulator.agent_create(full_name="D", dynamic={"vWabCEBkqM": "10"})
    before = await api.ok("GET", f"/api/contacts/details/{pid}")
    assert first(before, "vWabCEBkqM") == "10"
    api.emulator.configure(layout=[{"field_code": "vWabCEBkqM", "field_name": "Điểm",
                                    "field_type": "number"}])
    after = await api.ok("GET", f"/api/contacts/details/{pid}")
    entry = next(e for e in after["attribute_structure"] if e["field_code"] == "vWabCEBkqM")
    assert entry["field_type"] == "number"
