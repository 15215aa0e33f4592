"""sync.store.lock: one sync per tenant across threads, processes and kill -9."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest
from sqlalchemy import Engine, select, text

from sync.errors import LockBusy, StoreError
from sync.store.lock import TenantLock, advisory_key, default_holder, describe_holder
from sync.store.schema import sync_lease, utcnow

ROOT = Path(__file__).resolve().parents[2]
HOLDER = """
import sys, time
from sync.store import make_engine
from sync.store.lock import TenantLock
holder = None if sys.argv[4:] == ["default"] else "child"
lock = TenantLock(make_engine(sys.argv[1]), sys.argv[2], holder=holder,
                  lease_seconds=float(sys.argv[3]))
lock.acquire(timeout=10)
print("ACQUIRED", flush=True)
time.sleep(120)
"""


@pytest.fixture
def child(engine: Engine, db_url: str, tenant: str) -> Iterator[subprocess.Popen[str]]:
    """A real process holding the tenant's lock (lease 1.5 s on SQLite)."""
    proc = subprocess.Popen(
        [sys.executable, "-c", HOLDER, db_url, tenant, "1.5"], stdout=subprocess.PIPE,
        text=True, cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)})
    try:
        assert proc.stdout is not None
        assert proc.stdout.readline().strip() == "ACQUIRED"
        yield proc
    finally:
        proc.kill()
        proc.wait()


def test_advisory_key_is_stable_and_63_bit() -> None:
    assert advisory_key("acme") == advisory_key("acme") != advisory_key("acme2")
    assert 0 <= advisory_key("acme") < 2**63
    # replicas of different versions must agree on the key: it may never change
    assert advisory_key("acme") == 643659879270747999


def test_only_one_holder_and_release_lets_the_other_in(engine: Engine, tenant: str) -> None:
    first = TenantLock(engine, tenant, holder="web-1:100")
    second = TenantLock(engine, tenant, holder="web-2:200")
    first.acquire(wait=False)
    assert first.held
    with pytest.raises(LockBusy, match="being synced by process 100 on host web-1"):
        second.acquire(wait=False)
    with pytest.raises(LockBusy, match="being synced by process 100 on host web-1"):
        second.acquire(timeout=0.3)
    assert not second.held
    other_tenant = TenantLock(engine, tenant + "-b")
    other_tenant.acquire(wait=False)  # tenants do not block each other
    other_tenant.release()
    first.release()
    assert not first.held
    second.acquire(wait=False)
    assert second.held
    second.release()
    second.release()  # releasing twice is harmless


def test_threads_never_hold_together(engine: Engine, tenant: str) -> None:
    inside, overlaps, done = [0], [0], []
    guard = threading.Lock()

    def worker() -> None:
        for _ in range(3):
            with TenantLock(engine, tenant, lease_seconds=0.8):
                with guard:
                    inside[0] += 1
                    overlaps[0] = max(overlaps[0], inside[0])
                time.sleep(0.02)
                with guard:
                    inside[0] -= 1
        done.append(1)

    threads = [threading.Thread(target=worker) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert len(done) == 4 and overlaps[0] == 1


def test_on_wait_names_the_holder_and_waiting_succeeds(engine: Engine, tenant: str) -> None:
    holder = TenantLock(engine, tenant, holder="host-a:1")
    holder.acquire()
    waits: list[str] = []
    threading.Timer(0.4, holder.release).start()
    waiter = TenantLock(engine, tenant, lease_seconds=2)
    waiter.acquire(timeout=10, on_wait=waits.append)
    try:
        assert waiter.held and len(waits) == 1 and "host-a:1" in waits[0]
    finally:
        waiter.release()
    with pytest.raises(StoreError):
        waiter.renew()  # not held any more


def test_heartbeat_keeps_a_short_lease_alive(engine: Engine, tenant: str) -> None:
    with TenantLock(engine, tenant, lease_seconds=0.6) as lock:
        if engine.dialect.name == "sqlite":  # (PostgreSQL's lock has no lease to expire)
            time.sleep(1.5)  # 2.5 leases: only the heartbeat keeps it
        assert lock.held
        with pytest.raises(LockBusy):
            TenantLock(engine, tenant).acquire(wait=False)
        lock.renew()


def test_sqlite_lost_lease_is_noticed(tmp_path: Path, tenant: str) -> None:
    from sync.store import make_engine
    from sync.store.migrate import upgrade

    url = f"sqlite:///{tmp_path}/lost.db"
    upgrade(url)
    engine = make_engine(url)
    lock = TenantLock(engine, tenant, lease_seconds=30)
    lock.acquire()
    with engine.begin() as conn:  # another host took over an (apparently) expired lease
        conn.execute(sync_lease.update().values(holder="thief:1",
                                                expires_at=utcnow() + timedelta(seconds=30)))
    with pytest.raises(StoreError, match="lost"):
        lock.renew()
    assert not lock.held
    lock.release()  # does not delete the thief's lease
    with engine.connect() as conn:
        assert conn.scalar(select(sync_lease.c.holder)) == "thief:1"
    engine.dispose()


def test_a_killed_holder_stops_blocking(engine: Engine, tenant: str,
                                        child: subprocess.Popen[str]) -> None:
    lock = TenantLock(engine, tenant, lease_seconds=2)
    with pytest.raises(LockBusy, match="child"):
        lock.acquire(wait=False)
    os.kill(child.pid, signal.SIGKILL)
    child.wait()
    killed = time.monotonic()
    lock.acquire(timeout=10)
    waited = time.monotonic() - killed
    try:
        assert lock.held
        # PostgreSQL frees the lock with the connection; SQLite waits for the 1.5 s lease
        limit = 1.0 if engine.dialect.name == "postgresql" else 1.5 + 1.0
        assert waited < limit, waited
    finally:
        lock.release()


def test_a_dead_holder_on_this_host_is_not_waited_for(tmp_path: Path, tenant: str) -> None:
    """kill -9 leaves a SQLite lease behind; a process of this host that is gone is known to
    hold nothing, so its 60 s lease is not waited out."""
    from sync.store import make_engine
    from sync.store.migrate import upgrade

    url = f"sqlite:///{tmp_path / 'lease.db'}"
    upgrade(url)
    proc = subprocess.Popen(
        [sys.executable, "-c", HOLDER, url, tenant, "60", "default"], stdout=subprocess.PIPE,
        text=True, cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert proc.stdout is not None and proc.stdout.readline().strip() == "ACQUIRED"
    engine = make_engine(url)
    lock = TenantLock(engine, tenant, lease_seconds=60)
    try:
        with pytest.raises(LockBusy, match=f"process {proc.pid} on host "):
            lock.acquire(wait=False)  # alive: busy
        proc.kill()
        proc.wait()
        lock.acquire(wait=False)  # dead: taken at once
        assert lock.held
    finally:
        lock.release()
        proc.kill()
        engine.dispose()


@pytest.mark.postgres
def test_postgresql_lock_dies_with_its_connection(pg_url: str, tenant: str) -> None:
    from sync.store import make_engine

    engine = make_engine(pg_url)
    try:
        lock = TenantLock(engine, tenant)
        lock.acquire()
        assert lock._conn is not None
        with engine.connect() as conn:
            holders = conn.scalar(select(sync_lease.c.holder).where(sync_lease.c.tenant == tenant))
            assert holders == lock.holder
        backend = lock._conn.scalar(text("SELECT pg_backend_pid()"))
        with engine.connect() as conn:  # the session ends, as when the process dies
            conn.execute(text("SELECT pg_terminate_backend(:pid)"), {"pid": backend})
        time.sleep(0.1)
        contender = TenantLock(engine, tenant)
        contender.acquire(wait=False)
        contender.release()
        assert not lock.held or not lock._beat()  # the heartbeat notices the loss
        assert not lock.held
        lock.release()
    finally:
        engine.dispose()


def test_a_holder_reads_as_a_process_on_a_host() -> None:
    # it read `vm:10897@4026531836 #b7d558` in the lock-wait message
    assert describe_holder("vm:10897@4026531836 #b7d558") == "process 10897 on host vm"
    assert describe_holder(default_holder()).startswith(f"process {os.getpid()} on host ")
    assert describe_holder("something else") == "something else"
