"""Health and metrics over HTTP for `crm-sync run`, and the `crm-sync health` probe.

    /healthz   liveness: the process and its scheduler are alive (restart me when this fails)
    /readyz    readiness: the database answers and a cycle of this tenant succeeded recently
    /metrics   Prometheus text exposition (sync.metrics)

The server runs in the daemon's own event loop (uvicorn `Server.serve` as a task): if a cycle
ever blocked that loop, /healthz would stop answering, which is exactly what a liveness probe
should see. /readyz reads the database, so it runs in a worker thread and never stalls the loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import socket
import urllib.error
import urllib.request
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any, Protocol

import uvicorn
from sqlalchemy import Engine
from sqlalchemy.exc import SQLAlchemyError
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from sync.errors import ConfigError
from sync.metrics import Metrics, last_success
from sync.settings import Settings

__all__ = [
    "Check", "HealthServer", "HealthSource", "create_app", "liveness_check", "probe",
    "probe_url", "readiness_check",
]

Check = tuple[bool, dict[str, Any]]


class HealthSource(Protocol):
    """What the daemon tells the health endpoints."""

    def liveness(self) -> Check: ...

    def readiness(self) -> Check:  # may do blocking I/O: called in a worker thread
        ...


def liveness_check(*, scheduler: str | None, stopping: bool, role: str, busy: bool,
                   since_tick: float, interval: float) -> Check:
    """Alive: the scheduler runs and ticks. Starting (no scheduler yet) is not alive, so a
    daemon stuck waiting for its database gets restarted once the probe's patience ends."""
    detail: dict[str, Any] = {"role": role, "cycle_running": busy,
                              "seconds_since_tick": round(since_tick, 1)}
    if stopping:
        return True, {**detail, "stopping": True}
    if scheduler is None:
        return False, {**detail, "scheduler": "not started (waiting for the database)"}
    detail["scheduler"] = scheduler
    if scheduler != "running":
        return False, detail
    # A scheduler that silently stopped ticking is dead even if the object says running.
    if not busy and since_tick > 2 * interval + 60:
        return False, {**detail, "reason": f"no tick for {since_tick:.0f}s"}
    return True, detail


def readiness_check(db: Engine | None, settings: Settings, *, stopping: bool, role: str
                    ) -> Check:
    """Ready: the database answers and the tenant's newest successful cycle, by this replica
    or by another holder of the lock, is at most ready_max_age_seconds old. A standby of an HA
    group is thus ready while the group syncs: it can take over at any tick."""
    if stopping:
        return False, {"reason": "stopping"}
    if db is None:
        return False, {"reason": "starting: the database is not reachable yet"}
    try:
        last = last_success(db, settings.tenant_id)
    except SQLAlchemyError as exc:
        first = (str(exc).strip().splitlines() or [""])[0][:300]
        return False, {"database": "unreachable", "error": f"{type(exc).__name__}: {first}"}
    max_age = settings.ready_max_age_seconds
    detail: dict[str, Any] = {"database": "ok", "role": role, "max_age_seconds": max_age,
                              "last_success": last.isoformat() if last else None}
    if last is None:
        return False, {**detail, "reason": "no successful cycle yet"}
    age = (datetime.now(UTC) - last).total_seconds()
    detail["age_seconds"] = round(age, 1)
    if age > max_age:
        return False, {**detail, "reason": "the last successful cycle is too old"}
    return True, detail


def _answer(check: Check) -> JSONResponse:
    ok, detail = check
    return JSONResponse({"status": "ok" if ok else "fail", **detail},
                        status_code=200 if ok else 503)


def create_app(source: HealthSource, metrics: Metrics) -> Starlette:
    async def healthz(_: Request) -> Response:
        return _answer(source.liveness())

    async def readyz(_: Request) -> Response:
        return _answer(await run_in_threadpool(source.readiness))

    async def metrics_page(_: Request) -> Response:
        body, content_type = metrics.render()
        return Response(body, media_type=content_type)

    return Starlette(routes=[Route("/healthz", healthz), Route("/readyz", readyz),
                             Route("/metrics", metrics_page)])


class _Server(uvicorn.Server):
    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        # The daemon owns SIGTERM/SIGINT (it must finish the cycle first); uvicorn's own
        # handlers would replace ours and re-raise the signal after its shutdown.
        yield


class HealthServer:
    """uvicorn on a socket we bind ourselves: a busy port is a clear ConfigError at start, and
    port 0 (tests) picks a free port whose number `port` then tells."""

    def __init__(self, app: Starlette, host: str, port: int) -> None:
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        self._socket = socket.socket(family, socket.SOCK_STREAM)
        self._socket.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            self._socket.bind((host, port))
        except OSError as exc:
            self._socket.close()
            raise ConfigError(f"CRM_SYNC_HEALTH_HOST/CRM_SYNC_HEALTH_PORT: cannot listen on "
                              f"{host}:{port}: {exc.strerror}") from None
        self.host, self.port = host, int(self._socket.getsockname()[1])
        # log_config=None: uvicorn must not reconfigure logging (the daemon routes it to
        # structlog); no access log: probes every few seconds would drown the sync's lines.
        self._server = _Server(uvicorn.Config(
            app, log_config=None, access_log=False, lifespan="off",
            timeout_graceful_shutdown=1))
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        self._task = asyncio.create_task(self._server.serve(sockets=[self._socket]),
                                         name="crm-sync-health")
        while not self._server.started:
            if self._task.done():  # failed to start: surface its exception
                await self._task
                raise RuntimeError("the health server stopped during start-up")
            await asyncio.sleep(0.01)

    async def stop(self, timeout: float = 2.0) -> None:
        self._server.should_exit = True
        if self._task is not None:
            with contextlib.suppress(asyncio.TimeoutError, asyncio.CancelledError):
                await asyncio.wait_for(self._task, timeout)
        self._socket.close()


# --- `crm-sync health` -------------------------------------------------------------------------

def probe_url(host: str, port: int) -> str:
    """Where to reach the daemon of these settings from the same host (or container)."""
    if host in ("", "0.0.0.0"):
        host = "127.0.0.1"
    elif host == "::":
        host = "::1"
    return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"


def _get(url: str, timeout: float) -> tuple[int | None, str]:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            return int(response.status), response.read(4096).decode("utf-8", "replace")
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read(4096).decode("utf-8", "replace")
    except (urllib.error.URLError, OSError) as exc:
        reason = getattr(exc, "reason", exc)
        return None, f"unreachable: {reason}"


def _summary(body: str) -> str:
    try:
        data = json.loads(body)
    except ValueError:
        return body.strip()[:200]
    if not isinstance(data, dict):
        return body.strip()[:200]
    return ", ".join(f"{k}={v}" for k, v in data.items() if k != "status")


def probe(base_url: str, *, live_only: bool = False, timeout: float = 3.0
          ) -> tuple[bool, list[str]]:
    """GET /healthz (and /readyz unless live_only): (all answered 200, one line per endpoint).
    Uses urllib, not httpx: a container HEALTHCHECK runs this every few seconds, so it stays
    light."""
    base = base_url.rstrip("/")
    ok, lines = True, []
    for path in ("/healthz",) if live_only else ("/healthz", "/readyz"):
        status, body = _get(base + path, timeout)
        good = status == 200
        ok = ok and good
        shown = "no answer" if status is None else str(status)
        lines.append(f"{path}: {'ok' if good else 'FAIL'} ({shown}) {_summary(body)}".rstrip())
    return ok, lines
