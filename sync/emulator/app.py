"""The Starlette app: /api routes per omicall-api.md, plus the /_emulator admin routes.

Every /api call goes through `_api_route`, in this order: count it, apply due add-more items,
draw a fault (decided before anything executes, so a faulted call changes nothing), add the
configured latency, check the Bearer token (HTTP 401 with an envelope), decode the JSON body
(a bad body is -9999 with HTTP 200, as the documented examples answer refusals), run the
operation, wrap its payload in the envelope.
"""

from __future__ import annotations

import asyncio
import json
import secrets
import time
from collections.abc import Callable
from typing import Any

from starlette.applications import Starlette
from starlette.requests import ClientDisconnect, Request
from starlette.responses import Response
from starlette.routing import Route

from sync.emulator import operations as ops
from sync.emulator.admin import admin_routes
from sync.emulator.config import EmulatorConfig
from sync.emulator.emulator import Emulator
from sync.emulator.faults import Fault, fault_response
from sync.emulator.model import dumps
from sync.emulator.parse import Invalid

INSTANCE_ID = "emulator"
INSTANCE_VERSION = "1.2.164"
_HEAD = (b'{"status_code":%d,"instance_id":"' + INSTANCE_ID.encode()
         + b'","instance_version":"' + INSTANCE_VERSION.encode() + b'","payload":')

# (emulator, request, decoded body or None) -> payload
Operation = Callable[[Emulator, Request, Any], ops.Payload]


def envelope(payload: ops.Payload) -> bytes:
    """A success envelope; bytes payloads are already JSON and are spliced in as they are."""
    raw = payload if isinstance(payload, bytes) else dumps(payload)
    return _HEAD % 9999 + raw + b',"key_enabled":false}'


def failure(message: str) -> bytes:
    """A failure envelope: status_code -9999, payload null, the error code in message."""
    return _HEAD % -9999 + b'null,"key_enabled":false,"message":' + dumps(message) + b"}"


def _json(body: bytes, status: int = 200) -> Response:
    return Response(body, status_code=status, media_type="application/json")


async def _hang(request: Request, emu: Emulator) -> None:
    """Sit on a request for timeout_hang seconds, or until the client or the server leaves."""
    # Real time, not emu.clock: this is an actual wait (a test's fake clock would never move).
    deadline = time.monotonic() + emu.config.timeout_hang
    while (left := deadline - time.monotonic()) > 0 and not emu.closing.is_set():
        await asyncio.sleep(min(0.05, left))
        if await request.is_disconnected():
            return


async def _decode(request: Request, required: bool) -> Any:
    raw = await request.body()
    if not raw.strip():
        if required:
            raise Invalid("request_body_required")
        return None
    try:
        return json.loads(raw)
    except (ValueError, UnicodeDecodeError):
        raise Invalid(detail="the body is not JSON") from None


def _bearer(request: Request) -> str | None:
    scheme, _, token = request.headers.get("authorization", "").partition(" ")
    return token.strip() if scheme.lower() == "bearer" and token.strip() else None


def _api_route(path: str, method: str, name: str, operation: Operation, *,
               auth: bool = True, body: str = "none") -> Route:
    """body: "none" (ignored), "optional" (list) or "required" (JSON object or array)."""

    async def endpoint(request: Request) -> Response:
        emu: Emulator = request.app.state.emulator
        emu.count(name)
        emu.apply_due()
        with emu.lock:  # auth is never answered malformed: the token must stay readable
            fault = emu.faults.draw(emu.config, malformed_allowed=auth)
        if emu.config.latency > 0:
            await asyncio.sleep(emu.config.latency)
        if fault is Fault.TIMEOUT:
            await _hang(request, emu)
        if fault is not None:
            return fault_response(fault, emu.config, failure)
        if auth and (problem := emu.token_problem(_bearer(request))):
            return _json(failure(problem), emu.config.token_refused_status)
        try:
            data = None if body == "none" else await _decode(request, body == "required")
            return _json(envelope(operation(emu, request, data)))
        except Invalid as refusal:
            return _json(failure(refusal.code))
        except ClientDisconnect:  # gone mid-body (a daemon stopped): nothing to answer
            return Response(status_code=499)

    return Route(path, endpoint, methods=[method], name=f"api_{name}")


def _auth(emu: Emulator, request: Request, _: Any) -> ops.Payload:
    key = request.query_params.get("apiKey")
    if not key:
        raise Invalid("api_key_is_required")
    if not secrets.compare_digest(key.encode(), emu.config.api_key.encode()):
        raise Invalid("api_key_invalid")
    return {"access_token": emu.issue_token(), "access_type": "normal", "token_type": "Bearer"}


def _path_id(request: Request) -> str:
    return str(request.path_params["public_id"])


API_ROUTES: list[Route] = [
    _api_route("/api/auth", "GET", "auth", _auth, auth=False),
    _api_route("/api/contacts/list", "POST", "list",
               lambda e, r, b: ops.list_contacts(e, r.query_params, b), body="optional"),
    _api_route("/api/contacts/add", "POST", "add", lambda e, r, b: ops.add(e, b),
               body="required"),
    _api_route("/api/contacts/add-more", "POST", "add_more", lambda e, r, b: ops.add_more(e, b),
               body="required"),
    _api_route("/api/contacts/update", "POST", "update", lambda e, r, b: ops.update(e, b),
               body="required"),
    _api_route("/api/contacts/delete/{public_id}", "DELETE", "delete",
               lambda e, r, b: ops.delete(e, _path_id(r))),
    _api_route("/api/contacts/add-note", "POST", "add_note", lambda e, r, b: ops.add_note(e, b),
               body="required"),
    _api_route("/api/contacts/get", "GET", "get", lambda e, r, b: ops.get(e, r.query_params)),
    _api_route("/api/contacts/details/{public_id}", "GET", "details",
               lambda e, r, b: ops.details(e, _path_id(r))),
    _api_route("/api/source_contact_layout/get", "GET", "layout", lambda e, r, b: ops.layout(e)),
]


def create_app(config: EmulatorConfig | None = None,
               emulator: Emulator | None = None) -> Starlette:
    """The emulator as an ASGI app; its state is `app.state.emulator`.

    Pass an `emulator` to share state with the caller (its config wins), else one is built
    from `config` (default knobs if None).
    """
    if emulator is not None and config is not None and emulator.config is not config:
        raise ValueError("give either a config or an emulator, not two different ones")
    app = Starlette(routes=[*API_ROUTES, *admin_routes()])
    app.state.emulator = emulator if emulator is not None else Emulator(config)
    return app
