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

try:
    import fcntl
except ImportError:  # not on Windows: pipes keep their default size
    fcntl = None  # type: ignore[assignment]

from sync.api.adapter import Listed
from sync.convert import Converter
from sync.prepare import ImportSetup, Prepared, prepare_all

__all__ = ["ImportPool", "Result", "WorkerLost", "default_workers", "read_frame",
           "write_frame"]

Result = list[Prepared | str | None]
_LENGTH = struct.Struct(">Q")
_PIPE_BYTES = 1 << 20
_STOP: Any = object()


def _peak_rss_kb(pid: int) -> int:
    try:
        with open(f"/proc/{pid}/status") as status:
            return next((int(line.split()[1]) for line in status
                         if line.startswith("VmHWM:")), 0)
    except (OSError, ValueError):
        return 0


def _cpu_ms(pid: int) -> int:
    try:
        with open(f"/proc/{pid}/stat") as stat:
            fields = stat.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) * 1000 // os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError):
        return 0


class WorkerLost(RuntimeError):
    """A worker process died or could not start: `items` are to be done in this process."""

    def __init__(self, message: str, items: list[Listed]):
        super().__init__(message)
        self.items = items


def default_workers() -> int:
    """One worker per core beyond the first, at most two: on 2 cores the cycle's process and
    one worker keep both busy, and past two workers the cycle's own writing is the limit."""
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        cores = os.cpu_count() or 1
    return max(0, min(2, cores - 1))


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
    """One worker process and its two threads: one sends parts, one collects results.

    The sender keeps the next part waiting in the pipe while the worker prepares the current
    one, so the worker never waits for this process to get the GIL back (a single thread
    doing both left the worker idle about 40% of an import).
    """

    def __init__(self, setup: ImportSetup, index: int):
        env = {k: v for k, v in os.environ.items() if not k.startswith("CRM_SYNC_")}
        # the directory `sync` was imported from: a child of an embedding app finds it too
        root = str(Path(__file__).resolve().parent.parent)
        env["PYTHONPATH"] = os.pathsep.join(p for p in (root, env.get("PYTHONPATH")) if p)
        self.process = subprocess.Popen(
            [sys.executable, "-m", "sync.import_worker"], stdin=subprocess.PIPE,
            stdout=subprocess.PIPE, env=env)
        for pipe in (self.process.stdin, self.process.stdout):
            _widen(pipe)
        self.jobs: queue.SimpleQueue[tuple[list[Listed], Future[Result]] | None] = (
            queue.SimpleQueue())
        self._lock = threading.Lock()
        self._sent: deque[Future[Result]] = deque()  # in the order the worker answers
        self._broken: BaseException | None = None
        self.threads = [
            threading.Thread(target=target, daemon=True, name=f"crm-sync-import-{name}-{index}")
            for target, name in ((self._send, "send"), (self._collect, "collect"))]
        self._setup = setup
        for thread in self.threads:
            thread.start()

    def _send(self) -> None:
        stdin = self.process.stdin
        assert stdin is not None
        try:
            write_frame(stdin, self._setup)
        except OSError as exc:
            self._fail(exc)
        while (job := self.jobs.get()) is not None:
            items, future = job
            if not future.set_running_or_notify_cancel():
                continue  # taken back by the pool
            with self._lock:
                if self._broken is None:
                    self._sent.append(future)
            if self._broken is not None:
                _set_failed(future, self._broken)
                continue
            try:
                write_frame(stdin, items)
            except OSError as exc:
                self._fail(exc)
        with contextlib.suppress(OSError):
            stdin.close()  # the worker reads the end and exits

    def _collect(self) -> None:
        stdout = self.process.stdout
        assert stdout is not None
        while True:
            try:
                result = read_frame(stdout)
            except (OSError, EOFError, pickle.UnpicklingError) as exc:
                self._fail(exc)
                return
            if result is _STOP:
                self._fail(EOFError(f"the worker exited (code {self.process.poll()})"))
                return
            with self._lock:
                future = self._sent.popleft()
            future.set_result(result)

    def _fail(self, exc: BaseException) -> None:
        """The worker is gone: every part sent and not answered, and every later one, fails."""
        with self._lock:
            self._broken = self._broken or exc
            pending, self._sent = list(self._sent), deque()
        for future in pending:
            _set_failed(future, self._broken)

    def close(self) -> None:
        self.jobs.put(None)
        try:
            self.process.wait(timeout=5)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        for thread in self.threads:
            thread.join(timeout=5)
        if self.process.stdout is not None:
            self.process.stdout.close()


def _widen(pipe: IO[bytes] | None) -> None:
    """A pipe that holds a whole part (Linux: up to pipe-max-size, 1 MB by default): with the
    default 64 KB, the worker stalled on writing a result until this process, busy with the
    GIL, read it in 64 KB turns."""
    setpipe = getattr(fcntl, "F_SETPIPE_SZ", None) if fcntl is not None else None
    if pipe is None or setpipe is None:
        return
    with contextlib.suppress(OSError):
        fcntl.fcntl(pipe.fileno(), setpipe, _PIPE_BYTES)


def _set_failed(future: Future[Result], exc: BaseException) -> None:
    if not future.done():
        future.set_exception(exc)


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
        self._workers: list[_Worker] = []
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
                    self._workers = [_Worker(self._setup, i) for i in range(self._size)]
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
                        self._conv = Converter(self._setup.spec)
                    part.result = prepare_all(part.items, self._conv, self._setup)
                    self.stolen += 1
                    return True
        return False

    def stats(self) -> dict[str, int]:
        """Parts submitted and prepared here; the workers' peak RSS and CPU so far (read
        from /proc: 0 elsewhere)."""
        return {"workers": len(self._workers), "parts": self._submitted,
                "prepared_here": self.stolen,
                "workers_peak_rss_kb": sum(_peak_rss_kb(pid) for pid in self.pids),
                "workers_cpu_ms": sum(_cpu_ms(pid) for pid in self.pids)}

    def close(self) -> None:
        """Stop the workers; batches not yet collected are dropped."""
        for batch in self._inflight:
            for part in batch.parts:
                part.future.cancel()
        self._inflight.clear()
        for worker in self._workers:
            worker.close()
        self._workers = []
