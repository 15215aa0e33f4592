"""The /_emulator admin routes: what a CRM agent or a test harness does from outside the API.

Plain JSON (no envelope), no auth, never faulted, not counted in stats. A bad request answers
400 {"error": ...}, an unknown or deleted contact 404.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from sync.emulator.model import dumps

if TYPE_CHECKING:
    from sync.emulator.emulator import Emulator

Handler = Callable[[Request], Awaitable[Response]]


def _reply(value: Any, status: int = 200) -> Response:
    return Response(dumps(value), status_code=status, media_type="application/json")


async def _body(request: Request) -> dict[str, Any]:
    raw = await request.body()
    if not raw.strip():
        return {}
    value = json.loads(raw)
    if not isinstance(value, dict):
        raise ValueError("the body must be a JSON object")
    return value


def _guarded(handler: Callable[[Emulator, Request], Awaitable[Any]]) -> Handler:
    """Run a handler with the request's emulator; map its exceptions to 400 / 404."""

    async def endpoint(request: Request) -> Response:
        emu: Emulator = request.app.state.emulator
        try:
            return _reply(await handler(emu, request))
        except KeyError as exc:
            return _reply({"error": f"no live contact {exc.args[0]}"}, 404)
        except (ValueError, TypeError) as exc:
            return _reply({"error": str(exc)}, 400)

    return endpoint


async def _stats(emu: Emulator, _: Request) -> Any:
    return emu.stats()


async def _reset_stats(emu: Emulator, _: Request) -> Any:
    emu.reset_stats()
    return emu.stats()


async def _faults(emu: Emulator, _: Request) -> Any:
    return emu.fault_counts()


async def _list(emu: Emulator, _: Request) -> Any:
    return emu.contacts()


async def _create(emu: Emulator, request: Request) -> Any:
    return {"public_id": emu.agent_create(**await _body(request))}


async def _one(emu: Emulator, request: Request) -> Any:
    found = emu.contact(request.path_params["public_id"])
    if found is None:
        raise KeyError(request.path_params["public_id"])
    return found


async def _update(emu: Emulator, request: Request) -> Any:
    public_id = request.path_params["public_id"]
    emu.agent_update(public_id, **await _body(request))
    return emu.contact(public_id)


async def _delete(emu: Emulator, request: Request) -> Any:
    emu.agent_delete(request.path_params["public_id"])
    return {"deleted": True}


async def _flush(emu: Emulator, _: Request) -> Any:
    return {"applied": emu.flush_pending()}


async def _revoke(emu: Emulator, _: Request) -> Any:
    emu.revoke_tokens()
    return {"revoked": True}


async def _get_config(emu: Emulator, _: Request) -> Any:
    return emu.config.as_dict()


async def _set_config(emu: Emulator, request: Request) -> Any:
    emu.configure(**await _body(request))
    return emu.config.as_dict()


async def _notes(emu: Emulator, _: Request) -> Any:
    with emu.lock:
        return [dict(n) for n in emu.notes]


def admin_routes() -> list[Route]:
    """The admin routes, mounted beside /api by `create_app`."""
    table: list[tuple[str, str, Callable[[Emulator, Request], Awaitable[Any]]]] = [
        ("/_emulator/stats", "GET", _stats),
        ("/_emulator/stats/reset", "POST", _reset_stats),
        ("/_emulator/faults", "GET", _faults),
        ("/_emulator/contacts", "GET", _list),
        ("/_emulator/contacts", "POST", _create),
        ("/_emulator/contacts/{public_id}", "GET", _one),
        ("/_emulator/contacts/{public_id}", "PATCH", _update),
        ("/_emulator/contacts/{public_id}", "DELETE", _delete),
        ("/_emulator/flush", "POST", _flush),
        ("/_emulator/revoke-tokens", "POST", _revoke),
        ("/_emulator/config", "GET", _get_config),
        ("/_emulator/config", "POST", _set_config),
        ("/_emulator/notes", "GET", _notes),
    ]
    return [Route(path, _guarded(handler), methods=[method]) for path, method, handler in table]
