"""One sync at a time per tenant, across processes and hosts, enforced through the database.

PostgreSQL: a session advisory lock (`pg_try_advisory_lock`, key derived from the tenant) held
on a dedicated connection for the lock's lifetime. A holder that dies, even by kill -9, loses
its connection and the server frees the lock at once. The holder is also written to
`sync_lease`, for display only.

SQLite and other databases: a lease row in `sync_lease` taken atomically (an UPDATE that only
succeeds when the lease expired or is ours, else an INSERT that fails when the row exists) and
renewed by a heartbeat thread every lease/3. A holder that dies stops blocking others when its
lease expires (30 s by default), or at once for a process of the same host and PID namespace
that is known to be gone.
"""

from __future__ import annotations

import os
import secrets
import socket
import threading
import time
from collections.abc import Callable
from datetime import datetime, timedelta
from hashlib import blake2b
from types import TracebackType
from typing import Any

from sqlalchemy import Connection, Engine, or_, select, text
from sqlalchemy.dialects import postgresql
from sqlalchemy.exc import DBAPIError, IntegrityError, SQLAlchemyError

from sync.errors import LockBusy, StoreError
from sync.store.schema import sync_lease, utcnow

__all__ = ["TenantLock", "advisory_key", "default_holder", "describe_holder"]


def _pid_namespace() -> str:
    try:
        return os.readlink("/proc/self/ns/pid").removeprefix("pid:[").rstrip("]")
    except OSError:
        return "?"


def default_holder() -> str:
    """`host:pid@pidns`: the namespace tells apart containers that share a hostname (a pod)."""
    return f"{socket.gethostname()}:{os.getpid()}@{_pid_namespace()}"


def _parts(holder: str) -> tuple[str, str, str]:
    """(host, pid, PID namespace) of a holder `default_holder` wrote (then ` #` and a tag)."""
    host, _, rest = holder.split(" #", 1)[0].rpartition(":")
    pid, _, ns = rest.partition("@")
    return host, pid, ns


def describe_holder(holder: str) -> str:
    """A holder as a person reads it: `process 10897 on host vm` (the raw form if it is not
    one of ours: another version may write another)."""
    host, pid, _ = _parts(holder)
    return f"process {pid} on host {host}" if host and pid.isdigit() else holder


def _dead_here(holder: str) -> bool:
    """True when `holder` names a process of this host and PID namespace that no longer runs:
    its lease need not be waited out (a `kill -9` leaves one behind)."""
    host, pid, ns = _parts(holder)
    if host != socket.gethostname() or ns != _pid_namespace() or ns == "?" or not pid.isdigit():
        return False
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        return False  # alive, under another user
    return False


def advisory_key(tenant: str) -> int:
    """A stable, positive 63-bit key for pg_advisory_lock, derived from the tenant."""
    digest = blake2b(f"crm-sync:{tenant}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") & ((1 << 63) - 1)


class TenantLock:
    """`with TenantLock(engine, "acme"):` runs one sync while no other process syncs "acme"."""

    def __init__(self, engine: Engine, tenant: str, *, holder: str | None = None,
                 lease_seconds: float = 30) -> None:
        if lease_seconds <= 0:
            raise ValueError("lease_seconds must be positive")
        self.engine, self.tenant, self.lease_seconds = engine, tenant, float(lease_seconds)
        # what sync_lease shows: "host:pid" plus a token telling this lock object apart
        self.holder = f"{holder or default_holder()} #{secrets.token_hex(3)}"
        self._pg = engine.dialect.name == "postgresql"
        self._conn: Connection | None = None  # PostgreSQL: the connection holding the lock
        self._mutex = threading.Lock()
        self._stop = threading.Event()
        self._beater: threading.Thread | None = None
        self._held = False

    @property
    def held(self) -> bool:
        """True while this object holds the lock (False once a heartbeat found it lost)."""
        return self._held

    # --- acquire / release -----------------------------------------------------------------

    def acquire(self, wait: bool = True, timeout: float | None = None,
                on_wait: Callable[[str], None] | None = None) -> None:
        """Take the lock, waiting for it unless `wait` is False (then LockBusy at once).

        `on_wait(holder)` is called when the lock is found busy, and again when the holder
        changes. LockBusy names the holder when `timeout` seconds pass without the lock.
        """
        if self._held:
            raise StoreError(f"the lock of tenant {self.tenant!r} is already held by this object")
        deadline = None if timeout is None else time.monotonic() + timeout
        poll = min(1.0, self.lease_seconds / 4)
        seen: str | None = None
        while True:
            busy = self._try_acquire()
            if busy is None:
                self._held = True
                self._start_heartbeat()
                return
            holder, expires = busy
            now = time.monotonic()
            if not wait or (deadline is not None and now >= deadline):
                lease = "" if expires is None else f" (lease until {expires:%Y-%m-%d %H:%M:%S} UTC)"
                raise LockBusy(f"tenant {self.tenant!r} is being synced by "
                               f"{describe_holder(holder)}{lease}")
            if on_wait is not None and holder != seen:
                on_wait(holder)
            seen = holder
            time.sleep(poll if deadline is None else max(0.0, min(poll, deadline - now)))

    def release(self) -> None:
        """Give the lock up (a no-op when not held)."""
        self._stop.set()
        if self._beater is not None and self._beater is not threading.current_thread():
            self._beater.join()
        self._beater = None
        with self._mutex:
            was_held, self._held = self._held, False
            if self._pg:
                self._close_pg()
            elif was_held:
                try:
                    with self.engine.begin() as conn:
                        conn.execute(sync_lease.delete().where(self._mine()))
                except DBAPIError:
                    pass  # the database is busy or gone: the lease expires on its own

    def renew(self) -> None:
        """Extend the lease now (the heartbeat thread also does it); StoreError if lost."""
        if not self._held or not self._beat():
            raise StoreError(f"lost the lock of tenant {self.tenant!r}")

    def __enter__(self) -> TenantLock:
        self.acquire()
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.release()

    # --- the two mechanisms ----------------------------------------------------------------

    def _mine(self) -> Any:
        return (sync_lease.c.tenant == self.tenant) & (sync_lease.c.holder == self.holder)

    def _lease_values(self) -> dict[str, Any]:
        now = utcnow()
        return {"holder": self.holder, "acquired_at": now,
                "expires_at": now + timedelta(seconds=self.lease_seconds)}

    def _try_acquire(self) -> tuple[str, datetime | None] | None:
        """None when taken, else who holds it (and until when, for a lease)."""
        return self._try_pg() if self._pg else self._try_lease()

    def _try_lease(self) -> tuple[str, datetime | None] | None:
        values, c = self._lease_values(), sync_lease.c
        with self.engine.begin() as conn:
            taken = conn.execute(sync_lease.update().where(
                c.tenant == self.tenant,
                or_(c.expires_at < values["acquired_at"], c.holder == self.holder),
            ).values(values))
            if taken.rowcount == 1:
                return None
        try:
            with self.engine.begin() as conn:
                conn.execute(sync_lease.insert().values(tenant=self.tenant, **values))
            return None
        except IntegrityError:
            holder, expires = self._current_holder()
        if _dead_here(holder):
            with self.engine.begin() as conn:  # only if that dead holder still has it
                taken = conn.execute(sync_lease.update().where(
                    c.tenant == self.tenant, c.holder == holder).values(values))
            if taken.rowcount == 1:
                return None
        return holder, expires

    def _try_pg(self) -> tuple[str, datetime | None] | None:
        conn = self.engine.connect().execution_options(isolation_level="AUTOCOMMIT")
        try:
            got = conn.scalar(text("SELECT pg_try_advisory_lock(:k)"),
                              {"k": advisory_key(self.tenant)})
        except BaseException:
            conn.close()
            raise
        if not got:
            conn.close()
            return self._current_holder()
        conn.detach()  # never back to the pool: closing it really ends the session
        self._conn = conn
        try:
            stmt = postgresql.insert(sync_lease).values(tenant=self.tenant,
                                                        **self._lease_values())
            conn.execute(stmt.on_conflict_do_update(
                index_elements=["tenant"], set_=dict(stmt.excluded.items())))
        except BaseException:
            self._close_pg()
            raise
        return None

    def _close_pg(self) -> None:
        conn, self._conn = self._conn, None
        if conn is None:
            return
        try:
            conn.execute(sync_lease.delete().where(self._mine()))
            conn.execute(text("SELECT pg_advisory_unlock(:k)"), {"k": advisory_key(self.tenant)})
        except SQLAlchemyError:
            conn.invalidate()  # the connection is gone (and the lock with it), or now is
        finally:
            conn.close()

    def _current_holder(self) -> tuple[str, datetime | None]:
        with self.engine.connect() as conn:
            row = conn.execute(select(sync_lease.c.holder, sync_lease.c.expires_at)
                               .where(sync_lease.c.tenant == self.tenant)).first()
        if row is None:
            return "another process (no holder recorded)", None
        # PostgreSQL's lock has no lease: the row only names the holder
        return str(row.holder), None if self._pg else row.expires_at

    # --- heartbeat -------------------------------------------------------------------------

    def _start_heartbeat(self) -> None:
        self._stop.clear()
        self._beater = threading.Thread(target=self._heartbeat, daemon=True,
                                        name=f"crm-sync-lock-{self.tenant}")
        self._beater.start()

    def _heartbeat(self) -> None:
        while not self._stop.wait(self.lease_seconds / 3):
            try:
                if not self._beat():
                    return
            except DBAPIError:
                continue  # e.g. SQLite busy for longer than busy_timeout: try again next beat

    def _beat(self) -> bool:
        """Extend the lease; False (and `held` becomes False) when the lock was lost."""
        with self._mutex:
            if not self._held:
                return False
            expires = utcnow() + timedelta(seconds=self.lease_seconds)
            if self._pg:
                alive = self._beat_pg(expires)
            else:
                with self.engine.begin() as conn:
                    alive = conn.execute(sync_lease.update().where(self._mine())
                                         .values(expires_at=expires)).rowcount == 1
            if not alive:
                self._held = False
                if self._pg:
                    self._close_pg()
            return alive

    def _beat_pg(self, expires: datetime) -> bool:
        if self._conn is None:
            return False
        try:
            self._conn.execute(sync_lease.update().where(self._mine())
                               .values(expires_at=expires))
            return True
        except SQLAlchemyError:
            return False  # the session died: the server has released the lock
