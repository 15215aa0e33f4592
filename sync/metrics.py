"""Prometheus metrics of the daemon, served on /metrics. Every name starts with `crm_sync_`.

Each `Metrics` has its own CollectorRegistry (not prometheus-client's global one): two daemons in
one test process, or a test and the daemon it starts, never mix their counts, and the process
collectors of the default registry stay out of our namespace.

The gauges about the tenant's backlog (pending creates, rows in error, open conflicts, last
success) are read from the shared bookkeeping tables, so every replica of an HA group reports
the same tenant-wide values, whichever replica ran the last cycle.
"""

from __future__ import annotations

from datetime import datetime

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    Info,
    disable_created_metrics,
    generate_latest,
)
from sqlalchemy import Engine, func, select

from sync import __version__
from sync.api.client import RequestEvent
from sync.cycle import COUNTERS, CycleResult
from sync.store.schema import sync_runs
from sync.store.state import StateStore

__all__ = ["ACTIONS", "SUCCESS", "Metrics", "last_success"]

# No `*_created` series: they double the exposition and no dashboard of ours reads them.
disable_created_metrics()  # type: ignore[no-untyped-call]

# The per-contact actions a cycle counts (COUNTERS without conflicts/errors, which are gauges
# of the backlog instead: what matters is how many are open now, not how often they happened).
ACTIONS = tuple(c for c in COUNTERS if c not in ("conflicts", "errors"))
# Run statuses that count as a successful cycle: `partial` completed; its failing rows are
# visible through crm_sync_rows_in_error, and one bad row must not make the service "down".
SUCCESS = frozenset({"ok", "partial"})
# Cycles last from a fraction of a second (nothing changed) to an hour (first full import).
_CYCLE_BUCKETS = (0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600, 1800, 3600, float("inf"))
_REQUEST_BUCKETS = (0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, float("inf"))


def last_success(db: Engine, tenant: str) -> datetime | None:
    """When the newest successful cycle of the tenant finished, whichever process ran it."""
    query = select(func.max(sync_runs.c.finished_at)).where(
        sync_runs.c.tenant == tenant, sync_runs.c.status.in_(sorted(SUCCESS)))
    with db.connect() as conn:
        value: datetime | None = conn.scalar(query)
    return value


class Metrics:
    """The daemon's metrics; `render()` gives the Prometheus text exposition."""

    def __init__(self) -> None:
        self.registry = r = CollectorRegistry()
        self._last_success_ts = 0.0
        self.cycles = Counter(
            "crm_sync_cycles", "Sync cycles by kind (sync, full) and result (ok, partial, "
            "failed, refused, error; skipped_locked: another process held the tenant lock; "
            "skipped_busy: this process was still running a cycle).",
            ["kind", "result"], registry=r)
        self.contacts = Counter(
            "crm_sync_contacts", "Contacts handled by cycles, by action (pulled, created_local, "
            "updated_local, deleted_local, created_remote, updated_remote, deleted_remote).",
            ["action"], registry=r)
        self.api_requests = Counter(
            "crm_sync_api_requests", "HTTP requests sent to the OMICall API, retries included, "
            "by endpoint and HTTP status (`error`: no response: connection failure or timeout).",
            ["endpoint", "status"], registry=r)
        self.api_duration = Histogram(
            "crm_sync_api_request_duration_seconds", "OMICall API request latency by endpoint.",
            ["endpoint"], buckets=_REQUEST_BUCKETS, registry=r)
        self.cycle_duration = Histogram(
            "crm_sync_cycle_duration_seconds", "Duration of completed cycles, by kind.",
            ["kind"], buckets=_CYCLE_BUCKETS, registry=r)
        self.last_success = Gauge(
            "crm_sync_last_success_timestamp_seconds", "Unix time the newest successful cycle "
            "of this tenant (by any replica) finished; 0 before the first.", registry=r)
        self.pending_creates = Gauge(
            "crm_sync_pending_creates", "Contacts sent through add-more and not yet seen in "
            "the CRM.", registry=r)
        self.rows_in_error = Gauge(
            "crm_sync_rows_in_error", "Contacts whose last sync attempt failed.", registry=r)
        self.open_conflicts = Gauge(
            "crm_sync_open_conflicts", "Conflicts waiting for a decision (policy manual).",
            registry=r)
        self.lock_held = Gauge(
            "crm_sync_lock_held", "1 while this process holds the tenant lock (runs a cycle).",
            registry=r)
        Info("crm_sync_build", "The crm-sync version.", registry=r).info(
            {"version": __version__})
        for action in ACTIONS:  # present (at 0) from the start: rate() needs a first sample
            self.contacts.labels(action)

    def observe_cycle(self, result: CycleResult) -> None:
        self.cycles.labels(result.kind, result.status).inc()
        for action in ACTIONS:
            n = result.counts.get(action, 0)
            if n:
                self.contacts.labels(action).inc(n)
        self.cycle_duration.labels(result.kind).observe(max(0.0, result.duration_s))
        self.rows_in_error.set(result.rows_in_error)
        self.open_conflicts.set(result.open_conflicts)
        if result.status in SUCCESS:
            self.note_success(result.finished_at)

    def observe_outcome(self, kind: str, result: str) -> None:
        """A tick that ran no cycle (skipped_locked, skipped_busy) or whose cycle raised."""
        self.cycles.labels(kind, result).inc()

    def observe_request(self, event: RequestEvent) -> None:
        """The API client's on_request hook: called once per HTTP attempt."""
        status = str(event.status) if event.status is not None else "error"
        self.api_requests.labels(event.endpoint, status).inc()
        self.api_duration.labels(event.endpoint).observe(max(0.0, event.duration_s))

    def note_success(self, finished_at: datetime) -> None:
        # Never move backwards: the database's value and our own may arrive in either order.
        ts = finished_at.timestamp()
        if ts > self._last_success_ts:
            self._last_success_ts = ts
            self.last_success.set(ts)

    def refresh(self, store: StateStore) -> None:
        """The tenant-wide gauges, from the shared bookkeeping tables (so that standbys report
        them too). SQLAlchemyError when the database is unreachable."""
        states = store.counts()
        self.pending_creates.set(states.get("pending_create", 0))
        self.rows_in_error.set(store.count_errors())
        self.open_conflicts.set(store.count_open_conflicts())
        last = last_success(store.engine, store.tenant)
        if last is not None:
            self.note_success(last)

    def render(self) -> tuple[bytes, str]:
        return generate_latest(self.registry), CONTENT_TYPE_LATEST
