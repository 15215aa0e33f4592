"""Fault injection: 500 with HTML, 429 with Retry-After, malformed JSON, latency, timeouts.

A faulted call must change nothing, so that a client's retry is always safe.
"""

from __future__ import annotations

import json
import time

import httpx
import pytest

from sync.emulator import EmulatorConfig, EmulatorServer

from .helpers import Api, MakeApi

NEW = {"fullName": "Đỗ Hải", "refId": "KH-F1"}


async def test_500_has_an_html_body_and_changes_nothing(make_api: MakeApi) -> None:
    api = await make_api()
    await api.login()
    api.emulator.configure(error_500_rate=1.0)
    response = await api.call("POST", "/api/contacts/add", json=NEW)
    assert response.status_code == 500
    assert response.headers["content-type"].startswith("text/html")
    assert "<html>" in response.text
    assert api.emulator.find_by_ref_id("KH-F1") == []
    assert api.emulator.fault_counts()["error_500"] == 1


@pytest.mark.parametrize("knob, header", [(1.0, "1"), (0.05, "0.05"), (2.5, "2.5")])
async def test_429_sends_retry_after(make_api: MakeApi, knob: float, header: str) -> None:
    api = await make_api(rate_429_rate=1.0, retry_after=knob)
    response = await api.call("POST", "/api/contacts/add", json=NEW, auth=False)
    assert response.status_code == 429
    assert response.headers["retry-after"] == header
    assert response.json()["status_code"] == -9999
    api.emulator.configure(rate_429_rate=0.0)
    assert api.emulator.find_by_ref_id("KH-F1") == []


async def test_malformed_body_is_200_with_invalid_json(make_api: MakeApi) -> None:
    api = await make_api(contacts=5)
    await api.login()
    api.emulator.configure(malformed_rate=1.0)
    response = await api.call("POST", "/api/contacts/add-more", json=[NEW])
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("application/json")
    with pytest.raises(json.JSONDecodeError):
        json.loads(response.text)
    api.emulator.flush_pending()
    assert api.emulator.find_by_ref_id("KH-F1") == []


async def test_auth_gets_500_and_429_but_never_a_malformed_body(make_api: MakeApi) -> None:
    api = await make_api(malformed_rate=1.0)
    payload = await api.ok("GET", "/api/auth", params={"apiKey": "demo-key"}, auth=False)
    assert payload["access_token"]
    api.emulator.configure(malformed_rate=0.0, error_500_rate=1.0)
    response = await api.client.get("/api/auth", params={"apiKey": "demo-key"})
    assert response.status_code == 500


async def test_admin_routes_are_never_faulted(make_api: MakeApi) -> None:
    api = await make_api(error_500_rate=0.5, rate_429_rate=0.5)
    for _ in range(10):
        assert (await api.client.get("/_emulator/stats")).status_code == 200


async def test_rates_are_fractions_and_deterministic_per_seed(make_api: MakeApi) -> None:
    async def statuses(api: Api) -> list[int]:
        return [(await api.call("GET", "/api/auth", params={"apiKey": "demo-key"},
                                auth=False)).status_code for _ in range(200)]

    knobs = {"error_500_rate": 0.2, "rate_429_rate": 0.1, "seed": 7}
    first, second = await statuses(await make_api(**knobs)), await statuses(await make_api(**knobs))
    assert first == second
    assert 20 < first.count(500) < 60 and 5 < first.count(429) < 40
    other = await statuses(await make_api(**(knobs | {"seed": 8})))
    assert other != first


async def test_latency_is_added(make_api: MakeApi) -> None:
    api = await make_api(latency=0.05)
    start = time.perf_counter()
    await api.ok("GET", "/api/auth", params={"apiKey": "demo-key"}, auth=False)
    assert time.perf_counter() - start >= 0.05


async def test_timeout_in_process_answers_504_after_the_hang(make_api: MakeApi) -> None:
    api = await make_api()
    await api.login()
    api.emulator.configure(timeout_rate=1.0, timeout_hang=0.05)
    start = time.perf_counter()
    response = await api.call("POST", "/api/contacts/add", json=NEW)
    assert response.status_code == 504 and time.perf_counter() - start >= 0.05
    assert api.emulator.find_by_ref_id("KH-F1") == []


def test_timeout_hangs_before_executing_then_answers_504() -> None:
    config = EmulatorConfig(timeout_rate=1.0, timeout_hang=0.3)
    with EmulatorServer(config) as server:
        server.emulator.configure(timeout_rate=0.0)
        token = httpx.get(server.url + "/api/auth", params={"apiKey": "demo-key"}).json()[
            "payload"]["access_token"]
        server.emulator.configure(timeout_rate=1.0)
        headers = {"Authorization": f"Bearer {token}"}
        with pytest.raises(httpx.ReadTimeout):  # the client gives up first
            httpx.post(server.url + "/api/contacts/add", json=NEW, headers=headers, timeout=0.1)
        start = time.perf_counter()
        response = httpx.post(server.url + "/api/contacts/add", json=NEW, headers=headers,
                              timeout=5)
        assert response.status_code == 504 and time.perf_counter() - start >= 0.3
        time.sleep(0.3)  # let the abandoned request finish hanging
        assert server.emulator.find_by_ref_id("KH-F1") == []  # neither call wrote anything
        assert server.emulator.fault_counts()["timeout"] == 2


def test_stopping_the_server_releases_a_hanging_request() -> None:
    server = EmulatorServer(EmulatorConfig(timeout_rate=1.0, timeout_hang=60)).start()
    try:
        with pytest.raises(httpx.ReadTimeout):
            httpx.get(server.url + "/api/auth", params={"apiKey": "demo-key"}, timeout=0.2)
    finally:
        start = time.perf_counter()
        server.stop()
    assert time.perf_counter() - start < 3
