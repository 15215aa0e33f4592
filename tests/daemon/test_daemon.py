"""sync.daemon in-process: scheduler, lock, failures, stop, health and metrics, against the
emulator over real HTTP and a SQLite file. (test_daemon_process.py runs the real command.)"""

from __future__ import annotations

import asyncio
import sqlite3
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
import structlog
from sqlalchemy.exc import OperationalError

from sync import daemon as daemon_module
from sync.daemon import Daemon, run_daemon
from sync.emulator import EmulatorServer
from sync.errors import ConfigError
from sync.runtime import Runtime, build_runtime
from sync.settings import Settings, load_settings
from sync.store import make_engine
from sync.store.journal import ABANDONED_RUN
from sync.store.lock import TenantLock

from .conftest import API_KEY, CANCELLED, settings_for

Started = tuple[Daemon, httpx.AsyncClient]


async def until(check: Callable[[], Awaitable[Any]], timeout: float = 10,
                what: str = "condition") -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = await check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        await asyncio.sleep(0.05)


def metric(text: str, name: str) -> float:
    for line in text.splitlines():
        if line.startswith(name + " ") or (line.startswith(name + "{") and line.split(" ")[0] \
                == name):
            return float(line.rsplit(" ", 1)[1])
    return 0.0


@pytest.fixture
async def start() -> AsyncIterator[Callable[..., Awaitable[Started]]]:
    """start(settings, build=...) -> (daemon, client of its health server); stopped at the end."""
    running: list[tuple[Daemon, asyncio.Task[int], httpx.AsyncClient]] = []

    async def go(settings: Settings, build: Callable[[Settings], Runtime] = build_runtime
                 ) -> Started:
        d = Daemon(settings, build=build, handle_signals=False)
        task = asyncio.create_task(d.run())
        await until(lambda: asyncio.sleep(0, d.health is not None and d.health.port != 0),
                    what="the health server")
        assert d.health is not None
        client = httpx.AsyncClient(base_url=f"http://127.0.0.1:{d.health.port}", timeout=5)
        running.append((d, task, client))
        return d, client

    yield go
    for d, task, client in running:
        d.request_stop("test over")
        assert await asyncio.wait_for(task, 15) == 0
        await client.aclose()


async def ready(client: httpx.AsyncClient) -> bool:
    return (await client.get("/readyz")).status_code == 200


async def test_syncs_both_ways_and_serves_health_and_metrics(
        emulator: EmulatorServer, sqlite_url: str, start: Callable[..., Awaitable[Started]]
) -> None:
    settings = settings_for(emulator.url, sqlite_url)
    d, client = await start(settings)
    await until(lambda: ready(client), what="/readyz")
    body = (await client.get("/healthz")).json()
    assert body["status"] == "ok" and body["scheduler"] == "running"
    assert (await client.get("/readyz")).json()["role"] == "active"

    seen_context: list[dict[str, Any]] = []
    assert d.rt is not None and d.rt.on_request is not None
    observe = d.rt.on_request
    d.rt.on_request = lambda e: (seen_context.append(structlog.contextvars.get_contextvars()),
                                 observe(e))
    public_id = emulator.emulator.agent_create(full_name="Lê Văn Cường", phones=["0903123456"])
    with sqlite3.connect(sqlite_url.removeprefix("sqlite:///")) as db:
        db.execute("INSERT INTO contacts (ref_id, full_name, phone) VALUES (?, ?, ?)",
                   ("shop-1", "Phạm Thị Dung", "0987654321"))

    def local_has_it() -> bool:
        with sqlite3.connect(sqlite_url.removeprefix("sqlite:///")) as db:
            return bool(db.execute("SELECT 1 FROM contacts WHERE crm_id = ?",
                                   (public_id,)).fetchone())

    await until(lambda: asyncio.sleep(0, local_has_it()), what="the CRM contact locally")
    await until(lambda: asyncio.sleep(0, emulator.emulator.find_by_ref_id("shop-1")),
                what="the local row in the CRM")
    # every API request of a cycle ran with the cycle's run id bound
    assert seen_context and all(isinstance(c.get("run_id"), int) for c in seen_context)
    assert all(c["tenant"] == settings.tenant_id for c in seen_context)

    text = (await client.get("/metrics")).text
    assert metric(text, 'crm_sync_cycles_total{kind="sync",result="ok"}') >= 2
    assert metric(text, 'crm_sync_contacts_total{action="created_remote"}') == 1
    assert metric(text, 'crm_sync_contacts_total{action="created_local"}') >= 6
    assert metric(text, 'crm_sync_api_requests_total{endpoint="list",status="200"}') >= 2
    assert metric(text, "crm_sync_last_success_timestamp_seconds") > time.time() - 60
    assert metric(text, "crm_sync_lock_held") == 0

    job = d.scheduler.get_job("sync") if d.scheduler else None
    full = d.scheduler.get_job("full") if d.scheduler else None
    assert job is not None and full is not None
    assert job.max_instances == 1 and job.coalesce and job.misfire_grace_time >= 1
    assert full.max_instances == 1 and full.coalesce and full.misfire_grace_time == 3600


async def test_a_full_reconcile_runs_as_kind_full_and_a_busy_sync_tick_is_skipped(
        emulator: EmulatorServer, sqlite_url: str, start: Callable[..., Awaitable[Started]]
) -> None:
    settings = settings_for(emulator.url, sqlite_url, interval_seconds=3600)
    d, client = await start(settings)
    await until(lambda: ready(client), what="the first cycle")
    emulator.emulator.configure(latency=0.3)
    full = asyncio.create_task(d._tick("full"))
    await until(lambda: asyncio.sleep(0, d._busy.locked()), what="the full cycle to start")
    await d._tick("sync")  # returns at once: skipped, this process is busy
    await full
    assert d.rt is not None
    kinds = [(r["kind"], r["status"]) for r in d.rt.store.last_runs(2)]
    assert kinds == [("full", "ok"), ("sync", "ok")]
    text = (await client.get("/metrics")).text
    assert metric(text, 'crm_sync_cycles_total{kind="sync",result="skipped_busy"}') == 1
    assert metric(text, 'crm_sync_cycles_total{kind="full",result="ok"}') == 1


async def test_failing_cycles_are_counted_and_retried_the_daemon_lives_on(
        emulator: EmulatorServer, sqlite_url: str, start: Callable[..., Awaitable[Started]]
) -> None:
    emulator.emulator.configure(error_500_rate=1.0)
    raised = []

    def build(settings: Settings) -> Runtime:
        rt = build_runtime(settings)
        cycle = rt.cycle

        async def flaky(*args: Any, **kwargs: Any) -> Any:
            if not raised:  # once: something outside the engine's own error handling
                raised.append(True)
                raise RuntimeError("boom")
            return await cycle(*args, **kwargs)

        rt.cycle = flaky  # type: ignore[method-assign]
        return rt

    d, client = await start(settings_for(emulator.url, sqlite_url), build=build)

    async def failures() -> bool:
        text = (await client.get("/metrics")).text
        return metric(text, 'crm_sync_cycles_total{kind="sync",result="failed"}') >= 2
    await until(failures, what="failed cycles")
    text = (await client.get("/metrics")).text
    assert metric(text, 'crm_sync_cycles_total{kind="sync",result="error"}') == 1
    assert metric(text, 'crm_sync_api_requests_total{endpoint="auth",status="500"}') >= 2
    assert (await client.get("/healthz")).status_code == 200  # alive
    r = await client.get("/readyz")
    assert r.status_code == 503 and r.json()["reason"] == "no successful cycle yet"
    emulator.emulator.configure(error_500_rate=0.0)  # the CRM recovers: the next tick syncs
    await until(lambda: ready(client), what="recovery")
    assert d.rt is not None
    assert all(r["status"] != "running" for r in d.rt.store.last_runs(50))


async def test_standby_skips_while_another_process_holds_the_lock(
        emulator: EmulatorServer, sqlite_url: str, start: Callable[..., Awaitable[Started]]
) -> None:
    settings = settings_for(emulator.url, sqlite_url)
    rt = build_runtime(settings)  # the other replica
    other = TenantLock(rt.db, settings.tenant_id, holder="replica-b:42")
    other.acquire(wait=False)
    try:
        d, client = await start(settings)

        async def skipped() -> bool:
            text = (await client.get("/metrics")).text
            return metric(text, 'crm_sync_cycles_total{kind="sync",result="skipped_locked"}') >= 2
        await until(skipped, what="skipped ticks")
        r = await client.get("/readyz")
        assert r.status_code == 503 and r.json()["role"] == "standby"
        # the holder completes a cycle: the group syncs, so the standby is ready too
        await rt.cycle()
        await until(lambda: ready(client), what="ready as a standby")
        assert (await client.get("/readyz")).json()["role"] == "standby"
        assert not rt.store.last_runs(10)[1:]  # this daemon ran nothing meanwhile
    finally:
        other.release()
    await until(lambda: asyncio.sleep(0, d.role == "active"), what="the daemon to take over")
    rt.close()


async def test_stop_during_a_cycle_cancels_it_closes_its_run_and_releases_the_lock(
        emulator: EmulatorServer, sqlite_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(daemon_module, "STOP_GRACE_SECONDS", 0.3)
    settings = settings_for(emulator.url, sqlite_url, read_timeout=60)
    emulator.emulator.configure(latency=20)  # the first request hangs
    d = Daemon(settings, handle_signals=False)
    task = asyncio.create_task(d.run())
    await until(lambda: asyncio.sleep(0, d._busy.locked()), what="a cycle in flight")
    await asyncio.sleep(0.3)
    started = time.monotonic()
    d.request_stop("test")
    assert await asyncio.wait_for(task, 10) == 0
    assert time.monotonic() - started < 3
    rt = build_runtime(settings)
    try:
        runs = rt.store.last_runs(5)
        # closed by the engine as it was cancelled, or else by the daemon's own clean-up
        assert runs and runs[0]["status"] == "failed"
        assert runs[0]["message"] in (CANCELLED, ABANDONED_RUN)
        TenantLock(rt.db, settings.tenant_id).acquire(wait=False)  # released
    finally:
        rt.close()


async def test_waits_for_the_database_at_start(
        emulator: EmulatorServer, sqlite_url: str, start: Callable[..., Awaitable[Started]]
) -> None:
    attempts = []

    def build(settings: Settings) -> Runtime:
        attempts.append(time.monotonic())
        if len(attempts) == 1:
            raise OperationalError("connect", {}, Exception("connection refused"))
        return build_runtime(settings)

    _, client = await start(settings_for(emulator.url, sqlite_url), build=build)
    r = await client.get("/readyz")
    if len(attempts) < 2:  # still waiting: not alive yet, not ready
        assert r.status_code == 503 and "starting" in r.json()["reason"]
        assert (await client.get("/healthz")).status_code == 503
    await until(lambda: ready(client), what="start after the retry")
    assert len(attempts) == 2


def test_bad_settings_are_refused_before_anything_starts(sqlite_url: str) -> None:
    # the cron is checked with the other settings, so `crm-sync check` refuses it too
    for cron in ("at dawn", "61 * * *", "0 3 * *"):
        with pytest.raises(ConfigError, match=r"CRM_SYNC_FULL_SYNC_CRON.*five fields"):
            load_settings(base_url="http://127.0.0.1:1", api_key=API_KEY,
                          database_url=sqlite_url, full_sync_cron=cron)
    assert load_settings(base_url="http://127.0.0.1:1", api_key=API_KEY,
                         database_url=sqlite_url, full_sync_cron="*/15 2-4 * * mon-fri")
    with pytest.raises(ConfigError, match="CRM_SYNC_API_KEY"):
        run_daemon(settings_for("http://127.0.0.1:1", sqlite_url, api_key=""))


def test_a_bad_setting_says_where_its_value_came_from(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The environment or .env (the value itself is never shown: it may be a secret)."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / ".env").write_text("CRM_SYNC_PAGE_SIZE=many\n", encoding="utf-8")
    with pytest.raises(ConfigError, match=r"CRM_SYNC_PAGE_SIZE \(in \.env\): ") as exc:
        load_settings(api_key=API_KEY)
    assert "many" not in str(exc.value)
    monkeypatch.setenv("CRM_SYNC_PAGE_SIZE", "lots")  # the environment wins over .env
    with pytest.raises(ConfigError, match=r"CRM_SYNC_PAGE_SIZE \(in the environment\): "):
        load_settings(api_key=API_KEY)
    with pytest.raises(ConfigError, match=r"CRM_SYNC_PAGE_SIZE: "):
        load_settings(api_key=API_KEY, page_size="x")  # given by the caller


def test_a_database_url_without_its_driver_is_a_configuration_error() -> None:
    with pytest.raises(ConfigError, match="CRM_SYNC_DATABASE_URL: no driver for 'mysql'") as exc:
        make_engine("mysql://app:s3cret-pw@db.example.vn/crm")
    assert "s3cret-pw" not in str(exc.value) and "***" in str(exc.value)
