"""Worker processes for a first import's per-contact work (`sync/prepare.py`).

A first import is CPU-bound Python: decoding, reading into the canonical form, row values and
bookkeeping texts take about half of it, and one process runs on one core. These workers take
that half to other cores while the cycle's own process fetches pages and writes rows.

Each worker is `python -m sync.import_worker`, a process of its own started with
`subprocess`, not `multiprocessing`: spawn and forkserver import the parent's main module
again in the child, and a script without a `__main__` guard (or `python -m sync` itself)
would run its cycle a second time there. Batches go down the worker's stdin and results come
up its stdout as length-prefixed pickles (a pipe between this process and its own child:
nothing else can write to it). One thread per worker sends a batch, waits for its result and
resolves the batch's future, so the event loop never blocks on a pipe and a worker never
waits for the loop to finish writing a chunk.

A worker whose parent dies (kill -9) reads the end of its stdin and exits. Workers are given
the environment without the `CRM_SYNC_*` settings: they never see the API key, and need none
(they talk neither to the CRM nor to the database).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import pickle
import queue
import struct
import subprocess
import sys
import threading
from collections import deque
from concurrent.futures import Future
from pathlib import Path
from typing import IO, Any

from sync.api.adapter import Listed
from sync.convert import Converter
from sync.prepare import ImportSetup, Prepared, prepare_all

__all__ = ["ImportPool", "Result", "WorkerLost", "read_frame", "write_frame"]

Result = list[Prepared | str | None]
_LENGTH = struct.Struct(">Q")
_STOP: Any = object()


def _peak_rss_kb(pid: int) -> int:
    try:
        with open(f"/proc/{pid}/status") as status:
            return next((int(line.split()[1]) for line in status
                         if line.startswith("VmHWM:")), 0)
    except (OSError, ValueError):
        return 0


class WorkerLost(RuntimeError):
    """A worker process died or could not start: `items` are to be done in this process."""

    def __init__(self, message: str, items: list[Listed]):
        super().__init__(message)
        self.items = items


def write_frame(stream: IO[bytes], obj: object) -> None:
    data = pickle.dumps(obj, protocol=pickle.HIGHEST_PROTOCOL)
    stream.write(_LENGTH.pack(len(data)))
    stream.write(data)
    stream.flush()


def read_frame(stream: IO[bytes]) -> Any:
    """The next object, or _STOP at the end of the stream; EOFError if it ends mid-frame."""
    head = stream.read(_LENGTH.size)
    if not head:
        return _STOP
    (size,) = _LENGTH.unpack(head) if len(head) == _LENGTH.size else (-1,)
    data = stream.read(size) if size >= 0 else b""
    if size < 0 or len(data) != size:
        raise EOFError("the stream ended inside a frame")
    return pickle.loads(data)


class _Worker:
    """One worker process and the thread that talks to it."""

    def __init__(self, setup: ImportSetup, index: int):
        env = {k: v for k, v in os.environ.items() if not k.startswith("CRM_SYNC_")}
        # the directory `sync` was imported from: a child of an embedding app finds it too
        root = str(Path(__file__).resolve().parent.parent)
        env["PYTHONPATH"] = os.pathsep.join(p for p in (root, env.get("PYTHONPATH")) if p)
        self.process = subprocess.Popen(
            [sys.executable, "-m", "sync.import_worker"], stdin=subprocess.PIPE,
            stdout=subprocess.PIPE, env=env)
        self.jobs: queue.SimpleQueue[tuple[list[Listed], Future[Result]] | None] = (
            queue.SimpleQueue())
        self.thread = threading.Thread(target=self._run, args=(setup,), daemon=True,
                                       name=f"crm-sync-import-worker-{index}")
        self.thread.start()

    def _run(self, setup: ImportSetup) -> None:
        stdin, stdout = self.process.stdin, self.process.stdout
        assert stdin is not None and stdout is not None
        failure: BaseException | None = None
        try:
            write_frame(stdin, setup)
        except OSError as exc:
            failure = exc
        while (job := self.jobs.get()) is not None:
            items, future = job
            if not future.set_running_or_notify_cancel():
                continue
            if failure is None:
                try:
                    write_frame(stdin, items)
                    result = read_frame(stdout)
                    if result is _STOP:
                        raise EOFError(f"the worker exited (code {self.process.poll()})")
                    future.set_result(result)
                    continue
                except (OSError, EOFError, pickle.UnpicklingError) as exc:
                    failure = exc
            future.set_exception(failure)

    def close(self) -> None:
        self.jobs.put(None)
        if self.process.stdin is not None:
            with contextlib.suppress(OSError):
                self.process.stdin.close()  # the worker reads the end and exits
        try:
            self.process.wait(timeout=5)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        self.thread.join(timeout=5)
        if self.process.stdout is not None:
            self.process.stdout.close()


class _Batch:
    __slots__ = ("future", "items", "result")

    def __init__(self, items: list[Listed], future: Future[Result]):
        self.items, self.future = items, future
        self.result: Result | None = None  # prepared here instead (stolen back)


class ImportPool:
    """Batches of listed items in, `prepare_all`'s results out, in the order submitted.

    At most `window` batches are in flight, so memory stays bounded whatever the listing's
    size; `submit` returns at once, `next` waits for the oldest batch. While it would wait,
    it takes back the newest batch no worker has started and prepares it in this process, so
    the work splits itself between the workers and this process, whichever is faster.
    """

    def __init__(self, setup: ImportSetup, workers: int, *, window: int | None = None):
        if workers < 1:
            raise ValueError(f"workers must be at least 1, not {workers}")
        self.window = window if window is not None else workers + 2
        self._setup, self._size = setup, workers
        self._conv: Converter | None = None
        self._workers: list[_Worker] = []
        self._submitted = 0
        self._inflight: deque[_Batch] = deque()
        self.stolen = 0  # batches prepared in this process

    @property
    def full(self) -> bool:
        return len(self._inflight) >= self.window

    @property
    def pids(self) -> list[int]:
        return [w.process.pid for w in self._workers]

    def __len__(self) -> int:
        return len(self._inflight)

    def submit(self, items: list[Listed]) -> None:
        future: Future[Result] = Future()
        try:
            if not self._workers:  # started with the first batch: a short listing never pays
                self._workers = [_Worker(self._setup, i) for i in range(self._size)]
            worker = self._workers[self._submitted % len(self._workers)]
            worker.jobs.put((items, future))
        except OSError as exc:  # could not start a process
            future.set_exception(exc)
        self._submitted += 1
        self._inflight.append(_Batch(items, future))

    async def next(self) -> tuple[list[Listed], Result]:
        """The oldest batch and its results (WorkerLost, carrying the batch, if its worker
        died)."""
        oldest = self._inflight[0]
        while oldest.result is None and not oldest.future.done() and self._steal():
            await asyncio.sleep(0)  # let the loop see to the pages in flight meanwhile
        self._inflight.popleft()
        if oldest.result is not None:
            return oldest.items, oldest.result
        try:
            return oldest.items, await asyncio.wrap_future(oldest.future)
        except Exception as exc:  # prepare() raises nothing: the worker itself failed
            raise WorkerLost(f"import worker lost: {type(exc).__name__}: {exc}",
                             oldest.items) from exc

    def _steal(self) -> bool:
        """Prepare here the newest batch no worker has started; False if there is none."""
        for batch in reversed(self._inflight):
            if batch.result is None and batch.future.cancel():  # not started: now it never is
                if self._conv is None:
                    self._conv = Converter(self._setup.spec)
                batch.result = prepare_all(batch.items, self._conv, self._setup)
                self.stolen += 1
                return True
        return False

    def stats(self) -> dict[str, int]:
        """Batches submitted and prepared here; the workers' peak RSS so far (Linux)."""
        return {"workers": len(self._workers), "batches": self._submitted,
                "prepared_here": self.stolen,
                "workers_peak_rss_kb": sum(_peak_rss_kb(pid) for pid in self.pids)}

    def close(self) -> None:
        """Stop the workers; batches not yet collected are dropped."""
        for batch in self._inflight:
            batch.future.cancel()
        self._inflight.clear()
        for worker in self._workers:
            worker.close()
        self._workers = []
