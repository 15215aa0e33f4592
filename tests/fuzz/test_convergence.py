"""Hypothesis fuzzes both sides and asserts they converge (vdirsyncer-style).

Random app edits in the local table, agent edits in the CRM emulator, deletes on both sides,
fault storms, a listing that lags the CRM's writes, and sync cycles interleave; at the end,
with faults off, a few cycles must bring both sides to the same contacts: no duplicates,
nothing lost, every row equal to its contact.
"""

from __future__ import annotations

import asyncio
import os
import tempfile
from pathlib import Path
from typing import Any

import httpx
import sqlalchemy as sa
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, rule

from sync.api.adapter import contact_from_wire
from sync.cycle import CycleOptions
from sync.emulator import Emulator, EmulatorConfig, create_app
from sync.runtime import Runtime, build_runtime
from sync.settings import load_settings

NAMES = st.sampled_from(["Nguyễn Thị Ánh Tuyết", "Trần Văn Tiến", "Lê Hoàng Nam", "Phạm Thu Hà",
                         "Đỗ Quang Huy", "Võ Minh Châu"])
PHONES = st.sampled_from(["0393123456", "84393123457", "+84 912 345 678", "0987654321",
                          "0901 222 333"])
EMAILS = st.sampled_from(["a@example.vn", "Tuyet.Nguyen@Example.VN", "huy@omi.vn", None])
JOBS = st.sampled_from(["Kế toán", "Giám đốc", "Nhân viên bán hàng", None])
TAGS = st.lists(st.sampled_from(["Khách lẻ", "VIP", "Đã gọi"]), max_size=2, unique=True)
REFS = st.sampled_from([f"KH-{i:03d}" for i in range(12)])


class Lagging(httpx.AsyncBaseTransport):
    """While `on`, the listing serves each page as it last served it (a CRM whose list lags
    its writes, by one cycle or more)."""

    def __init__(self, inner: httpx.AsyncBaseTransport) -> None:
        self.inner, self.on = inner, False
        self.pages: dict[tuple[str | None, str | None], bytes] = {}

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        if not request.url.path.endswith("/contacts/list"):
            return await self.inner.handle_async_request(request)
        page = (request.url.params.get("page"), request.url.params.get("size"))
        if self.on and page in self.pages:
            return httpx.Response(200, content=self.pages[page],
                                  headers={"content-type": "application/json"})
        response = await self.inner.handle_async_request(request)
        body = await response.aread()
        if response.status_code == 200:
            self.pages[page] = body
        return httpx.Response(response.status_code, content=body, headers=response.headers)


class SyncMachine(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.tmp = tempfile.TemporaryDirectory()
        self.emulator = Emulator(EmulatorConfig(contacts=6, seed=3, add_more_delay=0.0,
                                                retry_after=0.0, timeout_hang=0.0))
        self.transport = Lagging(httpx.ASGITransport(app=create_app(emulator=self.emulator)))
        s = load_settings(base_url="http://emulator", api_key="demo-key",
                          database_url=f"sqlite:///{Path(self.tmp.name) / 'fuzz.db'}",
                          pending_recheck_seconds=0, max_delete_fraction=1.0, max_retries=8,
                          backoff_max=0.001, page_size=4)
        self.rt: Runtime = build_runtime(s, transport=self.transport)
        self.table = self.rt.local.table
        self.cycle()

    def teardown(self) -> None:
        try:
            self.converged()
        finally:
            self.rt.close()
            self.tmp.cleanup()

    # --- helpers ---------------------------------------------------------------------------

    def cycle(self, full: bool = False) -> Any:
        return asyncio.run(self.rt.cycle(CycleOptions(full=full, kind="full" if full else "sync")))

    def rows(self) -> dict[str, dict[str, Any]]:
        with self.rt.db.connect() as conn:
            return {r["ref_id"]: dict(r) for r in conn.execute(sa.select(self.table)).mappings()}

    def live_ids(self) -> list[str]:
        return sorted(c["public_id"] for c in self.emulator.contacts())

    # --- the server: choices the contract leaves open --------------------------------------------

    @initialize(order=st.sampled_from(["created", "updated_desc", "public_id", "random"]),
                cap=st.sampled_from([2, 3, 100]), token_ttl=st.sampled_from([86400.0, 0.05]))
    def server(self, order: str, cap: int, token_ttl: float) -> None:
        """The list order, a page-size cap below the size asked for (4), tokens that expire
        between requests: the machine must converge under each."""
        self.emulator.configure(order=order, page_size_cap=cap, token_ttl=token_ttl)

    # --- the app, in the local table ----------------------------------------------------------

    @rule(ref=REFS, name=NAMES, phone=PHONES, email=EMAILS, tags=TAGS)
    def app_insert(self, ref: str, name: str, phone: str, email: str | None,
                   tags: list[str]) -> None:
        if ref in self.rows():
            return
        with self.rt.db.begin() as conn:
            conn.execute(self.table.insert().values(ref_id=ref, full_name=name, phone=phone,
                                                    email=email, tags=tags))

    @rule(data=st.data(), job=JOBS, phone=PHONES)
    def app_update(self, data: st.DataObject, job: str | None, phone: str) -> None:
        keys = [k for k in self.rows() if not k.startswith("crm:")]
        if not keys:
            return
        key = data.draw(st.sampled_from(sorted(keys)))
        values = data.draw(st.sampled_from([{"job_title": job}, {"phone": phone},
                                            {"job_title": job, "phone": phone}]))
        with self.rt.db.begin() as conn:
            conn.execute(self.table.update().where(self.table.c.ref_id == key).values(**values))

    @rule(data=st.data())
    def app_delete(self, data: st.DataObject) -> None:
        keys = sorted(self.rows())
        if keys:
            key = data.draw(st.sampled_from(keys))
            with self.rt.db.begin() as conn:
                conn.execute(self.table.delete().where(self.table.c.ref_id == key))

    # --- the agent, in the CRM ------------------------------------------------------------

    @rule(data=st.data(), job=JOBS, name=NAMES)
    def agent_update(self, data: st.DataObject, job: str | None, name: str) -> None:
        ids = self.live_ids()
        if ids:
            pid = data.draw(st.sampled_from(ids))
            self.emulator.agent_update(pid, job_title=job or "", full_name=name)

    @rule(name=NAMES, phone=PHONES)
    def agent_create(self, name: str, phone: str) -> None:
        self.emulator.agent_create(full_name=name, phones=[phone])

    @rule(data=st.data())
    def agent_delete(self, data: st.DataObject) -> None:
        ids = self.live_ids()
        if ids:
            self.emulator.agent_delete(data.draw(st.sampled_from(ids)))

    # --- the daemon ---------------------------------------------------------------------------

    @rule(full=st.booleans(), faulty=st.booleans(), lagging=st.booleans())
    def sync(self, full: bool, faulty: bool, lagging: bool) -> None:
        self.emulator.configure(error_500_rate=0.15 if faulty else 0.0,
                                rate_429_rate=0.1 if faulty else 0.0,
                                malformed_rate=0.05 if faulty else 0.0)
        self.transport.on = lagging  # the listing as an earlier cycle saw it
        try:
            result = self.cycle(full)
        finally:
            self.emulator.configure(error_500_rate=0.0, rate_429_rate=0.0, malformed_rate=0.0)
            self.transport.on = False
        assert result.status in ("ok", "partial", "failed"), result

    @invariant()
    def no_duplicate_ref_ids(self) -> None:
        refs = [c.get("ref_id") for c in self.emulator.contacts() if c.get("ref_id")]
        assert len(refs) == len(set(refs)), sorted(refs)

    def converged(self) -> None:
        """Faults off, full cycles until quiet: both sides must hold the same contacts."""
        for _ in range(4):
            self.cycle(full=True)
        last = self.cycle(full=True)
        writes = {k: v for k, v in last.api_calls.items()
                  if k in ("add_more", "update", "delete", "add")}
        assert not writes, f"not converged: the last cycle still wrote {writes}"
        conv = self.rt.converter
        crm = {c.get("ref_id") or f"crm:{c['public_id']}": c for c in self.emulator.contacts()}
        rows = self.rows()
        assert set(rows) == set(crm), (sorted(rows), sorted(crm))
        for key, row in rows.items():
            assert conv.row_fields(row) == conv.remote_fields(contact_from_wire(crm[key])), key


class TestConvergence(SyncMachine.TestCase):  # type: ignore[name-defined]
    settings = settings(max_examples=int(os.environ.get("FUZZ_EXAMPLES", "40")),
                        stateful_step_count=15, deadline=None,
                        suppress_health_check=[HealthCheck.too_slow])

