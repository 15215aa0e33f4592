"""`crm-sync run` and `crm-sync sync` as real processes: end to end over HTTP, signals,
systemd notifications, concurrent manual syncs, and HA takeover on PostgreSQL after kill -9."""

from __future__ import annotations

import secrets
import signal
import socket
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select

from sync.emulator import EmulatorConfig, EmulatorServer
from sync.runtime import build_runtime
from sync.store import make_engine
from sync.store.journal import ABANDONED_RUN
from sync.store.lock import TenantLock
from sync.store.schema import sync_lease, sync_runs

from .conftest import API_KEY, CANCELLED, ROOT, Proc, free_port, get, settings_for, wait_for

pytestmark = pytest.mark.slow
Spawn = Callable[..., Proc]


def is_ok(url: str) -> bool:
    r = get(url)
    return r is not None and r.status_code == 200


def daemon_settings(server: EmulatorServer, db: str, tenant: str, interval: float,
                    port: int, **more: Any) -> dict[str, Any]:
    return {"base_url": server.url, "api_key": API_KEY, "database_url": db, "tenant": tenant,
            "interval_seconds": interval, "health_port": port, "log_format": "json", **more}


def runs(db_url: str, tenant: str) -> list[dict[str, Any]]:
    engine = make_engine(db_url)
    try:
        with engine.connect() as conn:
            rows = conn.execute(select(sync_runs).where(sync_runs.c.tenant == tenant)
                                .order_by(sync_runs.c.id))
            return [dict(r._mapping) for r in rows]
    finally:
        engine.dispose()


class NotifyListener:
    """systemd's side of NOTIFY_SOCKET: reads continuously, as systemd does (a datagram queue
    nobody reads fills up after ~10 messages, and the daemon then drops, never blocks)."""

    def __init__(self, path: str) -> None:
        self.path = path
        self.messages: list[str] = []
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(path)
        self.sock.settimeout(0.1)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._read, daemon=True)
        self._thread.start()

    def _read(self) -> None:
        while not self._stop.is_set():
            try:
                self.messages.extend(self.sock.recv(4096).decode().splitlines())
            except TimeoutError:
                continue
            except OSError:
                return

    def close(self) -> list[str]:
        self._stop.set()
        self._thread.join()
        self.sock.close()
        return self.messages


@pytest.fixture
def notify_socket(tmp_path: Path) -> Iterator[NotifyListener]:
    listener = NotifyListener(str(tmp_path / "notify.sock"))
    yield listener
    listener.close()


def test_daemon_end_to_end(emulator: EmulatorServer, sqlite_url: str, spawn: Spawn,
                           notify_socket: NotifyListener) -> None:
    interval, port, tenant = 1.5, free_port(), f"t-{secrets.token_hex(4)}"
    proc = spawn(["run"], name="daemon", extra_env={"NOTIFY_SOCKET": notify_socket.path,
                                                     "WATCHDOG_USEC": "1000000"},
                 **daemon_settings(emulator, sqlite_url, tenant, interval, port))
    base = f"http://127.0.0.1:{port}"
    wait_for(lambda: is_ok(base + "/readyz"), 30, what="/readyz (first cycle)")
    assert is_ok(base + "/healthz")
    metrics = get(base + "/metrics")
    assert metrics is not None and 'crm_sync_cycles_total{kind="sync",result="ok"}' in \
        metrics.text
    probe = subprocess.run([sys.executable, "-m", "sync", "health", "--url", base],
                           capture_output=True, text=True, timeout=30, cwd=ROOT)
    assert probe.returncode == 0, probe.stdout + probe.stderr

    # both directions within two intervals
    t0 = time.monotonic()
    public_id = emulator.emulator.agent_create(full_name="Hoàng Văn Em", phones=["0911222333"])
    path = sqlite_url.removeprefix("sqlite:///")
    with sqlite3.connect(path, timeout=10) as db:
        db.execute("INSERT INTO contacts (ref_id, full_name, phone) VALUES (?, ?, ?)",
                   ("erp-77", "Vũ Thị Giang", "0977888999"))

    def pulled() -> bool:
        with sqlite3.connect(path, timeout=10) as db:
            return bool(db.execute("SELECT 1 FROM contacts WHERE crm_id = ?",
                                   (public_id,)).fetchone())

    wait_for(pulled, 2 * interval, what="the CRM contact in the local table")
    t_pull = time.monotonic() - t0
    wait_for(lambda: emulator.emulator.find_by_ref_id("erp-77"), 2 * interval - t_pull,
             what="the local row in the CRM")
    t_push = time.monotonic() - t0

    code, took = proc.stop(signal.SIGTERM)
    print(f"\npull {t_pull:.2f}s, push {t_push:.2f}s (interval {interval}s); "
          f"SIGTERM -> exit {code} in {took:.2f}s")
    assert code == 0 and took < 10
    messages = notify_socket.close()
    assert messages.count("READY=1") == 1 and "STOPPING=1" in messages
    assert "WATCHDOG=1" in messages and any(m.startswith("STATUS=") for m in messages)
    assert messages.index("READY=1") < messages.index("STOPPING=1")

    lines = proc.json_lines()
    requests = [line for line in lines if line.get("event") == "omicall.request"]
    assert requests and all(isinstance(line.get("run_id"), int) for line in requests)
    assert all(line.get("tenant") == tenant for line in lines if "event" in line
               and line["event"].startswith(("cycle.", "daemon.", "omicall.")))
    assert any(line.get("event") == "daemon.stopped" for line in lines)
    assert all(r["status"] in ("ok", "partial") for r in runs(sqlite_url, tenant))


def test_sigterm_during_a_cycle(emulator: EmulatorServer, sqlite_url: str, spawn: Spawn) -> None:
    port, tenant = free_port(), f"t-{secrets.token_hex(4)}"
    proc = spawn(["run"], name="daemon", read_timeout=60,
                 **daemon_settings(emulator, sqlite_url, tenant, 1.0, port))
    wait_for(lambda: is_ok(f"http://127.0.0.1:{port}/readyz"), 30, what="the first cycle")
    emulator.emulator.configure(latency=30)  # the next cycle hangs on its first request
    wait_for(lambda: any(r["status"] == "running" for r in runs(sqlite_url, tenant)), 10,
             what="a cycle in flight")
    code, took = proc.stop(signal.SIGTERM)
    print(f"\nSIGTERM mid-cycle -> exit {code} in {took:.2f}s")
    assert code == 0 and took < 10
    last = runs(sqlite_url, tenant)[-1]
    # closed by the engine as it was cancelled, or else by the daemon's own clean-up
    assert last["status"] == "failed" and last["message"] in (CANCELLED, ABANDONED_RUN)
    engine = make_engine(sqlite_url)
    try:
        with engine.connect() as conn:
            assert conn.execute(select(sync_lease).where(sync_lease.c.tenant == tenant)
                                ).first() is None  # the lease was given back, not left to expire
    finally:
        engine.dispose()
    assert any(line.get("event") == "cycle.cancelled" for line in proc.json_lines())


@pytest.mark.parametrize("backend", ["sqlite", pytest.param("postgresql",
                                                            marks=pytest.mark.postgres)])
def test_two_manual_syncs_at_once_create_no_duplicate(
        backend: str, sqlite_url: str, spawn: Spawn, request: pytest.FixtureRequest) -> None:
    db_url = sqlite_url if backend == "sqlite" else str(request.getfixturevalue("pg_url"))
    # add-more shows its contacts only after a while: the second sync must rely on the
    # first one's pending_create bookkeeping, not on seeing them
    config = EmulatorConfig(contacts=3, add_more_delay=3.0, latency=0.3)
    with EmulatorServer(config) as server:
        settings = settings_for(server.url, db_url)
        rt = build_runtime(settings)
        refs = [f"shop-{i}" for i in range(8)]
        with rt.db.begin() as conn:
            conn.execute(rt.local.table.insert(), [
                {"ref_id": ref, "full_name": f"Khách hàng {i}", "phone": f"09{i:08d}"}
                for i, ref in enumerate(refs)])
        env = {"base_url": server.url, "api_key": API_KEY, "database_url": db_url,
               "tenant": settings.tenant_id, "log_format": "json"}
        procs = [spawn(["sync"], name=f"sync-{n}", **env) for n in range(2)]
        codes = [p.popen.wait(60) for p in procs]
        assert codes == [0, 0], [p.output()[-2000:] for p in procs]
        assert any("waiting: another sync holds the lock" in p.output() for p in procs)
        server.emulator.flush_pending()
        assert {ref: len(server.emulator.find_by_ref_id(ref)) for ref in refs} == \
            dict.fromkeys(refs, 1)
        done = runs(db_url, settings.tenant_id)
        assert len(done) == 2 and done[0]["finished_at"] <= done[1]["started_at"]
        if backend == "sqlite":  # --no-wait: exit 1 at once while another holds the lock
            lock = TenantLock(rt.db, settings.tenant_id, holder="someone")
            lock.acquire(wait=False)
            try:
                busy = spawn(["sync", "--no-wait"], name="no-wait", **env)
                assert busy.popen.wait(30) == 1 and "busy" in busy.output()
            finally:
                lock.release()
        rt.close()


@pytest.mark.postgres
def test_ha_takeover_after_kill_9(pg_url: str, spawn: Spawn) -> None:
    interval, tenant = 2.0, f"t-{secrets.token_hex(4)}"
    with EmulatorServer(EmulatorConfig(contacts=20, add_more_delay=0.2, latency=0.4)) as server:
        ports = [free_port(), free_port()]
        # both replicas start together on an empty schema: migrations race too
        replicas = {p: spawn(["run"], name=f"replica-{i}",
                             **daemon_settings(server, pg_url, tenant, interval, p))
                    for i, p in enumerate(ports)}
        for p in ports:
            wait_for(lambda p=p: is_ok(f"http://127.0.0.1:{p}/readyz"), 30,
                     what=f"replica on {p} ready")
        rt = build_runtime(settings_for(server.url, pg_url, tenant=tenant))
        refs = [f"erp-{i}" for i in range(5)]
        with rt.db.begin() as conn:
            conn.execute(rt.local.table.insert(), [
                {"ref_id": ref, "full_name": f"Khách {i}", "phone": f"098{i:07d}"}
                for i, ref in enumerate(refs)])

        by_pid = {proc.pid: port for port, proc in replicas.items()}

        def holder_mid_cycle() -> int | None:
            """The pid of the lock holder once its cycle's run row exists ("host:pid@ns #x")."""
            with rt.db.connect() as conn:
                row = conn.execute(select(sync_lease.c.holder)
                                   .where(sync_lease.c.tenant == tenant)).first()
                running = conn.execute(select(sync_runs.c.id).where(
                    sync_runs.c.tenant == tenant, sync_runs.c.status == "running")).first()
            if row is None or running is None:
                return None
            pid = int(row[0].split(" ")[0].rsplit(":", 1)[1].split("@")[0])
            return pid if pid in by_pid else None

        victim = wait_for(holder_mid_cycle, 10, step=0.01, what="a replica in a cycle")
        killed_at = datetime.now(UTC)
        replicas[by_pid[victim]].popen.send_signal(signal.SIGKILL)
        replicas[by_pid[victim]].popen.wait(10)
        survivor = next(proc for proc in replicas.values() if proc.pid != victim)

        def taken_over() -> dict[str, Any] | None:
            later = [r for r in runs(pg_url, tenant) if r["started_at"] > killed_at
                     and r["status"] in ("ok", "partial")]
            return later[0] if later else None

        first = wait_for(taken_over, 3 * interval, what="the survivor's cycle")
        takeover = (first["started_at"] - killed_at).total_seconds()
        abandoned = [r for r in runs(pg_url, tenant) if r["message"] == ABANDONED_RUN]
        wait_for(lambda: all(server.emulator.find_by_ref_id(ref) for ref in refs),
                 3 * interval, what="local rows pushed")
        server.emulator.flush_pending()
        counts = {ref: len(server.emulator.find_by_ref_id(ref)) for ref in refs}
        port = next(p for p, proc in replicas.items() if proc is survivor)
        assert is_ok(f"http://127.0.0.1:{port}/readyz")
        code, took = survivor.stop(signal.SIGINT)
        rt.close()
    print(f"\nkill -9 of the lock holder -> survivor's cycle started {takeover:.2f}s later "
          f"(interval {interval}s); SIGINT -> exit {code} in {took:.2f}s")
    assert takeover <= interval + 0.5
    assert len(abandoned) == 1 and abandoned[0]["status"] == "failed"  # closed by the survivor
    assert all(r["status"] != "running" for r in runs(pg_url, tenant))
    assert counts == dict.fromkeys(refs, 1)
    assert code == 0 and took < 10
