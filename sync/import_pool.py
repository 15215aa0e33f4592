"""Worker processes for a first import's per-contact work (`sync/prepare.py`).

A first import is CPU-bound Python: decoding, reading into the canonical form, row values and
bookkeeping texts take about half of it, and one process runs on one core. The pool's
workers (`import_worker.py`) take that half to other cores while the cycle's own process
fetches pages and writes rows, and the cycle's process takes work back whenever it would
otherwise wait for them. A worker whose parent dies (kill -9) exits by itself.
"""

from __future__ import annotations

import asyncio
from collections import deque
from concurrent.futures import Future

from sync.api.adapter import Listed
from sync.convert import Converter
from sync.import_worker import Result, WorkerProcess
from sync.prepare import ImportSetup, prepare_all

__all__ = ["PART", "ImportPool", "WorkerLost"]


class WorkerLost(RuntimeError):
    """A worker process died or could not start: `items` are to be done in this process."""

    def __init__(self, message: str, items: list[Listed]):
        super().__init__(message)
        self.items = items


# Items per job a worker takes (or this process takes back): small enough that taking one
# back while waiting costs little more than the wait (about 10-15 ms of work).
PART = 100


class _Part:
    __slots__ = ("future", "items", "result")

    def __init__(self, items: list[Listed], future: Future[Result]):
        self.items, self.future = items, future
        self.result: Result | None = None  # prepared here instead (taken back)


class _Batch:
    __slots__ = ("items", "parts")

    def __init__(self, items: list[Listed], parts: list[_Part]):
        self.items, self.parts = items, parts


class ImportPool:
    """Batches of listed items in, `prepare_all`'s results out, in the order submitted.

    At most `window` batches are in flight, so memory stays bounded whatever the listing's
    size; `submit` returns at once, `next` waits for the oldest batch. Workers take a batch in
    parts of PART items. While `next` would wait, it takes back the newest part no worker has
    started and prepares it in this process: the work splits itself between the workers and
    this process, whichever is faster, and this process never waits while there is work.
    """

    def __init__(self, setup: ImportSetup, workers: int, *, window: int | None = None):
        if workers < 1:
            raise ValueError(f"workers must be at least 1, not {workers}")
        self.window = window if window is not None else workers + 2
        self._setup, self._size = setup, workers
        self._conv: Converter | None = None
        self._workers: list[WorkerProcess] = []
        self._submitted = 0  # parts
        self._inflight: deque[_Batch] = deque()
        self.stolen = 0  # parts prepared in this process

    @property
    def full(self) -> bool:
        return len(self._inflight) >= self.window

    @property
    def pids(self) -> list[int]:
        return [w.process.pid for w in self._workers]

    def __len__(self) -> int:
        return len(self._inflight)

    def submit(self, items: list[Listed]) -> None:
        parts: list[_Part] = []
        for start in range(0, len(items), PART):
            future: Future[Result] = Future()
            part = items[start:start + PART]
            try:
                if not self._workers:  # started with the first batch: a short listing never pays
                    self._workers = [WorkerProcess(self._setup, i) for i in range(self._size)]
                self._workers[self._submitted % len(self._workers)].jobs.put((part, future))
            except OSError as exc:  # could not start a process
                future.set_exception(exc)
            self._submitted += 1
            parts.append(_Part(part, future))
        self._inflight.append(_Batch(items, parts))

    async def next(self) -> tuple[list[Listed], Result]:
        """The oldest batch and its results (WorkerLost, carrying the batch, if a worker
        died)."""
        oldest = self._inflight[0]
        for part in oldest.parts:
            while part.result is None and not part.future.done() and self._steal():
                await asyncio.sleep(0)  # let the loop see to the pages in flight meanwhile
        self._inflight.popleft()
        results: Result = []
        for part in oldest.parts:
            if part.result is not None:
                results += part.result
                continue
            try:
                results += await asyncio.wrap_future(part.future)  # type: ignore[arg-type]
            except Exception as exc:  # prepare() raises nothing: the worker itself failed
                raise WorkerLost(f"import worker lost: {type(exc).__name__}: {exc}",
                                 oldest.items) from exc
        return oldest.items, results

    def _steal(self) -> bool:
        """Prepare here the newest part no worker has started; False if there is none."""
        for batch in reversed(self._inflight):
            for part in reversed(batch.parts):
                if part.result is None and part.future.cancel():  # now no worker starts it
                    if self._conv is None:
                        self._conv = self._setup.converter()
                    part.result = prepare_all(part.items, self._conv, self._setup)
                    self.stolen += 1
                    return True
        return False

    def stats(self) -> dict[str, int]:
        """Parts submitted and prepared here; the workers' peak RSS and CPU so far (read
        from /proc: 0 elsewhere)."""
        return {"workers": len(self._workers), "parts": self._submitted,
                "prepared_here": self.stolen,
                "workers_peak_rss_kb": sum(w.peak_rss_kb for w in self._workers),
                "workers_cpu_ms": sum(w.cpu_ms for w in self._workers)}

    def end_input(self) -> None:
        """Nothing more will be submitted: the workers may exit (each started batch is
        still collected by `next`)."""
        for worker in self._workers:
            worker.end_input()

    def close(self) -> None:
        """Stop the workers; batches not yet collected are dropped."""
        for batch in self._inflight:
            for part in batch.parts:
                part.future.cancel()
        self._inflight.clear()
        for worker in self._workers:
            worker.close()
        self._workers = []
