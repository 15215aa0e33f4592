"""What `sync` says when a cycle cannot start: a new user's first mistakes (a wrong key, a
base URL that does not answer) named by the setting to fix, and a dry run that failed never
passed off as a plan with nothing to do."""

from __future__ import annotations

import re
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest
import structlog
from typer.testing import CliRunner

from sync.cli import app
from sync.emulator import EmulatorConfig, EmulatorServer

runner = CliRunner()


@pytest.fixture(scope="module")
def server() -> Iterator[EmulatorServer]:
    with EmulatorServer(EmulatorConfig(api_key="demo-key", contacts=3)) as srv:
        yield srv


def sync(*args: str) -> tuple[int, str]:
    try:
        result = runner.invoke(app, ["sync", *args])
    finally:  # the command pointed structlog at the runner's stream, now closed
        structlog.reset_defaults()
    return result.exit_code, re.sub(r"\s+", " ", result.output)


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])  # nobody listens there once the socket is closed


def test_a_dry_run_refused_by_the_crm_shows_no_plan(
        clean_env: Path, server: EmulatorServer, monkeypatch: pytest.MonkeyPatch) -> None:
    # before: "Nothing to do: both sides agree." above the failure
    monkeypatch.setenv("CRM_SYNC_BASE_URL", server.url)
    monkeypatch.setenv("CRM_SYNC_API_KEY", "not-the-key")
    code, out = sync("--dry-run")
    assert code == 2, out
    assert "Nothing to do" not in out and "Plan" not in out, out
    assert "No plan: the dry run failed" in out, out
    assert "check CRM_SYNC_API_KEY" in out and "not-the-key" not in out, out


def test_a_dry_run_that_works_still_prints_its_plan(
        clean_env: Path, server: EmulatorServer, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CRM_SYNC_BASE_URL", server.url)
    monkeypatch.setenv("CRM_SYNC_API_KEY", "demo-key")
    code, out = sync("--dry-run")
    assert code == 0, out
    assert "Plan (nothing applied)" in out and "3 insert (CRM -> table)" in out, out
    assert "No plan" not in out, out


def test_a_base_url_nobody_answers_names_the_setting(
        clean_env: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CRM_SYNC_BASE_URL", f"http://127.0.0.1:{_closed_port()}")
    monkeypatch.setenv("CRM_SYNC_MAX_RETRIES", "0")
    code, out = sync()
    assert code == 1, out
    assert "ConnectError" in out and "is CRM_SYNC_BASE_URL right" in out, out


def test_version_is_an_option_too() -> None:
    # `crm-sync --version` was refused ("No such option"); only `crm-sync version` worked
    from sync import __version__
    for args in (["--version"], ["version"]):
        result = runner.invoke(app, args)
        assert result.exit_code == 0 and result.output == f"crm-sync {__version__}\n", args


def test_status_says_why_the_last_run_failed(
        clean_env: Path, server: EmulatorServer, monkeypatch: pytest.MonkeyPatch) -> None:
    # it showed `failed` alone: the reason was only in `status --json`
    monkeypatch.setenv("CRM_SYNC_BASE_URL", server.url)
    monkeypatch.setenv("CRM_SYNC_API_KEY", "not-the-key")
    assert sync()[0] == 2
    try:
        result = runner.invoke(app, ["status"])
    finally:
        structlog.reset_defaults()
    out = re.sub(r"\s+", " ", result.output)
    assert result.exit_code == 0, out
    assert re.search(r"run \d+ failed: AuthError: OMICall refused the API key .*"
                     r"check CRM_SYNC_API_KEY", out), out


def test_ctrl_c_says_what_it_left(clean_env: Path) -> None:
    # Typer turns Ctrl-C into exit 130 without a word
    import os
    import signal
    import subprocess
    import sys
    import time

    with EmulatorServer(EmulatorConfig(api_key="demo-key", contacts=3, latency=5.0)) as slow:
        env = {**os.environ, "CRM_SYNC_BASE_URL": slow.url, "CRM_SYNC_API_KEY": "demo-key"}
        proc = subprocess.Popen([sys.executable, "-m", "sync", "sync"], env=env, cwd=clean_env,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        deadline = time.monotonic() + 30
        while slow.emulator.stats().get("auth", 0) == 0:  # the cycle waits on the CRM
            assert time.monotonic() < deadline and proc.poll() is None
            time.sleep(0.05)
        proc.send_signal(signal.SIGINT)
        _, stderr = proc.communicate(timeout=30)
    assert proc.returncode == 130, stderr
    assert "interrupted: nothing is left half-applied" in stderr, stderr


def _in_a_terminal(env: dict[str, str], cwd: Path) -> str:
    """`crm-sync sync`'s output with stdout and stderr on a pseudo-terminal."""
    import os
    import pty
    import subprocess
    import sys

    leader, follower = pty.openpty()
    proc = subprocess.Popen([sys.executable, "-m", "sync", "sync"], env=env, cwd=cwd,
                            stdin=subprocess.DEVNULL, stdout=follower, stderr=follower)
    os.close(follower)
    chunks: list[bytes] = []
    while True:
        try:
            chunk = os.read(leader, 65536)
        except OSError:  # EIO: the child closed the terminal
            break
        if not chunk:
            break
        chunks.append(chunk)
    os.close(leader)
    assert proc.wait(timeout=60) == 0, b"".join(chunks).decode(errors="replace")
    return b"".join(chunks).decode(errors="replace")


def test_a_sync_in_a_terminal_is_not_buried_in_request_lines(
        clean_env: Path, server: EmulatorServer) -> None:
    import os

    env = {**os.environ, "CRM_SYNC_BASE_URL": server.url, "CRM_SYNC_API_KEY": "demo-key",
           "COLUMNS": "120"}
    env.pop("CRM_SYNC_LOG_FORMAT")  # the fixture's json: a person's terminal has the default
    quiet = _in_a_terminal(env, clean_env)
    assert "omicall.request" not in quiet and "cycle.start" not in quiet, quiet
    plain = re.sub(r"\x1b\[[0-9;?]*[A-Za-z]", "", quiet)  # without the terminal's colours
    assert re.search(r"sync run \d+: ok in [\d.]+s, 2 API calls", plain), plain  # the summary
    told = _in_a_terminal({**env, "CRM_SYNC_LOG_LEVEL": "info"}, clean_env)
    assert "omicall.request" in told, told  # asked for: every request, as before
