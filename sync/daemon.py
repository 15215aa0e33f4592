"""`crm-sync run`: a cycle at start and every CRM_SYNC_INTERVAL_SECONDS, a full reconcile on
CRM_SYNC_FULL_SYNC_CRON, health and metrics over HTTP, systemd notifications.

One event loop runs it all: APScheduler's AsyncIOScheduler (the cycle is a coroutine), the
health server, the signal handlers. Never two cycles at once: in this process, max_instances=1
and one asyncio.Lock for both jobs (a sync tick finding it taken is skipped; a full reconcile
waits its turn, skipping it would lose a day); across processes and hosts, the tenant's
database lock, tried without waiting on every tick: a replica finding it held skips the tick
(HA standbys do just that), and as it is taken per cycle, a dead holder (kill -9 frees a
PostgreSQL advisory lock with its connection) is replaced at the next tick of another. A
failing cycle is logged, counted and retried next tick. SIGTERM/SIGINT: no new ticks, the
running cycle gets STOP_GRACE_SECONDS to finish, then is cancelled (each chunk commits on its
own), its run closed and the lock released; exit 0 within 10 s. A second signal cancels at once.
"""

from __future__ import annotations

import asyncio
import logging
import signal
import sys
import threading
import time
from collections.abc import Callable
from contextlib import suppress
from datetime import UTC, datetime
from typing import Any, TypeVar

import structlog
from apscheduler.schedulers.asyncio import AsyncIOScheduler
from apscheduler.schedulers.base import STATE_PAUSED, STATE_RUNNING
from apscheduler.triggers.cron import CronTrigger
from apscheduler.triggers.interval import IntervalTrigger
from sqlalchemy.exc import SQLAlchemyError

from sync import logs
from sync.cycle import CycleOptions, CycleResult
from sync.errors import ConfigError, LockBusy
from sync.health import Check, HealthServer, create_app, liveness_check, readiness_check
from sync.metrics import Metrics
from sync.notify import notify, watchdog, watchdog_period
from sync.runtime import Runtime, build_runtime
from sync.settings import Settings, require_api_key
from sync.store.state import StateStore

__all__ = ["Daemon", "full_sync_trigger", "run_daemon"]

log = structlog.get_logger("crm_sync.daemon")
T = TypeVar("T")

STOP_GRACE_SECONDS = 4.0  # a running cycle may finish on its own this long after SIGTERM...
CANCEL_WAIT_SECONDS = 3.0  # ...then it is cancelled and its cleanup gets this long (< 10 s)
FULL_MISFIRE_GRACE = 3600  # a nightly full reconcile still runs if up to an hour late


def run_daemon(settings: Settings) -> int:
    require_api_key(settings, "the daemon cannot reach the CRM without it")
    # Logs to stdout (journald, `docker logs`); JSON unless stdout is a terminal.
    logs.configure(settings.log_format, settings.log_level, stream=sys.stdout)
    _route_stdlib_logging(settings.log_level)
    try:
        return asyncio.run(Daemon(settings).run())
    finally:
        sys.stdout.flush()
        sys.stderr.flush()


def full_sync_trigger(cron: str) -> CronTrigger:
    """The full reconcile's trigger (in the host's time zone); ConfigError names the setting."""
    try:
        return CronTrigger.from_crontab(cron)
    except ValueError as exc:
        raise ConfigError(f"CRM_SYNC_FULL_SYNC_CRON={cron!r}: {exc} (five fields: minute hour "
                          "day-of-month month day-of-week, e.g. '0 3 * * *')") from None


class Daemon:
    def __init__(self, settings: Settings, *,
                 build: Callable[[Settings], Runtime] = build_runtime,
                 handle_signals: bool = True) -> None:
        self.settings, self._build, self._handle_signals = settings, build, handle_signals
        self.full_trigger = full_sync_trigger(settings.full_sync_cron)  # fail before starting
        self.metrics = Metrics()
        self.rt: Runtime | None = None
        self.scheduler: AsyncIOScheduler | None = None
        self.health: HealthServer | None = None
        self._stop = asyncio.Event()
        self._stopping = False
        self._busy = asyncio.Lock()  # one cycle at a time in this process
        self._jobs: set[asyncio.Task[Any]] = set()
        self._last_tick = time.monotonic()
        self.role = "starting"  # starting | active (ran the last tick) | standby | error

    # --- lifecycle --------------------------------------------------------------------------

    async def run(self) -> int:
        s, loop = self.settings, asyncio.get_running_loop()
        # Bound first: signal handlers and scheduler callbacks copy this context.
        structlog.contextvars.bind_contextvars(tenant=s.tenant_id)  # on every line
        if self._handle_signals:
            for sig in (signal.SIGTERM, signal.SIGINT):
                loop.add_signal_handler(sig, self.request_stop, sig.name)
        self.health = HealthServer(create_app(self, self.metrics), s.health_host, s.health_port)
        pinger: asyncio.Task[None] | None = None
        try:
            await self.health.start()
            period = watchdog_period()
            if period:
                # Starting (database retries) and stopping count as alive: the loop turns.
                pinger = asyncio.create_task(watchdog(period, lambda: self.rt is None or (
                    self._stopping or self.liveness()[0])), name="crm-sync-watchdog")
            self.rt = await self._start_runtime()
            if self.rt is not None:
                self.rt.on_request = self.metrics.observe_request
                _bind_run_ids(self.rt.store)
                self.scheduler = self._start_scheduler()
                notify("READY=1", f"STATUS=syncing {s.tenant_id} every {s.interval_seconds:g}s")
                full = self.scheduler.get_job("full")
                log.info("daemon.started", interval_s=s.interval_seconds,
                         full_sync_cron=s.full_sync_cron, health_port=self.health.port,
                         next_full=str(full.next_run_time) if full else None)
                await self._stop.wait()
            notify("STOPPING=1")
            await self._drain()
        finally:
            if self.scheduler is not None and self.scheduler.running:
                self.scheduler.shutdown(wait=False)
                await asyncio.sleep(0)  # the shutdown runs as a loop callback
            if pinger is not None:
                pinger.cancel()
            await self.health.stop()
            if self.rt is not None:
                self.rt.close()
            if self._handle_signals:
                for sig in (signal.SIGTERM, signal.SIGINT):
                    loop.remove_signal_handler(sig)
        log.info("daemon.stopped")
        return 0

    def request_stop(self, reason: str = "stop requested") -> None:
        if self._stopping:  # a second signal: do not wait for the cycle any more
            log.warning("daemon.stop_forced", reason=reason)
            for task in self._jobs:
                task.cancel()
            return
        self._stopping = True
        log.info("daemon.stopping", reason=reason, cycle_running=self._busy.locked())
        self._stop.set()

    async def _start_runtime(self) -> Runtime | None:
        """Build the runtime (migrations, table check), retrying while the database is not
        reachable yet (containers start in any order); None when stopped meanwhile."""
        delay = 1.0
        while not self._stopping:
            try:
                return await self._off_loop(self._build, self.settings)
            except SQLAlchemyError as exc:
                log.warning("daemon.database_unavailable", error=_short(exc), retry_in_s=delay)
            with suppress(TimeoutError):
                await asyncio.wait_for(self._stop.wait(), delay)
            delay = min(delay * 2, 30.0)
        return None

    async def _off_loop(self, fn: Callable[[Settings], T], arg: Settings) -> T | None:
        """fn(arg) in a daemon thread; None if a stop comes first. Not asyncio.to_thread: a
        connect hanging on an unreachable host would then delay the exit (its executor is
        joined at interpreter exit)."""
        loop, done = asyncio.get_running_loop(), asyncio.Event()
        box: list[tuple[T | None, BaseException | None]] = []

        def target() -> None:
            try:
                box.append((fn(arg), None))
            except BaseException as exc:
                box.append((None, exc))
            with suppress(RuntimeError):  # the loop is closed: nobody waits any more
                loop.call_soon_threadsafe(done.set)

        threading.Thread(target=target, name="crm-sync-startup", daemon=True).start()
        waits = {asyncio.ensure_future(done.wait()), asyncio.ensure_future(self._stop.wait())}
        await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
        for w in waits:
            w.cancel()
        if not box:
            return None
        result, error = box[0]
        if error is not None:
            raise error
        return result  # a T (None only when fn returned None)

    def _start_scheduler(self) -> AsyncIOScheduler:
        interval = self.settings.interval_seconds
        scheduler = AsyncIOScheduler(job_defaults={"max_instances": 1, "coalesce": True})
        scheduler.add_job(self._tick, IntervalTrigger(seconds=interval), args=["sync"],
                          id="sync", name="sync", next_run_time=datetime.now(UTC),
                          misfire_grace_time=max(1, int(interval)))
        scheduler.add_job(self._tick, self.full_trigger, args=["full"], id="full",
                          name="full reconcile", misfire_grace_time=FULL_MISFIRE_GRACE)
        scheduler.start()
        return scheduler

    async def _drain(self) -> None:
        if self.scheduler is not None and self.scheduler.state == STATE_RUNNING:
            self.scheduler.pause()  # no new ticks
        pending = {t for t in self._jobs if not t.done()}
        if pending:
            _, pending = await asyncio.wait(pending, timeout=STOP_GRACE_SECONDS)
        if pending:
            log.warning("daemon.cancelling_cycle", grace_s=STOP_GRACE_SECONDS)
            for task in pending:
                task.cancel()
            _, pending = await asyncio.wait(pending, timeout=CANCEL_WAIT_SECONDS)
            if pending:
                log.error("daemon.cycle_did_not_stop", waited_s=CANCEL_WAIT_SECONDS)
        await asyncio.sleep(0)  # ticks submitted just before the pause see _stopping and end

    # --- one tick ---------------------------------------------------------------------------

    async def _tick(self, kind: str) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._jobs.add(task)
        try:
            await self._tick_body(kind)
        except asyncio.CancelledError:
            if not self._stopping:
                raise
            # We cancelled it to stop in time; the cleanup already ran in _cycle's finally.
            log.warning("cycle.cancelled", kind=kind, reason="shutdown")
        finally:
            self._jobs.discard(task)

    async def _tick_body(self, kind: str) -> None:
        if self._stopping:
            return
        self._last_tick = time.monotonic()
        if kind == "sync" and self._busy.locked():
            log.info("cycle.skipped", kind=kind, reason="this process is still in a cycle")
            self.metrics.observe_outcome(kind, "skipped_busy")
            return
        async with self._busy:
            if self._stopping:
                return
            self._last_tick = time.monotonic()
            try:
                await self._cycle(kind)
            except Exception as exc:  # never the daemon's end: the next tick tries again
                self.role = "error"
                log.error("cycle.error", kind=kind, error=_short(exc), exc_info=True)
                self.metrics.observe_outcome(kind, "error")
            self._refresh_backlog()

    async def _cycle(self, kind: str) -> None:
        rt = self.rt
        assert rt is not None
        lock = rt.lock()
        try:
            lock.acquire(wait=False)  # one quick statement: not worth a thread hop
        except LockBusy as exc:
            self.role = "standby"
            log.info("cycle.skipped", kind=kind, reason="tenant lock held", detail=str(exc))
            self.metrics.observe_outcome(kind, "skipped_locked")
            return
        self.metrics.lock_held.set(1)
        finished = False
        try:
            rt.store.close_abandoned_runs()  # left `running` by a holder that was killed
            with structlog.contextvars.bound_contextvars(kind=kind):
                result = await rt.cycle(CycleOptions(full=kind == "full", kind=kind))
            finished = True
            self._record(result)
        finally:
            structlog.contextvars.unbind_contextvars("run_id")
            if not finished:  # raised or cancelled: its run row must not stay `running`
                with suppress(Exception):
                    rt.store.close_abandoned_runs()
            try:
                lock.release()
            except SQLAlchemyError as exc:  # PostgreSQL frees it with the connection anyway
                log.warning("lock.release_failed", error=_short(exc))
            self.metrics.lock_held.set(0)

    def _record(self, result: CycleResult) -> None:
        self.role = "active"
        self.metrics.observe_cycle(result)
        notify(f"STATUS=last cycle {result.kind} {result.status} at "
               f"{result.finished_at:%Y-%m-%d %H:%M:%S} UTC (run {result.run_id})")

    def _refresh_backlog(self) -> None:
        if self.rt is not None:
            try:
                self.metrics.refresh(self.rt.store)
            except SQLAlchemyError as exc:
                log.warning("metrics.refresh_failed", error=_short(exc))

    # --- health (sync.health.HealthSource) ----------------------------------------------------

    def liveness(self) -> Check:
        sched = self.scheduler
        state = None if sched is None else {STATE_RUNNING: "running", STATE_PAUSED: "paused"
                                            }.get(sched.state, "stopped")
        return liveness_check(scheduler=state, stopping=self._stopping, role=self.role,
                              busy=self._busy.locked(),
                              since_tick=time.monotonic() - self._last_tick,
                              interval=self.settings.interval_seconds)

    def readiness(self) -> Check:
        return readiness_check(None if self.rt is None else self.rt.db, self.settings,
                               stopping=self._stopping, role=self.role)


def _bind_run_ids(store: StateStore) -> None:
    """Every log line of a cycle must carry its run id, the API client's included. The engine
    binds run_id on its own logger only, and the id exists only once start_run has returned,
    inside the cycle's task: wrapping start_run binds it into that task's contextvars (tasks
    the engine starts afterwards inherit it). _cycle unbinds it when the cycle ends."""
    start_run = store.start_run

    def start_and_bind(kind: str) -> int:
        run_id = start_run(kind)
        structlog.contextvars.bind_contextvars(run_id=run_id)
        return run_id

    store.start_run = start_and_bind  # type: ignore[method-assign]


def _short(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0][:300] if text else ''}"


class _ToStructlog(logging.Handler):
    """Lines of libraries that use stdlib logging (uvicorn, APScheduler, SQLAlchemy) go
    through structlog too, so that stdout stays one JSON object per line."""

    def emit(self, record: logging.LogRecord) -> None:
        try:
            structlog.get_logger(record.name).log(
                record.levelno, record.getMessage(), logger=record.name,
                exc_info=record.exc_info or False)
        except Exception:
            self.handleError(record)


def _route_stdlib_logging(level: str) -> None:
    root = logging.getLogger()
    root.handlers[:] = [_ToStructlog()]
    root.setLevel(level.upper())
    # Their INFO lines repeat ours (every request, every job run): warnings and up only.
    for name in ("httpx", "httpcore", "uvicorn", "apscheduler"):
        logging.getLogger(name).setLevel(max(logging.WARNING, root.level))
