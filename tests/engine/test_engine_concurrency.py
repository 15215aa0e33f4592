"""Scenario 9: a row an app changes during a cycle is not overwritten: the app's last value ends
in the row or in the CRM (or, where the policy lets the CRM win, in a recorded conflict), never
silently lost."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Collection
from typing import Any

import pytest
from sqlalchemy.engine import Connection

from sync.store.local import LocalTable

from .conftest import MakeHarness
from .helpers import Harness, first


def _app_value_survived(h: Harness, key: str, value: str) -> bool:
    row, crm = h.row(key), h.crm()[key]
    recorded = any(c["key"] == key and c["local_value"] == value for c in h.conflicts())
    return (row is not None and row["note"] == value) or first(crm, "note") == value or recorded


@pytest.mark.parametrize("policy", ["remote_wins", "local_wins"])
async def test_app_writing_in_a_tight_loop_during_a_cycle(make_harness: MakeHarness,
                                                          policy: str) -> None:
    h = make_harness({"contacts": 150, "seed": 61, "page_size_cap": 25, "latency": 0.01},
                     conflict_policy=policy)
    await h.cycle()
    key = sorted(k for k in h.rows() if not k.startswith("crm:"))[40]
    h.emulator.agent_update(h.crm()[key]["public_id"], note="Agent: sửa lúc 10h")

    stop = threading.Event()
    written: list[str] = []
    crashed: list[BaseException] = []

    def app() -> None:
        i = 0
        try:
            while not stop.is_set():
                i += 1
                value = f"App: lần sửa {i}"
                h.update(key, note=value)
                written.append(value)
        except BaseException as exc:  # the app's own writes must not fail either
            crashed.append(exc)

    thread = threading.Thread(target=app, name="app-writer")
    thread.start()
    try:
        await asyncio.sleep(0.02)
        during = await h.cycle()
    finally:
        stop.set()
        thread.join(10)
    assert not crashed, crashed
    last = written[-1]
    assert len(written) > 20, "the app did not write during the cycle"
    assert during.status != "failed", during.notes  # concurrent app writes are no failure
    await h.settle()

    assert _app_value_survived(h, key, last), (h.row(key), first(h.crm()[key], "note"),
                                               h.conflicts())
    if policy == "local_wins":
        assert h.row(key)["note"] == last  # type: ignore[index]
        assert first(h.crm()[key], "note") == last
    # an intermediate value the cycle saw must not have replaced the last one anywhere
    assert h.row(key)["note"] in (last, "Agent: sửa lúc 10h")  # type: ignore[index]


async def test_app_write_between_the_recheck_and_the_write(make_harness: MakeHarness) -> None:
    """A deterministic interleaving: the app commits a change to the row right after the engine
    re-read it for the optimistic check, before the engine writes the agent's edit into it."""
    # (on SQLite the engine's transaction must hold the write lock before the re-read:
    # without it, the app's commit lands in between and the UPDATE silently overwrites it)
    h = make_harness({"contacts": 30, "seed": 62})
    await h.cycle()
    key = sorted(k for k in h.rows() if not k.startswith("crm:"))[5]
    h.emulator.agent_update(h.crm()[key]["public_id"], note="Agent: sửa lúc 10h")
    fired: list[threading.Thread] = []

    class AppWritesAfterRecheck(LocalTable):
        def load(self, conn: Connection, keys: Collection[str], *,
                 lock: bool = False) -> dict[str, Any]:
            rows = super().load(conn, keys, lock=lock)
            if lock and key in rows and not fired:
                t = threading.Thread(target=h.update, args=(key,),
                                     kwargs={"note": "App: sửa lúc 10h01"})
                fired.append(t)
                t.start()
                t.join(0.5)  # PostgreSQL: blocked by the row lock until the engine commits
            return rows

    h.rt.local = AppWritesAfterRecheck(h.rt.local.table, h.rt.local.key_column)
    r = await h.cycle()
    assert fired, "the interleaving did not happen"
    fired[0].join(10)
    assert r.status == "ok", r.notes
    await h.settle()
    assert _app_value_survived(h, key, "App: sửa lúc 10h01"), (
        h.row(key), first(h.crm()[key], "note"), h.conflicts())
