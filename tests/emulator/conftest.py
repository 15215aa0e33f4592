"""Fixtures for the emulator's tests: an in-process client with a token, a fake clock."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest

from sync.emulator import Emulator, EmulatorConfig, create_app

from .helpers import Api, FakeClock, MakeApi


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
async def make_api(clock: FakeClock) -> AsyncIterator[MakeApi]:
    """make_api(**knobs) -> Api on a fresh emulator driven by the fake clock."""
    clients: list[httpx.AsyncClient] = []

    async def make(**knobs: Any) -> Api:
        emulator = Emulator(EmulatorConfig(**knobs), clock=clock)
        client = httpx.AsyncClient(transport=httpx.ASGITransport(app=create_app(emulator=emulator)),
                                   base_url="http://emulator")
        clients.append(client)
        return Api(client, emulator)

    yield make
    for client in clients:
        await client.aclose()


@pytest.fixture
async def api(make_api: MakeApi) -> Api:
    """An emulator with 30 seeded contacts, instant add-more, default knobs otherwise."""
    return await make_api(contacts=30, add_more_delay=0.0)
