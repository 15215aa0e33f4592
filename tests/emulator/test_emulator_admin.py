"""The /_emulator admin side over real HTTP, the Python twins, stats, runtime config."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import date

import httpx
import pytest

from sync.emulator import ENDPOINTS, Emulator, EmulatorConfig, EmulatorServer
from sync.emulator.operations import update

from .helpers import Api, attr, first


@pytest.fixture(scope="module")
def server() -> Iterator[EmulatorServer]:
    with EmulatorServer(EmulatorConfig(contacts=10, add_more_delay=0)) as running:
        yield running


@pytest.fixture
def http(server: EmulatorServer) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=server.url, timeout=5) as client:
        yield client


def test_server_url_is_loopback_with_a_real_port(server: EmulatorServer) -> None:
    assert server.url.startswith("http://127.0.0.1:") and server.port > 0


def test_agent_crud_over_http(http: httpx.Client) -> None:
    created = http.post("/_emulator/contacts", json={
        "full_name": "Hồ Ngọc Hà", "phones": ["0987654321", ["02873001234", "office"]],
        "emails": ["ha@example.vn"], "tags": ["VIP"], "birthday": "01/02/1990",
        "custom": {"Kênh": "Zalo"}, "dynamic": {"hTqLmZpXcR": "Bạc"}})
    assert created.status_code == 200
    pid = created.json()["public_id"]
    listed = {c["public_id"]: c for c in http.get("/_emulator/contacts").json()}
    assert listed[pid]["ref_id"] is None and first(listed[pid], "hTqLmZpXcR") == "Bạc"
    patched = http.patch(f"/_emulator/contacts/{pid}", json={"note": "Gọi lại", "ref_id": "X9"})
    assert first(patched.json(), "note") == "Gọi lại" and patched.json()["ref_id"] == "X9"
    assert patched.json()["last_updated_date"] > listed[pid]["last_updated_date"]
    assert http.get(f"/_emulator/contacts/{pid}").json() == patched.json()
    assert http.delete(f"/_emulator/contacts/{pid}").json() == {"deleted": True}
    assert http.delete(f"/_emulator/contacts/{pid}").status_code == 404
    assert http.patch(f"/_emulator/contacts/{pid}", json={"note": "x"}).status_code == 404
    assert pid not in {c["public_id"] for c in http.get("/_emulator/contacts").json()}


@pytest.mark.parametrize("body", [{"phones": ["0987654321"]}, {"full_name": "A", "bogus": 1},
                                  {"full_name": "A", "gender": "nam"}, [1]])
def test_bad_agent_create_is_400(http: httpx.Client, body: object) -> None:
    response = http.post("/_emulator/contacts", json=body)
    assert response.status_code == 400 and response.json()["error"]


def test_stats_count_api_calls_and_reset(server: EmulatorServer, http: httpx.Client) -> None:
    http.post("/_emulator/stats/reset")
    token = http.get("/api/auth", params={"apiKey": "demo-key"}).json()["payload"]["access_token"]
    headers = {"Authorization": f"Bearer {token}"}
    http.post("/api/contacts/list", headers=headers)
    http.post("/api/contacts/list", headers=headers)
    http.get("/api/contacts/get", params={"ref_id": "KH-000001"}, headers=headers)
    http.get("/api/source_contact_layout/get", headers=headers)
    stats = http.get("/_emulator/stats").json()
    assert set(stats) == set(ENDPOINTS)
    assert (stats["auth"], stats["list"], stats["get"], stats["layout"], stats["add"]) == \
        (1, 2, 1, 1, 0)
    assert server.emulator.stats() == stats
    assert set(http.post("/_emulator/stats/reset").json().values()) == {0}


def test_revoke_tokens_flush_and_notes_over_http(server: EmulatorServer,
                                                 http: httpx.Client) -> None:
    token = http.get("/api/auth", params={"apiKey": "demo-key"}).json()["payload"]["access_token"]
    headers = {"Authorization": f"Bearer {token}"}
    http.post("/_emulator/config", json={"add_more_delay": 3600})
    try:
        http.post("/api/contacts/add-more", headers=headers,
                  json=[{"fullName": "Queued", "refId": "Q-1"}])
        assert server.emulator.find_by_ref_id("Q-1") == []
        assert http.post("/_emulator/flush").json() == {"applied": 1}
        assert len(server.emulator.find_by_ref_id("Q-1")) == 1
    finally:
        http.post("/_emulator/config", json={"add_more_delay": 0})
    http.post("/api/contacts/add-note", headers=headers,
              json=[{"content": "Hỏi giá", "phone": "0900000000"}])
    assert http.get("/_emulator/notes").json()[-1]["content"] == "Hỏi giá"
    assert http.post("/_emulator/revoke-tokens").json() == {"revoked": True}
    assert http.post("/api/contacts/list", headers=headers).status_code == 401


def test_config_over_http(http: httpx.Client) -> None:
    assert http.get("/_emulator/config").json()["page_size_cap"] == 100
    assert http.post("/_emulator/config", json={"page_size_cap": 7}).json()["page_size_cap"] == 7
    try:
        for bad in ({"order": "sideways"}, {"nope": 1}, {"error_500_rate": 2},
                    {"error_500_rate": 0.6, "rate_429_rate": 0.6}, {"contacts": 5}):
            response = http.post("/_emulator/config", json=bad)
            assert response.status_code == 400, bad
        assert http.get("/_emulator/config").json()["order"] == "created"
    finally:
        http.post("/_emulator/config", json={"page_size_cap": 100})


def test_configure_rejects_everything_or_nothing() -> None:
    emu = Emulator()
    with pytest.raises(ValueError, match="order"):
        emu.configure(latency=1.0, order="sideways")
    assert emu.config.latency == 0.0  # the valid knob of a refused batch is not applied
    with pytest.raises(ValueError):
        EmulatorConfig(page_size_cap=0)
    with pytest.raises(ValueError):
        EmulatorConfig(layout=[{"field_code": "a", "field_name": "A", "field_type": "select"}])
    with pytest.raises(ValueError, match="update_ignores must be a list"):
        EmulatorConfig(update_ignores="job_title")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="update_ignores_empty must be a boolean"):
        emu.configure(update_ignores_empty="yes")
    emu.configure(update_ignores=["job_title"])  # as the admin side's JSON gives it
    with pytest.raises(ValueError, match="token_refused_status must be 200 or 401"):
        emu.configure(token_refused_status=403)


def test_an_update_that_ignores_some_fields() -> None:
    # a server inside the contract whose update takes less than crm-sync sends
    emu = Emulator(EmulatorConfig(update_ignores=("job_title",), update_ignores_empty=True))
    pid = emu.agent_create(full_name="Bùi Thảo", ref_id="KH-1", job_title="Thợ",
                           address="1 Lê Lợi", note="cũ")
    summary = update(emu, {"refId": "KH-1", "fullName": "Bùi Thảo Mới", "job_title": "Kỹ sư",
                           "address": "", "note": "mới"})
    assert (summary["fullName"], summary["address"], summary["note"]) == (
        "Bùi Thảo Mới", "1 Lê Lợi", "mới")
    contact = emu.contact(pid)
    assert contact is not None
    assert (first(contact, "job_title"), first(contact, "address")) == ("Thợ", "1 Lê Lợi")


def test_python_agent_api() -> None:
    emu = Emulator()
    pid = emu.agent_create(full_name="Bùi Thảo", birthday=date(1991, 3, 4),
                           custom={"Điểm": "5", "Kênh": "Zalo"}, dynamic={"vWabCEBkqM": "1"})
    emu.agent_update(pid, custom={"Điểm": "6", "Kênh": None}, dynamic={"vWabCEBkqM": None})
    contact = emu.contact(pid)
    assert contact is not None and first(contact, "birthday") == "04/03/1991"
    custom = [(v["value_type"], v["display_value"]) for v in attr(contact, "more_infomation")]
    assert custom == [("Điểm", "6")]
    assert first(contact, "vWabCEBkqM") is None
    contact["tags"].append("mutated")  # callers get copies
    assert emu.contacts()[0]["tags"] == []
    with pytest.raises(KeyError):
        emu.agent_update("0" * 24, note="x")
    with pytest.raises(ValueError):
        emu.agent_create(full_name="X", dynamic={"hTqLmZpXcR": "Nhựa"})


async def test_in_process_and_python_views_agree(api: Api) -> None:
    listed = (await api.page(size=100))["items"]
    assert listed == api.emulator.contacts()
