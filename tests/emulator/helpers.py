"""Helpers shared by the emulator's tests: a fake clock, an envelope-aware client."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import httpx

from sync.emulator import Emulator

OK, FAIL = 9999, -9999


class FakeClock:
    """A monotonic clock the test moves by hand: expiry and add-more delays without sleeping."""

    def __init__(self) -> None:
        self.now = 1_000.0

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


class Api:
    """An httpx client on the emulator's ASGI app, authenticated, with envelope helpers."""

    def __init__(self, client: httpx.AsyncClient, emulator: Emulator) -> None:
        self.client, self.emulator = client, emulator
        self.token: str | None = None

    async def login(self) -> str:
        params = {"apiKey": self.emulator.config.api_key}
        response = await self.client.get("/api/auth", params=params)
        self.token = response.json()["payload"]["access_token"]
        return self.token

    async def call(self, method: str, path: str, *, auth: bool = True,
                   **kwargs: Any) -> httpx.Response:
        headers = dict(kwargs.pop("headers", {}))
        if auth:
            headers.setdefault("Authorization", f"Bearer {self.token or await self.login()}")
        return await self.client.request(method, path, headers=headers, **kwargs)

    async def ok(self, method: str, path: str, **kwargs: Any) -> Any:
        """Call, assert HTTP 200 + status_code 9999, return the payload."""
        response = await self.call(method, path, **kwargs)
        body = response.json()
        assert response.status_code == 200, response.text
        assert body["status_code"] == OK, body
        return body["payload"]

    async def fail(self, method: str, path: str, **kwargs: Any) -> str:
        """Call, assert HTTP 200 + status_code -9999, return the message code."""
        response = await self.call(method, path, **kwargs)
        body = response.json()
        assert response.status_code == 200, response.text
        assert body["status_code"] == FAIL, body
        assert body["payload"] is None
        return str(body["message"])

    async def page(self, page: int = 1, size: int | None = None, body: Any = None) -> Any:
        params = {"page": page} | ({"size": size} if size is not None else {})
        kwargs: dict[str, Any] = {"params": params}
        if body is not None:
            kwargs["json"] = body
        return await self.ok("POST", "/api/contacts/list", **kwargs)


MakeApi = Callable[..., Awaitable[Api]]


def attr(contact: dict[str, Any], code: str) -> list[dict[str, Any]]:
    """The value list of one attribute_structure entry ([] when the entry is absent)."""
    for entry in contact["attribute_structure"]:
        if entry["field_code"] == code:
            return list(entry["value"])
    return []


def first(contact: dict[str, Any], code: str) -> str | None:
    values = attr(contact, code)
    return values[0]["display_value"] if values else None
