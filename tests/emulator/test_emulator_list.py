"""POST /api/contacts/list: paging, the size cap, orders, keyword and filters, bad input."""

from __future__ import annotations

import pytest

from .helpers import Api, MakeApi, first


async def test_default_page_and_payload_fields(make_api: MakeApi) -> None:
    api = await make_api(contacts=120)
    payload = await api.ok("POST", "/api/contacts/list")  # no query, no body
    assert len(payload["items"]) == 50
    assert {k: v for k, v in payload.items() if k != "items"} == {
        "page_number": 1, "page_size": 50, "total_items": 120, "total_pages": 3,
        "has_next": True, "next_page": 2, "has_previous": False, "previous_page": 1,
        "extension": None}


async def test_last_page_and_beyond(make_api: MakeApi) -> None:
    api = await make_api(contacts=120)
    last = await api.page(3)
    assert len(last["items"]) == 20
    assert (last["has_next"], last["has_previous"], last["previous_page"]) == (False, True, 2)
    beyond = await api.page(9)
    assert beyond["items"] == [] and beyond["has_next"] is False and beyond["total_items"] == 120


async def test_size_is_capped_and_the_payload_says_so(make_api: MakeApi) -> None:
    api = await make_api(contacts=250, page_size_cap=100)
    payload = await api.page(1, size=500)
    assert payload["page_size"] == 100 and len(payload["items"]) == 100
    assert payload["total_pages"] == 3 and payload["has_next"] is True


async def test_paging_created_order_sees_every_contact_once(make_api: MakeApi) -> None:
    api = await make_api(contacts=95)
    seen: list[str] = []
    page = 1
    while True:
        payload = await api.page(page, size=20)
        seen += [c["public_id"] for c in payload["items"]]
        if not payload["has_next"]:
            break
        page += 1
    assert len(seen) == len(set(seen)) == 95
    created = [c["created_date"] for c in api.emulator.contacts()]
    assert created == sorted(created)  # "created": oldest first
    assert seen == [c["public_id"] for c in api.emulator.contacts()]


async def test_order_updated_desc_moves_an_edited_contact_first(make_api: MakeApi) -> None:
    api = await make_api(contacts=20, order="updated_desc")
    items = (await api.page(size=20))["items"]
    stamps = [c["last_updated_date"] for c in items]
    assert stamps == sorted(stamps, reverse=True)
    api.emulator.agent_update(items[-1]["public_id"], note="Gọi lại")
    assert (await api.page(size=1))["items"][0]["public_id"] == items[-1]["public_id"]


async def test_order_public_id(make_api: MakeApi) -> None:
    api = await make_api(contacts=30, order="public_id")
    ids = [c["public_id"] for c in (await api.page(size=30))["items"]]
    assert ids == sorted(ids)


async def test_order_random_changes_between_calls(make_api: MakeApi) -> None:
    api = await make_api(contacts=40, order="random")
    draws = [[c["public_id"] for c in (await api.page(size=40))["items"]] for _ in range(3)]
    assert all(len(set(d)) == 40 for d in draws)
    assert len({tuple(d) for d in draws}) > 1


async def test_deleting_while_paging_shifts_items(make_api: MakeApi) -> None:
    # The contract warns that items shift between pages: the emulator really does it.
    api = await make_api(contacts=40)
    page1 = (await api.page(1, size=20))["items"]
    api.emulator.agent_delete(page1[0]["public_id"])
    page2 = (await api.page(2, size=20))["items"]
    seen = {c["public_id"] for c in page1 + page2}
    assert len(seen) == 40 - 1  # one live contact slid onto page 1 and was missed


async def test_keyword_matches_name_without_diacritics_phone_forms_and_email(api: Api) -> None:
    emu = api.emulator
    pid = emu.agent_create(full_name="Nguyễn Thị Ánh Tuyết", phones=["+84 912 345 678"],
                           emails=["Tuyet.NTA@Gmail.com"])
    for keyword in ("ánh tuyết", "anh tuyet", "0912345678", "84912345678", "912 345",
                    "tuyet.nta@gmail"):
        items = (await api.page(body={"keyword": keyword}))["items"]
        assert [c["public_id"] for c in items] == [pid], keyword


async def test_filter_on_contact_owner_with_unassigned(api: Api) -> None:
    emu = api.emulator
    mine = emu.agent_create(full_name="A", owner_email="Agent@Example.vn")
    items = (await api.page(size=100, body={"filters": [
        {"field_code": "contact_owner", "value": ["agent@example.vn"]}]}))["items"]
    assert [c["public_id"] for c in items] == [mine]
    unassigned = (await api.page(size=100, body={"filters": [
        {"field_code": "contact_owner", "value": ["unassigned"]}]}))["items"]
    assert unassigned and all(first(c, "contact_owner") is None for c in unassigned)


async def test_empty_json_body_is_accepted(api: Api) -> None:
    payload = await api.ok("POST", "/api/contacts/list", json={})
    assert payload["total_items"] == 30


@pytest.mark.parametrize("params, body", [
    ({"page": "zero"}, None),
    ({"page": 0}, None),
    ({"size": -1}, None),
    ({}, b"{not json"),
    ({}, b"[1, 2]"),
    ({}, b'{"filters": "contact_owner"}'),
    ({}, b'{"keyword": 12}'),
])
async def test_bad_list_requests_are_request_invalid(api: Api, params: dict[str, object],
                                                     body: bytes | None) -> None:
    assert await api.fail("POST", "/api/contacts/list", params=params, content=body) \
        == "request_invalid"


async def test_deleted_contacts_leave_the_list(api: Api) -> None:
    victim = (await api.page(size=1))["items"][0]["public_id"]
    api.emulator.agent_delete(victim)
    payload = await api.page(size=100)
    assert payload["total_items"] == 29
    assert victim not in {c["public_id"] for c in payload["items"]}
