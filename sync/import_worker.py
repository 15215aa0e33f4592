"""One worker process of a first import's pool (`import_pool.py`): both ends of its pipes.

`python -m sync.import_worker` is the worker: it reads an ImportSetup, then parts (lists of
listed items, each as its JSON bytes and digest), from stdin, and writes `prepare_all`'s
result for each part to stdout, as length-prefixed pickles. It exits at the end of stdin,
which is also what it reads when the cycle's process dies (kill -9): nobody else holds that
pipe. Nothing else may write to its stdout, so the frames get a copy of it and file
descriptor 1 is pointed at stderr: a stray print cannot corrupt a frame.

`WorkerProcess` is the cycle's end: it starts the worker with `subprocess`, not
`multiprocessing` (spawn and forkserver import the parent's main module again in the child,
and a script without a `__main__` guard, or `python -m sync` itself, would run its cycle a
second time there), without the `CRM_SYNC_*` settings in its environment (it never sees the
API key, and needs none: it talks neither to the CRM nor to the database). Two threads talk
to it: one keeps the next part waiting in the pipe while the worker prepares the current
one, one collects results and resolves each part's future, so neither the event loop nor the
worker waits on the other.
"""

from __future__ import annotations

import contextlib
import gc
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
except ImportError:  # Windows: pipes keep their default size
    fcntl = None  # type: ignore[assignment]

from sync.api.adapter import Listed
from sync.gcpolicy import CYCLE_GEN0_THRESHOLD
from sync.prepare import ImportSetup, Prepared, prepare_json

__all__ = ["STOP", "Result", "WorkerProcess", "default_workers", "read_frame", "write_frame"]

Result = list[Prepared | str | None]
_LENGTH = struct.Struct(">Q")
_PIPE_BYTES = 1 << 20
STOP: Any = object()  # read_frame: the end of the stream


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
    """The next object, or STOP at the end of the stream; EOFError if it ends mid-frame."""
    head = stream.read(_LENGTH.size)
    if not head:
        return STOP
    size = _LENGTH.unpack(head)[0] if len(head) == _LENGTH.size else -1
    data = stream.read(size) if size > 0 else b""
    if len(data) != size:  # also a head cut short (size -1)
        raise EOFError("the stream ended inside a frame")
    return pickle.loads(data)


class WorkerProcess:
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
        self._ended = False
        self._peak_rss_kb = self._cpu_ms = 0
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
            try:  # an item's bytes and digest are all prepare_json needs
                write_frame(stdin, [(x.raw, x.digest) for x in items])
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
            if result is STOP:
                self._fail(EOFError(f"the worker exited (code {self.process.poll()})"))
                return
            with self._lock:
                future = self._sent.popleft()
            if self._ended:  # told to exit: each last result may be its last figures
                self._read_figures()
            future.set_result(result)

    def _fail(self, exc: BaseException) -> None:
        """The worker is gone: every part sent and not answered, and every later one, fails."""
        with self._lock:
            self._broken = self._broken or exc
            pending, self._sent = list(self._sent), deque()
        for future in pending:
            _set_failed(future, self._broken)

    @property
    def peak_rss_kb(self) -> int:
        """The process's peak RSS so far (Linux: 0 elsewhere), the last one read once it has
        exited (an exited process has no memory to report)."""
        self._read_figures()
        return self._peak_rss_kb

    @property
    def cpu_ms(self) -> int:
        """The process's CPU time so far (Linux: 0 elsewhere), the last one read once it is
        gone."""
        self._read_figures()
        return self._cpu_ms

    def end_input(self) -> None:
        """No more parts: the worker reads the end of its input and exits, while this
        process goes on (close() then finds it gone). Its peak RSS and CPU are read first."""
        if not self._ended:
            self._ended = True
            self._read_figures()
            self.jobs.put(None)

    def _read_figures(self) -> None:
        """Read the peak RSS and CPU now, kept should the process be gone when next asked."""
        self._peak_rss_kb = max(self._peak_rss_kb, _peak_rss_kb(self.process.pid))
        self._cpu_ms = max(self._cpu_ms, _cpu_ms(self.process.pid))

    def close(self) -> None:
        self.end_input()
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


def main() -> int:
    frames_in = sys.stdin.buffer
    frames_out = os.fdopen(os.dup(sys.stdout.fileno()), "wb")
    os.dup2(sys.stderr.fileno(), sys.stdout.fileno())
    # a part's objects die with it: the cyclic collector would only walk them (as in a cycle)
    gc.set_threshold(CYCLE_GEN0_THRESHOLD, *gc.get_threshold()[1:])
    setup = read_frame(frames_in)
    if not isinstance(setup, ImportSetup):
        return 0  # the end of stdin: the pool closed before the first batch
    conv = setup.converter()
    while isinstance(batch := read_frame(frames_in), list):
        write_frame(frames_out, [prepare_json(raw, digest, conv, setup) for raw, digest in batch])
    return 0


if __name__ == "__main__":
    sys.exit(main())
