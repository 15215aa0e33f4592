"""OmiClient against the emulator: in-process (ASGITransport) and over real HTTP."""

from __future__ import annotations

import asyncio
import gc
from dataclasses import replace
from datetime import date
from typing import Any

import httpx
import pytest

from sync.api import NoteIn, OmiClient
from sync.api.adapter import contact_from_wire
from sync.emulator import Emulator, EmulatorConfig, EmulatorServer, create_app
from sync.errors import RemoteError, RetriableError
from sync.record import Contact, CustomEntry, DynamicValue, Item

KEY = "demo-key"
FAST: dict[str, Any] = {"backoff_base": 0.001, "backoff_max": 0.02}


def in_process(config: EmulatorConfig, **kw: Any) -> tuple[OmiClient, Emulator]:
    app = create_app(config)
    client = OmiClient("http://emulator", KEY, transport=httpx.ASGITransport(app=app),
                       **{**FAST, **kw})
    return client, app.state.emulator


def without_times(c: Contact) -> Contact:
    return replace(c, created_ms=None, updated_ms=None)


async def all_contacts(client: OmiClient, size: int = 500) -> list[Contact]:
    return [c async for page in client.iter_pages(size) for c in page.items]


async def test_paging_under_a_cap_reads_every_contact() -> None:
    client, emu = in_process(EmulatorConfig(contacts=100, page_size_cap=37))
    async with client:
        pages = [p async for p in client.iter_pages(500)]
    assert [(p.page_number, len(p.items), p.page_size) for p in pages] == [
        (1, 37, 37), (2, 37, 37), (3, 26, 37)]
    got = [c for p in pages for c in p.items]
    assert got == [contact_from_wire(w) for w in emu.contacts()]
    assert client.calls == {"auth": 1, "list": 3}
    assert emu.stats()["list"] == 3


@pytest.mark.parametrize("knobs", [
    {"error_500_rate": 0.4},
    {"rate_429_rate": 0.4, "retry_after": 0.01},
    {"timeout_rate": 0.4, "timeout_hang": 0.01},  # in-process: the hang ends in a 504
    {"malformed_rate": 0.4},
    {"error_500_rate": 0.1, "rate_429_rate": 0.1, "timeout_rate": 0.1, "malformed_rate": 0.1,
     "retry_after": 0.01, "timeout_hang": 0.01},
])
async def test_reads_survive_each_fault_kind(knobs: dict[str, Any]) -> None:
    clean, _ = in_process(EmulatorConfig(contacts=120, page_size_cap=37))
    async with clean:
        expected = await all_contacts(clean)
    client, emu = in_process(EmulatorConfig(contacts=120, page_size_cap=37, seed=1, **knobs),
                             max_retries=12)
    async with client:
        got = await all_contacts(client)
        assert len(await client.layout()) == 3
    assert got == expected
    assert sum(emu.fault_counts().values()) > 0  # the faults did happen, and were retried
    assert client.calls["list"] > 4


async def test_creates_are_not_resent_after_a_server_fault() -> None:
    client, emu = in_process(EmulatorConfig())
    async with client:
        await client.authenticate()
        emu.configure(error_500_rate=1.0)
        with pytest.raises(RetriableError):
            await client.add_more([Contact(ref_id="KH-1", full_name="A")])
        with pytest.raises(RetriableError):
            await client.layout()  # while reads are retried
    assert emu.stats()["add_more"] == 1 and emu.stats()["layout"] == 6


@pytest.mark.parametrize("status", [401, 200])
async def test_token_expiring_mid_run_reauthenticates(status: int) -> None:
    """Refused with a 401, or with HTTP 200 and -9999 token_expired / unauthorized in the
    body, as the documented examples answer every failure."""
    client, emu = in_process(EmulatorConfig(contacts=60, page_size_cap=20, token_ttl=0.05,
                                            token_refused_status=status))
    async with client:
        await client.list_page(1, 20)
        await asyncio.sleep(0.06)  # the token expires
        await client.list_page(2, 20)
        emu.revoke_tokens()  # and is revoked
        await client.list_page(3, 20)
    assert client.calls == {"auth": 3, "list": 5}


async def test_minus_9999_answers() -> None:
    client, _ = in_process(EmulatorConfig(contacts=3))
    async with client:
        with pytest.raises(RemoteError) as unknown:
            await client.update(Contact(ref_id="KH-404", full_name="Không có"))
        assert unknown.value.code == "contact_not_found"
        with pytest.raises(RemoteError) as invalid:
            await client.add(Contact(ref_id="KH-9", full_name="A", gender="unknown"))
        assert invalid.value.code == "request_invalid"
        assert await client.delete("000000000000000000000000") is False
        assert await client.details("000000000000000000000000") is None
        assert await client.get(ref_id="KH-404") is None


NEW = Contact(
    ref_id="KH-900", ref_code="C900", full_name="Nguyễn Thị Ánh Tuyết",
    phones=(Item("0393123456", "home"), Item("0901234567", "office")),
    emails=(Item("tuyet@example.vn", "personal"),), gender="female", address="Hà Nội",
    note="dòng 1\ndòng 2", tags=frozenset({"Khách lẻ", "Đã gọi"}), owner_email="agent@x.vn",
    custom=(CustomEntry("Điểm", "90"),))


async def test_write_round_trips() -> None:
    client, emu = in_process(EmulatorConfig(contacts=2, add_more_delay=0.0))
    async with client:
        created = await client.add(NEW)
        assert created.public_id and created.custom[0].key  # the server assigns both
        assert without_times(replace(created, public_id=None, custom=NEW.custom)) == NEW
        changed = replace(created, address=None, phones=(Item("0393123456", "home"),),
                          tags=frozenset({"VIP"}), birthday=date(1990, 1, 2),
                          dynamic={"vWabCEBkqM": DynamicValue("single_text", ("120",))})
        summary = await client.update(changed)
        assert summary["publicId"] == created.public_id
        again = await client.details(created.public_id)
        assert again is not None and without_times(again) == without_times(changed)
        # every emulator contact with a ref_id survives update(its own value) unchanged
        for c in await all_contacts(client):
            if c.ref_id:
                await client.update(c)
                now = await client.get(ref_id=c.ref_id)
                assert now is not None and without_times(now) == without_times(c)
        await client.add_more([replace(NEW, ref_id="KH-901", public_id=None)])
        found = await client.get(ref_id="KH-901")
        assert found is not None and found.full_name == NEW.full_name
        assert (await client.get(phone="+84 393 123 456")) is not None
        await client.add_notes([NoteIn("84393123456", "Gọi lại sau", "agent@x.vn")])
        assert emu.notes[0]["public_id"] == created.public_id
        assert await client.delete(created.public_id) is True
        gone = await client.details(created.public_id)
        assert gone is not None and gone.is_deleted
        assert await client.delete(created.public_id) is False


@pytest.mark.parametrize("refused", [401, 200])
async def test_over_real_http_with_faults_timeouts_and_expiring_tokens(refused: int) -> None:
    config = EmulatorConfig(contacts=100, page_size_cap=37, seed=3, error_500_rate=0.1,
                            rate_429_rate=0.1, retry_after=0.01, timeout_rate=0.1,
                            timeout_hang=2.0, malformed_rate=0.1, token_ttl=0.3,
                            token_refused_status=refused)
    expected = [contact_from_wire(w) for w in Emulator(replace(
        config, error_500_rate=0, rate_429_rate=0, timeout_rate=0, malformed_rate=0)).contacts()]
    with EmulatorServer(config) as srv:
        async with OmiClient(srv.url, KEY, timeout=0.25, max_retries=12, **FAST) as client:
            first = await all_contacts(client)
            await asyncio.sleep(0.35)  # the token expires between runs
            second = await all_contacts(client, size=37)
        faults = srv.emulator.fault_counts()
    assert first == second == expected
    assert faults["timeout"] > 0 and sum(faults.values()) >= 3
    assert client.calls["auth"] >= 2


async def test_a_page_body_is_not_left_for_the_cyclic_collector() -> None:
    # httpx's Response sits in reference cycles: a body kept on it would live until the
    # collector ran, which a cycle runs seldom (sync/gcpolicy.py). Over real HTTP, as in use.
    with EmulatorServer(EmulatorConfig(contacts=60, page_size_cap=20)) as srv:
        gc.collect()
        gc.disable()
        try:
            async with OmiClient(srv.url, KEY, **FAST) as client:
                pages = [p async for p in client.iter_pages(20)]
            gc.set_debug(gc.DEBUG_SAVEALL)
            gc.collect()
            responses = [o for o in gc.garbage if isinstance(o, httpx.Response)]
            holding = [r for r in responses if hasattr(r, "_content")]
        finally:
            gc.set_debug(0)
            gc.garbage.clear()
            gc.enable()
    assert sum(len(p.listed) for p in pages) == 60
    assert responses, "httpx no longer leaves Responses in cycles: this test checks nothing"
    assert holding == []


async def test_a_page_of_megabytes_is_read_whole() -> None:
    """A listing's pages are 1-2 MB at the usual page size: over real HTTP, a 5 MB page
    comes through intact, its items as the emulator holds them."""
    config = EmulatorConfig(contacts=3000, page_size_cap=3000, seed=4)
    expected = [contact_from_wire(w) for w in Emulator(config).contacts()]
    with EmulatorServer(config) as srv:
        async with OmiClient(srv.url, KEY, **FAST) as client:
            pages = [p async for p in client.iter_pages(3000)]
    assert len(pages) == 1 and sum(len(x.raw) for x in pages[0].listed) > 4_000_000
    assert list(pages[0].items) == expected
