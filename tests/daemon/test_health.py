"""sync.health: the checks, the HTTP endpoints, the server and the `crm-sync health` probe."""

from __future__ import annotations

import asyncio
import socket
import threading
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from typer.testing import CliRunner

from sync.cli import app
from sync.errors import ConfigError
from sync.health import (
    Check,
    HealthServer,
    create_app,
    liveness_check,
    probe,
    probe_url,
    readiness_check,
)
from sync.metrics import Metrics, last_success
from sync.store import make_engine
from sync.store.migrate import upgrade
from sync.store.schema import sync_runs
from sync.store.state import StateStore

from .conftest import free_port, settings_for


class Source:
    def __init__(self, live: bool = True, ready: bool = True) -> None:
        self.live, self.ready = live, ready

    def liveness(self) -> Check:
        return self.live, {"scheduler": "running" if self.live else "stopped"}

    def readiness(self) -> Check:
        return self.ready, {"database": "ok"} if self.ready else {"reason": "too old"}


def live(**kw: Any) -> Check:
    args: dict[str, Any] = {"scheduler": "running", "stopping": False, "role": "active",
                            "busy": False, "since_tick": 1.0, "interval": 60.0, **kw}
    return liveness_check(**args)


def test_liveness() -> None:
    assert live()[0]
    assert not live(scheduler=None)[0]  # still waiting for the database
    assert not live(scheduler="paused")[0]
    assert not live(since_tick=500.0)[0]  # the scheduler stopped ticking
    assert live(since_tick=500.0, busy=True)[0]  # a long cycle is not a dead scheduler
    assert live(scheduler="paused", stopping=True)[0]  # a graceful stop is not a failure


def test_readiness_follows_the_tenants_last_success(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path}/r.db"
    upgrade(url)
    db = make_engine(url)
    settings = settings_for("http://127.0.0.1:1", url, ready_max_age_seconds=60)
    store = StateStore(db, settings.tenant_id)
    ok, detail = readiness_check(db, settings, stopping=False, role="standby")
    assert not ok and detail["reason"] == "no successful cycle yet"
    # a failed run does not count; an ok run by any process of the tenant does
    failed = store.start_run("sync")
    store.finish_run(failed, status="failed", counts={}, api_calls={})
    assert last_success(db, settings.tenant_id) is None
    good = store.start_run("sync")
    store.finish_run(good, status="partial", counts={}, api_calls={})
    when = last_success(db, settings.tenant_id)
    assert when is not None and when.tzinfo is not None
    assert abs((datetime.now(UTC) - when).total_seconds()) < 10
    ok, detail = readiness_check(db, settings, stopping=False, role="standby")
    assert ok and detail["database"] == "ok" and detail["role"] == "standby"
    # another tenant's successes are not ours
    assert last_success(db, "someone-else") is None
    # too old: the newest success two minutes ago, older than the 60 s allowed (moved back
    # in time rather than a tiny max age, which a fast machine can beat)
    with db.begin() as conn:
        conn.execute(sync_runs.update().where(sync_runs.c.id == good)
                     .values(finished_at=datetime.now(UTC) - timedelta(seconds=120)))
    ok, detail = readiness_check(db, settings, stopping=False, role="active")
    assert not ok and detail["reason"] == "the last successful cycle is too old"
    assert not readiness_check(db, settings, stopping=True, role="active")[0]
    assert not readiness_check(None, settings, stopping=False, role="starting")[0]
    db.dispose()


def test_readiness_when_the_database_is_gone(tmp_path: Path) -> None:
    db = make_engine(f"sqlite:///{tmp_path}/never-migrated.db")
    settings = settings_for("http://127.0.0.1:1", "sqlite://")
    ok, detail = readiness_check(db, settings, stopping=False, role="active")
    assert not ok and detail["database"] == "unreachable" and "sync_runs" in detail["error"]
    db.dispose()


async def test_endpoints() -> None:
    metrics, source = Metrics(), Source()
    transport = httpx.ASGITransport(app=create_app(source, metrics))
    async with httpx.AsyncClient(transport=transport, base_url="http://daemon") as client:
        r = await client.get("/healthz")
        assert r.status_code == 200 and r.json() == {"status": "ok", "scheduler": "running"}
        assert (await client.get("/readyz")).json()["status"] == "ok"
        source.live = source.ready = False
        r = await client.get("/healthz")
        assert r.status_code == 503 and r.json()["status"] == "fail"
        r = await client.get("/readyz")
        assert r.status_code == 503 and r.json()["reason"] == "too old"
        r = await client.get("/metrics")
        assert r.status_code == 200 and "crm_sync_cycles_total" in r.text
        assert r.headers["content-type"].startswith("text/plain")
        assert (await client.get("/nope")).status_code == 404


@pytest.fixture
def served() -> Iterator[tuple[str, Source]]:
    """A HealthServer on a real port, in a loop of its own (the probe blocks)."""
    source, loop = Source(), asyncio.new_event_loop()
    server = HealthServer(create_app(source, Metrics()), "127.0.0.1", 0)
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    asyncio.run_coroutine_threadsafe(server.start(), loop).result(10)
    try:
        yield f"http://127.0.0.1:{server.port}", source
    finally:
        asyncio.run_coroutine_threadsafe(server.stop(), loop).result(10)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(10)
        loop.close()


def test_probe_and_the_health_command(served: tuple[str, Source]) -> None:
    url, source = served
    ok, lines = probe(url)
    assert ok and lines[0].startswith("/healthz: ok (200)") and lines[1].startswith("/readyz")
    runner = CliRunner()
    assert runner.invoke(app, ["health", "--url", url]).exit_code == 0
    source.ready = False
    ok, lines = probe(url)
    assert not ok and "FAIL (503)" in lines[1] and "too old" in lines[1]
    assert runner.invoke(app, ["health", "--url", url]).exit_code == 1
    assert runner.invoke(app, ["health", "--url", url, "--live"]).exit_code == 0  # liveness only
    source.live = False
    assert runner.invoke(app, ["health", "--url", url, "--live"]).exit_code == 1


def test_probe_of_nothing_listening_is_a_failure_not_a_crash() -> None:
    ok, lines = probe(f"http://127.0.0.1:{free_port()}", timeout=1)
    assert not ok and "no answer" in lines[0] and "unreachable" in lines[0]
    result = CliRunner().invoke(app, ["health", "--url", f"http://127.0.0.1:{free_port()}"])
    assert result.exit_code == 1  # never 2: Docker reserves it


def test_health_command_reads_the_port_from_settings(served: tuple[str, Source],
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    url, _ = served
    monkeypatch.setenv("CRM_SYNC_HEALTH_PORT", url.rsplit(":", 1)[1])
    monkeypatch.setenv("CRM_SYNC_HEALTH_HOST", "0.0.0.0")  # listening everywhere: ask loopback
    assert CliRunner().invoke(app, ["health"]).exit_code == 0
    monkeypatch.setenv("CRM_SYNC_HEALTH_PORT", "not-a-port")
    assert CliRunner().invoke(app, ["health"]).exit_code == 1


def test_probe_url() -> None:
    assert probe_url("0.0.0.0", 8787) == "http://127.0.0.1:8787"
    assert probe_url("::", 8787) == "http://[::1]:8787"
    assert probe_url("10.1.2.3", 9000) == "http://10.1.2.3:9000"


def test_a_busy_port_is_a_config_error_naming_the_setting() -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        with pytest.raises(ConfigError, match="CRM_SYNC_HEALTH_PORT"):
            HealthServer(create_app(Source(), Metrics()), "127.0.0.1", taken.getsockname()[1])
