"""The API key and the access tokens appear in no log line, no error and no metric.

Cycles run under faults (5xx, 429, timeouts, malformed bodies), with tokens that expire and
tokens the CRM revokes (re-authentication), and with a wrong key; everything said is collected:
every structlog line (sync.logs.configure at debug level into a buffer) and every stdlib log
record (httpx, httpcore, uvicorn...), the text, repr, traceback and frame locals of the errors
raised, the cycles' notes, sync_runs messages and rows' last_error, the Prometheus text of
sync.metrics.Metrics, and, from real processes, the output of `sync`, `check --online`,
`status --json` and of the daemon (`run`) with its /metrics, /healthz and /readyz. Neither the
key, nor the wrong key, nor any token the emulator issued, is in any of it.
"""

from __future__ import annotations

import io
import logging
import secrets
import signal
import socket
import time
import traceback
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import sqlalchemy as sa
import structlog

from sync import logs
from sync.api import OmiClient
from sync.cycle import CycleOptions
from sync.emulator import EmulatorConfig, EmulatorServer
from sync.errors import ApiError
from sync.metrics import Metrics
from sync.store.schema import sync_runs, sync_state

from .conftest import Figures
from .helpers import cli_env, local_rows, make_runtime, run_cli, start_cli, wait_until

pytestmark = pytest.mark.reliability

KEY = "omi-live-" + secrets.token_hex(12)
WRONG = "omi-old-" + secrets.token_hex(12)
FAULTS = {"error_500_rate": 0.1, "rate_429_rate": 0.05, "timeout_rate": 0.03,
          "malformed_rate": 0.05, "retry_after": 0.02, "timeout_hang": 0.4, "token_ttl": 0.05,
          "latency": 0.01}  # a token lives less than a cycle: 401s, then re-authentication


def exception_texts(exc: BaseException) -> list[str]:
    """str/repr/args and the formatted traceback of the exception and its cause/context chain,
    and the repr of every local variable of every frame (what show_locals would print) but
    this test's own frames (which hold the secrets to look for)."""
    texts: list[str] = []
    seen: set[int] = set()
    todo: list[BaseException | None] = [exc]
    while todo:
        e = todo.pop()
        if e is None or id(e) in seen:
            continue
        seen.add(id(e))
        texts += [str(e), repr(e), *map(repr, e.args), *traceback.format_exception(e)]
        for frame, _ in traceback.walk_tb(e.__traceback__):
            if frame.f_code.co_filename != __file__:
                texts += [repr(v) for v in frame.f_locals.values()]
        todo += [e.__cause__, e.__context__]
    return texts


@pytest.fixture
def captured() -> Iterator[io.StringIO]:
    """Every structlog line and every stdlib log record, at debug level, into one buffer."""
    buf = io.StringIO()
    old_config = structlog.get_config()
    handler = logging.StreamHandler(buf)
    handler.setFormatter(logging.Formatter("%(name)s %(levelname)s %(message)s"))
    root = logging.getLogger()
    old_level = root.level
    levels = {n: logging.getLogger(n).level for n in ("httpx", "httpcore", "uvicorn", "sync")}
    root.addHandler(handler)
    root.setLevel(logging.DEBUG)
    for name in levels:
        logging.getLogger(name).setLevel(logging.DEBUG)
    logs.configure("json", "debug", stream=buf)
    try:
        yield buf
    finally:
        structlog.configure(**old_config)
        root.removeHandler(handler)
        root.setLevel(old_level)
        for name, level in levels.items():
            logging.getLogger(name).setLevel(level)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def leaks(texts: dict[str, str], tokens: list[str]) -> list[tuple[str, str]]:
    """(where, which secret) for every secret found in a text."""
    needles = {"the API key": KEY, "the wrong key": WRONG}
    for i, token in enumerate(tokens):
        needles[f"token {i}"] = token
        needles[f"token {i} (its random part)"] = token.split(".")[-1]
    return [(where, what) for where, text in texts.items()
            for what, needle in needles.items() if needle in text]


async def test_no_key_or_token_in_logs_errors_or_metrics(
        captured: io.StringIO, sqlite_url: str, tmp_path: Path, figures: Figures) -> None:
    config = EmulatorConfig(api_key=KEY, contacts=80, seed=61, page_size_cap=20,
                            add_more_delay=0.05, **FAULTS)
    texts: dict[str, str] = {}
    with EmulatorServer(config) as server:
        emu = server.emulator
        issued: list[str] = []
        issue = emu.issue_token

        def recording_issue() -> str:
            token = issue()
            issued.append(token)
            return token

        emu.issue_token = recording_issue  # type: ignore[method-assign]

        # 1. in process: cycles with faults, expiring and revoked tokens, writes of every kind
        rt = make_runtime(server.url, sqlite_url, api_key=KEY, page_size=20, read_timeout=0.2,
                          max_retries=6, backoff_max=0.05, max_delete_fraction=0.5)
        metrics = Metrics()
        rt.on_request = metrics.observe_request
        notes: list[str] = []
        try:
            for i in range(6):
                table = rt.local.table
                keys = sorted(k for k in local_rows(rt) if not k.startswith("crm:"))
                with rt.db.begin() as conn:
                    if keys:
                        conn.execute(table.update().where(table.c.ref_id == keys[i])
                                     .values(job_title=f"Bảo mật {i}"))
                        conn.execute(table.delete().where(table.c.ref_id == keys[-1 - i]))
                    conn.execute(sa.insert(table).values(
                        ref_id=f"SEC-{i}", full_name=f"Kiều Văn Khóa {i}",
                        email="khong-phai-email" if i == 2 else f"khoa.{i}@example.vn"))
                if i == 3:
                    emu.revoke_tokens()  # the next call with the old token gets a 401
                r = await rt.cycle(CycleOptions(full=i % 2 == 1))
                metrics.observe_cycle(r)
                metrics.refresh(rt.store)
                notes += r.notes
                time.sleep(0.1)
            # the wrong key: a failed cycle, and the client's own error
            rt.close()
            rt = make_runtime(server.url, sqlite_url, api_key=WRONG, max_retries=1,
                              backoff_max=0.05)
            rt.on_request = metrics.observe_request
            r = await rt.cycle()
            metrics.observe_cycle(r)
            assert r.status == "failed", r.notes
            notes += r.notes
        finally:
            rt.close()
        errors: list[BaseException] = []
        for key, retries in ((WRONG, 1), (KEY, 0)):
            emu.configure(error_500_rate=0.3, timeout_rate=0.3, malformed_rate=0.3)
            async with OmiClient(server.url, key, timeout=0.2, max_retries=retries,
                                 backoff_max=0.01) as client:
                for _ in range(8):
                    try:
                        await client.list_page(1, 10)
                        await client.update(
                            (await client.list_page(1, 1)).items[0])
                    except ApiError as exc:
                        errors.append(exc)
                texts["client internals"] = repr(vars(client))
        emu.configure(**FAULTS)
        texts["exceptions"] = "\n".join(t for e in errors for t in exception_texts(e))
        texts["cycle notes"] = "\n".join(notes)
        texts["metrics (in process)"] = metrics.render()[0].decode()
        db = sa.create_engine(sqlite_url)
        with db.connect() as conn:
            texts["sync_runs.message"] = "\n".join(
                str(m) for m in conn.scalars(sa.select(sync_runs.c.message)))
            texts["sync_state.last_error"] = "\n".join(
                str(m) for m in conn.scalars(sa.select(sync_state.c.last_error)))
        db.dispose()

        # 2. real processes: sync, check --online, status --json, and the daemon
        env = cli_env(base_url=server.url, api_key=KEY, database_url=sqlite_url,
                      page_size=20, read_timeout=0.2, max_retries=6, backoff_max=0.05,
                      log_format="json", log_level="debug")
        wrong = {**env, "CRM_SYNC_API_KEY": WRONG}
        codes = {}
        for name, args, e in (("sync", ["sync", "--full"], env),
                              ("sync, wrong key", ["sync"], wrong),
                              ("check --online, wrong key", ["check", "--online"], wrong),
                              ("check --online", ["check", "--online"], env),
                              ("status --json", ["status", "--json"], env)):
            codes[name], texts[f"`{' '.join(args)}` ({name})"] = run_cli(
                args, e, tmp_path, name.replace(" ", "_").replace(",", ""))
        # a refused key is the configuration's fault: exit 2, for `sync` as for `check`
        assert codes["sync, wrong key"] == 2 and codes["check --online, wrong key"] == 2
        port = free_port()
        daemon, log = start_cli(["run"], {**env, "CRM_SYNC_HEALTH_PORT": str(port),
                                          "CRM_SYNC_INTERVAL_SECONDS": "0.3"}, tmp_path,
                                "daemon")
        base = f"http://127.0.0.1:{port}"
        try:
            def cycles_done() -> bool:  # two cycles at least, re-authentications included
                try:
                    body = httpx.get(base + "/metrics", timeout=2).text
                except httpx.HTTPError:
                    return False
                return sum(float(line.rsplit(" ", 1)[1]) for line in body.splitlines()
                           if line.startswith("crm_sync_cycles_total{")) >= 2
            assert wait_until(cycles_done, 30, step=0.1), log.read_text()
            for path in ("/metrics", "/healthz", "/readyz"):
                texts[f"daemon {path}"] = httpx.get(base + path, timeout=2).text
        finally:
            daemon.send_signal(signal.SIGTERM)
            daemon.wait(15)
        texts["daemon output"] = log.read_text(encoding="utf-8", errors="replace")

    texts["logs (structlog and stdlib, in process)"] = captured.getvalue()
    found = leaks(texts, issued)
    figures.record(
        "no secret in logs, errors or metrics", runs=6 + 1 + len(codes) + 1,
        tokens_issued=len(issued), texts_checked=len(texts),
        characters_checked=sum(map(len, texts.values())),
        log_lines=sum(t.count("\n") for k, t in texts.items() if "log" in k or "output" in k),
        errors_checked=len(errors), faults_injected=emu.fault_counts(), leaks=len(found))
    assert leaks({"self-check": f"GET /api/auth?apiKey={KEY}"}, issued)  # the check can fail
    assert len(issued) >= 5  # tokens expired, were revoked and were renewed
    assert "apiKey=***" in texts["logs (structlog and stdlib, in process)"]  # httpx's URL line
    assert any('"omicall.request"' in line and '"status": 401' in line
               for line in texts["logs (structlog and stdlib, in process)"].splitlines())
    assert all(texts.values())
    assert not found, found
