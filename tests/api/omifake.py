"""A scriptable in-memory OMICall for httpx.MockTransport: exact fault sequences per endpoint."""

from __future__ import annotations

import asyncio
import json
from collections import Counter
from collections.abc import Callable
from typing import Any

import httpx

from sync.api import OmiClient

API_KEY = "key-5ecr3t-do-not-log"
Action = httpx.Response | Callable[[httpx.Request], Any]


def envelope(payload: Any = None, *, status: int = 200, code: int = 9999,
             message: str | None = None, headers: dict[str, str] | None = None) -> httpx.Response:
    body: dict[str, Any] = {"status_code": code, "instance_id": "test", "payload": payload,
                            "key_enabled": False}
    if message is not None:
        body["message"] = message
    return httpx.Response(status, json=body, headers=headers)


def failure(code: str) -> httpx.Response:
    return envelope(None, code=-9999, message=code)


def raise_(exc_type: type[httpx.TransportError], message: str = "boom") -> Action:
    def action(request: httpx.Request) -> Any:
        raise exc_type(message, request=request)
    return action


def wire_contact(i: int, **extra: Any) -> dict[str, Any]:
    return {"public_id": f"pid{i:05d}", "ref_id": f"KH-{i}", "ref_code": None, "tags": [],
            "is_deleted": False, "created_date": 1587023890765 + i,
            "attribute_structure": [
                {"field_code": "full_name", "field_type": "single_text",
                 "value": [{"display_value": f"Khách {i}"}]},
                {"field_code": "phone_number", "field_type": "phone",
                 "value": [{"display_value": f"09{i:08d}", "data_type": "personal",
                            "value_type": "Cá nhân"}]}], **extra}


class FakeOmi:
    """Auth with revocable tokens, a paged list with a size cap, and a per-endpoint script.

    `script[endpoint]` is a queue of actions consumed before the normal handling: an
    httpx.Response to answer, or a callable (may raise an httpx exception, or return None to
    fall through to the normal handling).
    """

    def __init__(self, contacts: int = 0, *, page_cap: int = 50, delay: float = 0.0,
                 token_uses: int | None = None) -> None:
        self.contacts = [wire_contact(i) for i in range(1, contacts + 1)]
        self.page_cap, self.delay = page_cap, delay
        self.token_uses = token_uses  # calls a token serves before it is refused (None: any)
        self.used: Counter[str] = Counter()
        self.tokens: list[str] = []
        self.valid: set[str] = set()
        self.script: dict[str, list[Action]] = {}
        self.hits: Counter[str] = Counter()
        self.bodies: dict[str, list[Any]] = {}
        self.sizes: list[int] = []
        self.in_flight = self.max_in_flight = 0
        self.override_total_pages: int | None = None
        self.ignore_page = False

    def on(self, endpoint: str, *actions: Action) -> None:
        self.script.setdefault(endpoint, []).extend(actions)

    def revoke_tokens(self) -> None:
        self.valid.clear()

    @staticmethod
    def endpoint(path: str) -> str:
        tail = path.removeprefix("/api/")
        names = {"auth": "auth", "contacts/list": "list", "contacts/add": "add",
                 "contacts/add-more": "add_more", "contacts/update": "update",
                 "contacts/add-note": "add_note", "contacts/get": "get",
                 "source_contact_layout/get": "layout"}
        if tail.startswith("contacts/delete/"):
            return "delete"
        if tail.startswith("contacts/details/"):
            return "details"
        return names[tail]

    async def __call__(self, request: httpx.Request) -> httpx.Response:
        name = self.endpoint(request.url.path)
        self.hits[name] += 1
        if request.content:
            self.bodies.setdefault(name, []).append(json.loads(request.content))
        self.in_flight += 1
        self.max_in_flight = max(self.max_in_flight, self.in_flight)
        try:
            if self.delay:
                await asyncio.sleep(self.delay)
            queue = self.script.get(name)
            if queue:
                action = queue.pop(0)
                result = action if isinstance(action, httpx.Response) else action(request)
                if result is not None:
                    return result
            return self.handle(name, request)
        finally:
            self.in_flight -= 1

    def handle(self, name: str, request: httpx.Request) -> httpx.Response:
        if name == "auth":
            if request.url.params.get("apiKey") != API_KEY:
                return failure("api_key_invalid")
            token = f"tok-{len(self.tokens) + 1}-s3cr3t"
            self.tokens.append(token)
            self.valid.add(token)
            return envelope({"access_token": token, "access_type": "normal",
                             "token_type": "Bearer"})
        token = request.headers.get("Authorization", "").removeprefix("Bearer ")
        if token not in self.valid:
            return httpx.Response(401, text="Unauthorized")
        self.used[token] += 1
        if self.token_uses is not None and self.used[token] >= self.token_uses:
            self.valid.discard(token)
        if name == "list":
            page = 1 if self.ignore_page else int(request.url.params.get("page", "1"))
            size = min(int(request.url.params.get("size", "50")), self.page_cap)
            self.sizes.append(size)
            total_pages = -(-len(self.contacts) // size)
            items = self.contacts[(page - 1) * size:page * size]
            return envelope({"items": items, "page_number": page, "page_size": size,
                             "total_items": len(self.contacts),
                             "total_pages": self.override_total_pages or total_pages,
                             "has_next": page < total_pages})
        if name in ("add", "details", "get"):
            return envelope(wire_contact(1))
        if name == "update":
            return envelope({"publicId": "pid00001", "fullName": "Khách 1"})
        if name == "layout":
            return envelope([{"field_code": "vWabCEBkqM", "field_name": "Điểm thưởng",
                              "field_type": "single_text", "is_required": False,
                              "options": []}])
        return envelope(True)


def make_client(fake: FakeOmi, **kw: Any) -> OmiClient:
    kw.setdefault("backoff_base", 0.001)
    kw.setdefault("backoff_max", 0.01)
    kw.setdefault("max_retries", 3)
    return OmiClient("https://omi.test", kw.pop("api_key", API_KEY),
                     transport=httpx.MockTransport(fake), **kw)
