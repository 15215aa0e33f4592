"""EmulatorConfig.db_path / `crm-sync emulator --db`: the contacts kept in a SQLite file."""

from __future__ import annotations

import json
import sqlite3
import subprocess
import sys
from pathlib import Path
from typing import Any

import httpx
import pytest
import structlog
from typer.testing import CliRunner

from sync.cli import app
from sync.emulator import Emulator, EmulatorConfig, EmulatorServer

from .helpers import OK, attr, first

ROOT = Path(__file__).resolve().parents[2]

NEW = {
    "refId": "KH-700001", "refCode": "C700001", "fullName": "Trần Văn Tiến",
    "phones": [{"data": "0395187319", "type": "personal"}],
    "emails": [{"data": "TienTV@Example.vn", "type": "home"}], "tags": ["VIP", "Đã gọi"],
    "more_infomation": [{"value_type": "Màu sắc yêu thích", "display_value": "Vàng"}],
    "dynamic_attributes": [{"field_code": "hTqLmZpXcR", "field_type": "select",
                            "dynamic_attribute_value": [{"display_value": "Vàng"}]}],
}


def _payload(response: httpx.Response) -> Any:
    body = response.json()
    assert response.status_code == 200 and body["status_code"] == OK, response.text
    return body["payload"]


def _api_list(http: httpx.Client, headers: dict[str, str]) -> list[dict[str, Any]]:
    """Every live contact through /api/contacts/list in "created" order."""
    items: list[dict[str, Any]] = []
    page = 1
    while True:
        payload = _payload(http.post("/api/contacts/list", params={"page": page, "size": 100},
                                     headers=headers))
        items += payload["items"]
        if not payload["has_next"]:
            return items
        page += 1


def _headers(http: httpx.Client) -> dict[str, str]:
    token = _payload(http.get("/api/auth", params={"apiKey": "demo-key"}))["access_token"]
    return {"Authorization": f"Bearer {token}"}


def _rows(path: Path) -> list[tuple[str, int, dict[str, Any]]]:
    with sqlite3.connect(path) as db:
        rows = db.execute("SELECT public_id, seq, data FROM contacts ORDER BY seq").fetchall()
    return [(pid, seq, json.loads(data)) for pid, seq, data in rows]


def test_contacts_survive_a_restart_on_the_same_file(tmp_path: Path) -> None:
    path = tmp_path / "emulator.db"
    config = EmulatorConfig(contacts=25, seed=3, add_more_delay=0, db_path=str(path))
    with EmulatorServer(config) as server, httpx.Client(base_url=server.url, timeout=5) as http:
        headers = _headers(http)
        seeded = http.get("/_emulator/contacts").json()
        assert len(seeded) == 25
        # API side: add, update, delete, add-more (applied by the flush)
        added = _payload(http.post("/api/contacts/add", json=NEW, headers=headers))
        _payload(http.post("/api/contacts/update", headers=headers, json={
            "refId": seeded[0]["ref_id"], "fullName": "Đổi Tên Qua API", "tags": ["Mới"],
            "phones": [{"data": "+84 912 345 678", "type": "office"}]}))
        _payload(http.delete(f"/api/contacts/delete/{seeded[1]['public_id']}", headers=headers))
        _payload(http.post("/api/contacts/add-more", headers=headers,
                           json=[NEW | {"refId": "KH-700002", "fullName": "Lê Thị Hồng"}]))
        assert http.post("/_emulator/flush").json() == {"applied": 1}
        # agent side: create, edit, delete
        agent = http.post("/_emulator/contacts", json={
            "full_name": "Hồ Ngọc Hà", "phones": ["0987654321"], "custom": {"Kênh mới": "Zalo"},
            "dynamic": {"vWabCEBkqM": "15"}}).json()["public_id"]
        assert http.patch(f"/_emulator/contacts/{agent}", json={"note": "Gọi lại"}).status_code \
            == 200
        assert http.patch(f"/_emulator/contacts/{seeded[2]['public_id']}",
                          json={"job_title": "Kỹ sư"}).status_code == 200
        assert http.delete(f"/_emulator/contacts/{seeded[3]['public_id']}").status_code == 200

        before_admin = http.get("/_emulator/contacts").json()
        before_api = _api_list(http, headers)
        deleted = [seeded[1]["public_id"], seeded[3]["public_id"]]
        before_deleted = [_payload(http.get(f"/api/contacts/details/{pid}", headers=headers))
                          for pid in deleted]
        last_seq = max(c.seq for c in server.emulator.store.by_id.values())
    assert len(before_admin) == 25 + 2 + 1 - 2 and before_admin[-1]["public_id"] == agent
    assert [c["public_id"] for c in before_api] == [c["public_id"] for c in before_admin]

    # A different seed and count: the file wins, nothing is seeded.
    again = EmulatorConfig(contacts=7, seed=99, add_more_delay=0, db_path=str(path))
    with EmulatorServer(again) as server, httpx.Client(base_url=server.url, timeout=5) as http:
        headers = _headers(http)
        assert http.get("/_emulator/contacts").json() == before_admin  # ids, values, order
        assert _api_list(http, headers) == before_api
        for pid, was in zip(deleted, before_deleted, strict=True):
            now = _payload(http.get(f"/api/contacts/details/{pid}", headers=headers))
            assert now == was and now["is_deleted"] is True
        reloaded = {c["public_id"]: c for c in before_admin}
        assert reloaded[added["public_id"]]["tags"] == ["VIP", "Đã gọi"]
        assert first(reloaded[seeded[0]["public_id"]], "full_name") == "Đổi Tên Qua API"
        assert first(reloaded[agent], "note") == "Gọi lại"
        # the store's state is back too: lookups by ref_id and phone, deleted ones left out
        found = _payload(http.get("/api/contacts/get", params={"ref_id": "KH-700002"},
                                  headers=headers))
        assert first(found, "full_name") == "Lê Thị Hồng" and found["public_id"] in reloaded
        assert _payload(http.get("/api/contacts/get", params={"phone": "0912345678"},
                                 headers=headers))["public_id"] == seeded[0]["public_id"]
        assert _payload(http.get("/api/contacts/get", params={"ref_id": seeded[1]["ref_id"]},
                                 headers=headers)) is None
        # a new contact continues the seq, comes last in "created" order, and is written through
        new = http.post("/_emulator/contacts", json={"full_name": "Ngô Bảo",
                                                     "custom": {"Nguồn": "Web"}}).json()
        emu = server.emulator
        assert emu.store.by_id[new["public_id"]].seq == last_seq + 1
        assert http.get("/_emulator/contacts").json()[-1]["public_id"] == new["public_id"]
        # a label first seen now gets a key no stored contact uses
        keys = {v["data_type"] for c in before_admin for v in attr(c, "more_infomation")}
        created = http.get(f"/_emulator/contacts/{new['public_id']}").json()
        assert attr(created, "more_infomation")[0]["data_type"] not in keys
    rows = _rows(path)
    assert [pid for pid, _, _ in rows][-1] == new["public_id"] and rows[-1][1] == last_seq + 1
    assert len(rows) == 25 + 2 + 1 + 1


def test_seeding_writes_every_contact_once_and_changes_write_through(tmp_path: Path) -> None:
    path = tmp_path / "seeded.db"
    emu = Emulator(EmulatorConfig(contacts=40, seed=5, db_path=str(path)))
    try:
        rows = _rows(path)
        assert [(pid, seq) for pid, seq, _ in rows] == \
            [(c.public_id, c.seq) for c in emu.store.by_id.values()]
        assert "cached_json" not in rows[0][2] and rows[0][2]["public_id"] == rows[0][0]
        pid = rows[0][0]
        emu.agent_update(pid, note="Ghi chú mới")
        assert {p: d for p, _, d in _rows(path)}[pid]["note"] == "Ghi chú mới"
        emu.agent_delete(pid)
        assert {p: d for p, _, d in _rows(path)}[pid]["is_deleted"] is True
    finally:
        emu.close()
    with sqlite3.connect(path) as db:
        assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    # the same seed in memory makes the same contacts: the file holds them exactly
    twin = Emulator(EmulatorConfig(contacts=40, seed=5))
    reloaded = Emulator(EmulatorConfig(contacts=0, seed=1, db_path=str(path)))
    try:
        twin.agent_update(pid, note="Ghi chú mới")
        twin.agent_delete(pid)
        strip = ("last_updated_date",)  # stamped by the wall clock at each edit
        assert [{k: v for k, v in c.items() if k not in strip} for c in reloaded.contacts()] == \
            [{k: v for k, v in c.items() if k not in strip} for c in twin.contacts()]
        assert reloaded.contact(pid) is not None
    finally:
        reloaded.close()


def test_an_empty_file_is_seeded(tmp_path: Path) -> None:
    path = tmp_path / "empty.db"
    sqlite3.connect(path).close()  # exists, holds nothing
    emu = Emulator(EmulatorConfig(contacts=6, db_path=str(path)))
    emu.close()
    assert len(_rows(path)) == 6


def test_a_path_in_a_missing_directory_is_refused_by_name(tmp_path: Path) -> None:
    path = tmp_path / "no-such-dir" / "emulator.db"
    with pytest.raises(ValueError, match="no-such-dir"):
        Emulator(EmulatorConfig(contacts=3, db_path=str(path)))
    try:
        result = CliRunner().invoke(app, ["emulator", "--contacts", "3", "--db", str(path)])
    finally:  # the command pointed structlog at the runner's stream, now closed
        structlog.reset_defaults()
    assert result.exit_code == 2
    assert str(path.parent) in " ".join(result.output.split())
    assert not path.parent.exists()


def test_a_file_that_is_not_sqlite_is_refused_by_name(tmp_path: Path) -> None:
    path = tmp_path / "notes.txt"
    path.write_text("not a database, " * 100)
    with pytest.raises(ValueError, match=r"notes\.txt"):
        Emulator(EmulatorConfig(db_path=str(path)))


def test_db_path_is_start_up_only(tmp_path: Path) -> None:
    emu = Emulator(EmulatorConfig(contacts=1, db_path=str(tmp_path / "a.db")))
    try:
        with pytest.raises(ValueError, match="db_path"):
            emu.configure(db_path=str(tmp_path / "b.db"))
        emu.configure(latency=0.0, db_path=str(tmp_path / "a.db"))  # unchanged: accepted
    finally:
        emu.close()
    with pytest.raises(ValueError, match="db_path"):
        EmulatorConfig(db_path="")


def test_the_in_memory_default_creates_no_file_and_loads_no_sqlite3(tmp_path: Path) -> None:
    code = ("import sys; from sync.emulator import Emulator, EmulatorConfig, create_app; "
            "e = Emulator(EmulatorConfig(contacts=5)); create_app(emulator=e); "
            "e.agent_create(full_name='A'); print(e.store.file, 'sqlite3' in sys.modules)")
    done = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True,
                          text=True, check=True, env={"PYTHONPATH": str(ROOT)})
    assert done.stdout.split() == ["None", "False"]
    assert list(tmp_path.iterdir()) == []
