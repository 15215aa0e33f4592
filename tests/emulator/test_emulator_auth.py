"""Envelope and authentication: api keys, Bearer tokens, expiry, revocation."""

from __future__ import annotations

from .helpers import FAIL, OK, Api, FakeClock, MakeApi


async def test_auth_returns_a_bearer_token_in_the_envelope(api: Api) -> None:
    response = await api.client.get("/api/auth", params={"apiKey": "demo-key"})
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("application/json")
    body = response.json()
    assert set(body) == {"status_code", "instance_id", "instance_version", "payload",
                         "key_enabled"}
    assert body["status_code"] == OK and body["instance_id"] == "emulator"
    assert body["key_enabled"] is False
    payload = body["payload"]
    assert payload["token_type"] == "Bearer" and payload["access_type"] == "normal"
    assert payload["access_token"].startswith("eyJ")


async def test_wrong_and_missing_api_key_answer_200_with_minus_9999(api: Api) -> None:
    assert await api.fail("GET", "/api/auth", params={"apiKey": "nope"}, auth=False) \
        == "api_key_invalid"
    assert await api.fail("GET", "/api/auth", auth=False) == "api_key_is_required"
    assert await api.fail("GET", "/api/auth", params={"apiKey": ""}, auth=False) \
        == "api_key_is_required"


async def test_calls_without_a_valid_token_answer_401_with_an_envelope(api: Api) -> None:
    for headers in ({}, {"Authorization": "Bearer not-a-token"}, {"Authorization": "Basic x"}):
        response = await api.call("POST", "/api/contacts/list", auth=False, headers=headers)
        assert response.status_code == 401
        body = response.json()
        assert body["status_code"] == FAIL and body["message"] == "unauthorized"
    assert api.emulator.stats()["list"] == 3  # refused calls are counted too


async def test_token_expires_after_token_ttl(make_api: MakeApi, clock: FakeClock) -> None:
    api = await make_api(token_ttl=60)
    await api.login()
    clock.advance(59)
    await api.page()
    clock.advance(1)
    response = await api.call("POST", "/api/contacts/list")
    assert response.status_code == 401
    assert response.json()["message"] == "token_expired"
    await api.login()  # a fresh token works again
    await api.page()


async def test_a_refused_token_can_be_answered_with_http_200(make_api: MakeApi,
                                                              clock: FakeClock) -> None:
    """token_refused_status=200: the documented examples' way with failures (-9999 in an HTTP
    200), for a client that must read the body to learn its token was refused."""
    api = await make_api(token_ttl=60, token_refused_status=200)
    await api.login()
    clock.advance(60)
    response = await api.call("POST", "/api/contacts/list")
    assert response.status_code == 200
    assert response.json()["status_code"] == FAIL
    assert response.json()["message"] == "token_expired"
    no_token = await api.call("POST", "/api/contacts/list", auth=False)
    assert no_token.status_code == 200 and no_token.json()["message"] == "unauthorized"


async def test_lowering_token_ttl_at_runtime_expires_live_tokens(api: Api) -> None:
    await api.login()
    api.emulator.configure(token_ttl=0)
    assert (await api.call("GET", "/api/source_contact_layout/get")).status_code == 401


async def test_revoked_tokens_are_unauthorized(api: Api) -> None:
    await api.login()
    api.emulator.revoke_tokens()
    response = await api.call("GET", "/api/contacts/get", params={"ref_id": "KH-000001"})
    assert response.status_code == 401 and response.json()["message"] == "unauthorized"


async def test_several_tokens_live_side_by_side(api: Api) -> None:
    first = await api.login()
    second = await api.login()
    assert first != second
    for token in (first, second):
        response = await api.call("GET", "/api/source_contact_layout/get",
                                  headers={"Authorization": f"Bearer {token}"})
        assert response.status_code == 200


async def test_unknown_api_path_is_a_plain_404(api: Api) -> None:
    response = await api.call("GET", "/api/contacts/nothing-here")
    assert response.status_code == 404
