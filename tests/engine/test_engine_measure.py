"""Measurements for the report (printed, never asserted on timing): contacts per second of a
first full pull over real HTTP, and API calls per no-op cycle. Run with `-s` to see them."""

from __future__ import annotations

import time

import pytest

from .conftest import MakeHarness
from .helpers import write_calls

N = 5000


@pytest.mark.slow
async def test_measure_full_pull_and_no_op_cycle(make_harness: MakeHarness) -> None:
    h = make_harness({"contacts": N, "seed": 81})  # page_size_cap 100 (the emulator's default)
    started = time.perf_counter()
    pull = await h.cycle()
    pull_s = time.perf_counter() - started
    assert pull.status == "ok" and pull.counts["created_local"] == N
    started = time.perf_counter()
    noop = await h.cycle()
    noop_s = time.perf_counter() - started
    assert noop.status == "ok" and not write_calls(noop.api_calls)
    assert noop.counts["updated_local"] == 0
    print(f"\n[{h.db.kind}] full pull of {N} contacts over HTTP: {pull_s:.2f} s = "
          f"{N / pull_s:.0f} contacts/s, API calls {pull.api_calls}; no-op cycle: "
          f"{sum(noop.api_calls.values())} API calls {noop.api_calls} (0 writes), "
          f"{noop_s:.2f} s")
