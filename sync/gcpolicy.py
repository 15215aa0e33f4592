"""The cyclic garbage collector's policy while a cycle runs.

A cycle makes millions of container objects that die young (each chunk's contacts, rows and
states) next to sets and dicts of every listed contact that live until it ends. With CPython's
default young-generation threshold (700), the collector runs after every few contacts, promotes
the chunk in hand to the older generations and then keeps walking the whole heap: 1-2.8 s of
a 100k import (`bench.ab` at 100k with the threshold below: the import 4% faster, a no-op
6%). The objects a cycle makes are freed by reference counting, not by the collector; it only
has to find the few reference cycles httpx and asyncio leave (the request pipeline keeps no
page body in one, see `OmiClient._send`), so a threshold of 50,000 loses nothing and costs a
few MB at most.

Process-wide, like the collector itself: the first cycle in raises the threshold, the last one
out restores what it found, so overlapping cycles (several tenants in one process) are safe.
"""

from __future__ import annotations

import gc
import threading
from collections.abc import Iterator
from contextlib import contextmanager

__all__ = ["CYCLE_GEN0_THRESHOLD", "cycle_collector"]

CYCLE_GEN0_THRESHOLD = 50_000

_lock = threading.Lock()
_depth = 0
_saved: tuple[int, int, int] | None = None


@contextmanager
def cycle_collector(threshold: int = CYCLE_GEN0_THRESHOLD) -> Iterator[None]:
    """Run the body with the young generation collected every `threshold` net allocations."""
    global _depth, _saved
    with _lock:
        if _depth == 0:
            _saved = gc.get_threshold()
            gen0, gen1, gen2 = _saved
            gc.set_threshold(max(gen0, threshold), gen1, gen2)
        _depth += 1
    try:
        yield
    finally:
        with _lock:
            _depth -= 1
            if _depth == 0 and _saved is not None:
                gc.set_threshold(*_saved)
                _saved = None
