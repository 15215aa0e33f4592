"""sync.metrics: names, labels and isolation of the daemon's Prometheus metrics."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy import Engine

from sync.api.client import RequestEvent
from sync.cycle import COUNTERS, CycleResult
from sync.metrics import ACTIONS, Metrics
from sync.store import make_engine
from sync.store.migrate import upgrade
from sync.store.state import StateStore

T0 = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)


def result(status: str = "ok", kind: str = "sync", **counts: int) -> CycleResult:
    return CycleResult(run_id=1, kind=kind, status=status,  # type: ignore[arg-type]
                       counts={k: counts.get(k, 0) for k in COUNTERS},
                       api_calls={"list": 2}, started_at=T0,
                       finished_at=T0 + timedelta(seconds=2.5), rows_in_error=3,
                       open_conflicts=1)


def samples(m: Metrics) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    text = m.render()[0].decode()
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for fam in text_string_to_metric_families(text) for s in fam.samples}


def test_every_name_is_prefixed_and_there_are_no_created_series() -> None:
    body, content_type = Metrics().render()
    assert content_type.startswith("text/plain")
    names = {line.split("{")[0].split(" ")[0] for line in body.decode().splitlines()
             if line and not line.startswith("#")}
    assert names and all(n.startswith("crm_sync_") for n in names), names
    assert not any(n.endswith("_created") for n in names)


def test_a_cycle_counts_its_result_contacts_and_duration() -> None:
    m = Metrics()
    m.observe_cycle(result(pulled=10, created_local=4, updated_remote=2, conflicts=1))
    m.observe_cycle(result(status="failed"))
    s = samples(m)
    assert s[("crm_sync_cycles_total", (("kind", "sync"), ("result", "ok")))] == 1
    assert s[("crm_sync_cycles_total", (("kind", "sync"), ("result", "failed")))] == 1
    assert s[("crm_sync_contacts_total", (("action", "pulled"),))] == 10
    assert s[("crm_sync_contacts_total", (("action", "created_local"),))] == 4
    assert s[("crm_sync_contacts_total", (("action", "updated_remote"),))] == 2
    assert s[("crm_sync_contacts_total", (("action", "deleted_remote"),))] == 0
    assert s[("crm_sync_cycle_duration_seconds_count", (("kind", "sync"),))] == 2
    assert s[("crm_sync_cycle_duration_seconds_sum", (("kind", "sync"),))] == 5.0
    assert s[("crm_sync_rows_in_error", ())] == 3
    assert s[("crm_sync_open_conflicts", ())] == 1
    # only the successful cycle moved the last-success time
    assert s[("crm_sync_last_success_timestamp_seconds", ())] == (
        T0 + timedelta(seconds=2.5)).timestamp()


def test_last_success_never_goes_back_and_partial_counts_as_success() -> None:
    m = Metrics()
    m.note_success(T0)
    m.observe_cycle(result(status="partial"))
    m.note_success(T0 - timedelta(hours=1))  # an older value read from the database
    assert samples(m)[("crm_sync_last_success_timestamp_seconds", ())] == (
        T0 + timedelta(seconds=2.5)).timestamp()


def test_requests_by_endpoint_and_status_and_skips() -> None:
    m = Metrics()
    m.observe_request(RequestEvent("list", "POST", 200, 0.01, 1))
    m.observe_request(RequestEvent("list", "POST", 429, 0.01, 1))
    m.observe_request(RequestEvent("add_more", "POST", None, 5.0, 2, "timeout"))
    m.observe_outcome("full", "skipped_locked")
    s = samples(m)
    assert s[("crm_sync_api_requests_total", (("endpoint", "list"), ("status", "200")))] == 1
    assert s[("crm_sync_api_requests_total", (("endpoint", "list"), ("status", "429")))] == 1
    assert s[("crm_sync_api_requests_total", (("endpoint", "add_more"), ("status", "error")))] \
        == 1
    assert s[("crm_sync_cycles_total", (("kind", "full"), ("result", "skipped_locked")))] == 1


class Backlog:
    """What Metrics.refresh reads of a StateStore, over a real (migrated) database."""

    def __init__(self, engine: Engine, tenant: str) -> None:
        self.engine, self.tenant = engine, tenant

    def counts(self) -> dict[str, int]:
        return {"pending_create": 7, "error": 1, "synced": 100}

    def count_open_conflicts(self) -> int:
        return 4

    def count_errors(self) -> int:
        return 2  # status error, and errors that kept their status


def test_refresh_reads_the_tenant_wide_backlog_and_last_success(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path}/m.db"
    upgrade(url)
    engine = make_engine(url)
    store = StateStore(engine, "acme")
    run = store.start_run("sync")
    store.finish_run(run, status="ok", counts={}, api_calls={})  # by another replica, say
    m = Metrics()
    m.refresh(Backlog(engine, "acme"))  # type: ignore[arg-type]
    s = samples(m)
    assert s[("crm_sync_pending_creates", ())] == 7
    assert s[("crm_sync_rows_in_error", ())] == 2
    assert s[("crm_sync_open_conflicts", ())] == 4
    assert abs(s[("crm_sync_last_success_timestamp_seconds", ())] - time.time()) < 60
    engine.dispose()


def test_registries_are_isolated() -> None:
    a, b = Metrics(), Metrics()
    a.observe_cycle(result())
    assert ("crm_sync_cycles_total", (("kind", "sync"), ("result", "ok"))) not in samples(b)
    assert set(ACTIONS) == {"pulled", "created_local", "updated_local", "deleted_local",
                            "created_remote", "updated_remote", "deleted_remote"}
