"""EmulatorServer (background thread) and serve() (blocking, for `crm-sync emulator`)."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from sync.emulator import Emulator, EmulatorConfig, EmulatorServer

ROOT = Path(__file__).resolve().parents[2]


def test_server_shares_a_given_emulator_and_stops_cleanly() -> None:
    emulator = Emulator(EmulatorConfig(contacts=3))
    with EmulatorServer(emulator) as server:
        assert server.emulator is emulator
        pid = emulator.agent_create(full_name="Ngô Bảo")
        listed = httpx.get(server.url + "/_emulator/contacts").json()
        assert pid in {c["public_id"] for c in listed} and len(listed) == 4
        port = server.port
    with pytest.raises(httpx.ConnectError):
        httpx.get(f"http://127.0.0.1:{port}/_emulator/stats")
    with pytest.raises(RuntimeError):
        server.start()  # one-shot: the port is released


def test_two_servers_get_two_ports() -> None:
    with EmulatorServer() as one, EmulatorServer() as two:
        assert one.port != two.port
        assert httpx.get(one.url + "/_emulator/stats").status_code == 200
        assert httpx.get(two.url + "/_emulator/stats").status_code == 200


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_serve_blocks_until_interrupted() -> None:
    port = _free_port()
    code = ("from sync.emulator import EmulatorConfig, serve; "
            f"serve(EmulatorConfig(contacts=5, api_key='k'), '127.0.0.1', {port}, "
            "log_level='warning')")
    env = os.environ | {"PYTHONPATH": str(ROOT)}
    process = subprocess.Popen([sys.executable, "-c", code], env=env, cwd=ROOT)
    try:
        deadline = time.monotonic() + 15
        while True:
            try:
                response = httpx.get(f"http://127.0.0.1:{port}/api/auth", params={"apiKey": "k"})
                break
            except httpx.ConnectError:
                assert process.poll() is None and time.monotonic() < deadline
                time.sleep(0.05)
        assert response.json()["status_code"] == 9999
        assert len(httpx.get(f"http://127.0.0.1:{port}/_emulator/contacts").json()) == 5
    finally:
        process.send_signal(signal.SIGINT)
        assert process.wait(timeout=10) == 0


def test_a_client_gone_mid_body_is_not_a_server_error() -> None:
    """A daemon stopped while sending a list request: the server logged ClientDisconnect's
    whole traceback (an uncaught exception in the app), as if it had failed."""
    import asyncio

    from sync.emulator.app import create_app

    app = create_app(EmulatorConfig(contacts=1, api_key="k"))
    token = app.state.emulator.issue_token()
    scope = {"type": "http", "method": "POST", "path": "/api/contacts/list",
             "query_string": b"page=1&size=10", "root_path": "", "scheme": "http",
             "server": ("127.0.0.1", 80), "http_version": "1.1",
             "headers": [(b"authorization", f"Bearer {token}".encode()),
                         (b"content-type", b"application/json")]}
    sent: list[dict[str, object]] = []

    async def receive() -> dict[str, object]:
        return {"type": "http.disconnect"}

    async def send(message: dict[str, object]) -> None:
        sent.append(message)

    asyncio.run(app(scope, receive, send))
    assert sent[0]["type"] == "http.response.start" and sent[0]["status"] == 499
