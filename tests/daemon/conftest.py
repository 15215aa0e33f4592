"""Fixtures for the daemon tests: an emulator over real HTTP, databases, daemon subprocesses.

PostgreSQL tests need CRM_SYNC_TEST_PG_URL (e.g. postgresql+psycopg://postgres@127.0.0.1/test)
and are skipped, saying so, only when it is unset. Each such test gets a fresh schema of its
own (search_path set through the URL), dropped at the end, and a unique tenant.
"""

from __future__ import annotations

import json
import os
import secrets
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from sync.emulator import EmulatorConfig, EmulatorServer
from sync.settings import Settings

ROOT = Path(__file__).resolve().parents[2]
API_KEY = "demo-key"
CANCELLED = "cancelled (shutdown)"  # the engine's note on a run cancelled by a stop


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_for(check: Callable[[], Any], timeout: float, step: float = 0.05,
             what: str = "condition") -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(step)


def get(url: str) -> httpx.Response | None:
    try:
        return httpx.get(url, timeout=2)
    except httpx.HTTPError:
        return None


def settings_for(base_url: str, database_url: str, **overrides: Any) -> Settings:
    values: dict[str, Any] = {
        "base_url": base_url, "api_key": API_KEY, "database_url": database_url,
        "tenant": f"t-{secrets.token_hex(4)}", "interval_seconds": 0.5, "health_port": 0,
        "max_retries": 0, "log_format": "json", **overrides}
    return Settings(_env_file=None, **values)  # type: ignore[call-arg]


@pytest.fixture
def emulator() -> Iterator[EmulatorServer]:
    with EmulatorServer(EmulatorConfig(contacts=5, add_more_delay=0.1)) as server:
        yield server


@pytest.fixture
def sqlite_url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path}/crm-sync.db"


@pytest.fixture
def pg_url(fresh_pg_url: str) -> str:
    """A PostgreSQL URL whose search_path is a fresh, empty schema (migrations run by the
    daemon itself on first start, as in production)."""
    return fresh_pg_url


class Proc:
    """A `python -m sync ...` subprocess with CRM_SYNC_* settings and its output captured."""

    def __init__(self, args: list[str], env: dict[str, str], log: Path) -> None:
        self.log_path = log
        self._out = log.open("wb")
        self.popen = subprocess.Popen(
            [sys.executable, "-m", "sync", *args], cwd=log.parent, stdout=self._out,
            stderr=subprocess.STDOUT, env=env)

    @property
    def pid(self) -> int:
        return self.popen.pid

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 15) -> tuple[int, float]:
        """Send `sig`; (exit code, seconds until exit)."""
        started = time.monotonic()
        self.popen.send_signal(sig)
        code = self.popen.wait(timeout)
        return code, time.monotonic() - started

    def output(self) -> str:
        self._out.flush()
        return self.log_path.read_text(encoding="utf-8", errors="replace")

    def json_lines(self) -> list[dict[str, Any]]:
        lines = []
        for line in self.output().splitlines():
            try:
                lines.append(json.loads(line))
            except ValueError:
                continue
        return lines

    def close(self) -> None:
        if self.popen.poll() is None:
            self.popen.kill()
            self.popen.wait(10)
        self._out.close()


@pytest.fixture
def spawn(tmp_path: Path) -> Iterator[Callable[..., Proc]]:
    """spawn(args, name=..., **CRM_SYNC settings lower-case) -> Proc; all killed at the end."""
    procs: list[Proc] = []

    def start(args: list[str], name: str = "proc", extra_env: dict[str, str] | None = None,
              **settings: Any) -> Proc:
        env = {k: v for k, v in os.environ.items()
               if not k.startswith("CRM_SYNC_") and k not in ("NOTIFY_SOCKET", "WATCHDOG_USEC")}
        env["PYTHONPATH"] = str(ROOT)
        env.update(extra_env or {})
        env.update({f"CRM_SYNC_{k.upper()}": str(v) for k, v in settings.items()})
        workdir = tmp_path / name
        workdir.mkdir(exist_ok=True)
        proc = Proc(args, env, workdir / "output.log")
        procs.append(proc)
        return proc

    yield start
    for proc in procs:
        proc.close()
