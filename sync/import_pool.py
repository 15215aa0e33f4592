"""Worker processes for a first import's per-contact work (`sync/prepare.py`).

A first import is CPU-bound Python: decoding, reading into the canonical form, row values and
bookkeeping texts take about half of it, and one process runs on one core. These workers take
that half to the other cores while the cycle's own process fetches pages and writes rows.

`concurrent.futures.ProcessPoolExecutor` does the plumbing: its feeder and result threads send
batches and collect results while the event loop is busy writing a chunk, so a worker never
waits on the writer. Workers are started with `spawn` (a fresh interpreter: the cycle's
threads, connections and locks are not copied into them). They never talk to the CRM or the
database: items in, rows and texts out.

A worker whose parent dies (kill -9) exits on its own within a second (`_watch_parent`):
otherwise it would wait forever on a queue nobody writes to.
"""

from __future__ import annotations

import asyncio
import gc
import multiprocessing
import os
import threading
import time
from collections import deque
from collections.abc import Sequence
from concurrent.futures import Future, ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool

from sync.api.adapter import Listed
from sync.convert import Converter
from sync.prepare import ImportSetup, Prepared, prepare_all

__all__ = ["ImportPool", "WorkerLost"]

_state: tuple[Converter, ImportSetup] | None = None  # in a worker: set by _init


class WorkerLost(RuntimeError):
    """A worker process died or could not start: `items` are to be done in this process."""

    def __init__(self, message: str, items: list[Listed]):
        super().__init__(message)
        self.items = items


def _init(setup: ImportSetup, parent: int) -> None:
    global _state
    _state = (Converter(setup.spec), setup)
    # a batch's objects die with it: the collector would only walk them (as in a cycle)
    gc.set_threshold(50_000, 10, 10)
    threading.Thread(target=_watch_parent, args=(parent,), daemon=True,
                     name="crm-sync-parent-watch").start()


def _watch_parent(parent: int) -> None:
    while os.getppid() == parent:
        time.sleep(0.5)
    os._exit(0)  # the cycle's process is gone: nobody will read what this one makes


def _prepare_batch(items: Sequence[Listed]) -> list[Prepared | str | None]:
    assert _state is not None, "worker not initialised"
    return prepare_all(items, *_state)


class ImportPool:
    """Batches of listed items in, `prepare_all`'s results out, in the order submitted.

    At most `window` batches are in flight, so memory stays bounded whatever the listing's
    size; `submit` returns at once, `next` waits for the oldest batch.
    """

    def __init__(self, setup: ImportSetup, workers: int, *, window: int | None = None):
        if workers < 1:
            raise ValueError(f"workers must be at least 1, not {workers}")
        self.window = window if window is not None else workers + 1
        self._pool = ProcessPoolExecutor(
            max_workers=workers, mp_context=multiprocessing.get_context("spawn"),
            initializer=_init, initargs=(setup, os.getpid()))
        self._inflight: deque[tuple[list[Listed], asyncio.Future[list[Prepared | str | None]]]]
        self._inflight = deque()

    @property
    def full(self) -> bool:
        return len(self._inflight) >= self.window

    def __len__(self) -> int:
        return len(self._inflight)

    def submit(self, items: list[Listed]) -> None:
        try:
            future: Future[list[Prepared | str | None]] = self._pool.submit(
                _prepare_batch, items)
        except (BrokenProcessPool, RuntimeError) as exc:
            future = Future()
            future.set_exception(exc)
        self._inflight.append((items, asyncio.wrap_future(future)))

    async def next(self) -> tuple[list[Listed], list[Prepared | str | None]]:
        """The oldest batch and its results (WorkerLost, carrying the batch, if a worker
        died)."""
        items, future = self._inflight.popleft()
        try:
            return items, await future
        except Exception as exc:  # prepare() raises nothing: the pool failed
            raise WorkerLost(f"import worker lost: {type(exc).__name__}: {exc}", items) from exc

    def close(self) -> None:
        """Stop the workers; batches not yet collected are dropped."""
        for _, future in self._inflight:
            future.cancel()
        self._inflight.clear()
        self._pool.shutdown(wait=True, cancel_futures=True)
