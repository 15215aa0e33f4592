"""Serving the emulator over real HTTP: in a background thread for tests, blocking for the CLI.

`EmulatorServer` binds its socket itself before uvicorn starts, so `.url` is known (port 0 picks
a free port) and no test can race the bind. It stops cleanly: hanging fault requests are cut
short through `Emulator.closing`, and uvicorn's graceful shutdown is bounded.
"""

from __future__ import annotations

import socket
import threading
import time
from types import TracebackType
from typing import Any

import uvicorn

from sync.emulator.app import create_app
from sync.emulator.config import EmulatorConfig
from sync.emulator.emulator import Emulator

_START_TIMEOUT = 10.0  # seconds to wait for uvicorn to come up before giving up


def _bind(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    # proto must be IPPROTO_TCP, not 0: asyncio only sets TCP_NODELAY on accepted sockets whose
    # proto says TCP, and without it small answers wait ~40 ms on Nagle + delayed ACK.
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError:
        sock.close()
        raise
    sock.set_inheritable(True)
    return sock


def _uvicorn(app: Any, host: str, port: int, log_level: str) -> uvicorn.Server:
    config = uvicorn.Config(app, host=host, port=port, log_level=log_level, lifespan="off",
                            access_log=False, timeout_graceful_shutdown=2)
    return uvicorn.Server(config)


class EmulatorServer:
    """The emulator on a loopback port in a background thread, as a context manager.

        with EmulatorServer(EmulatorConfig(contacts=100)) as server:
            httpx.get(server.url + "/api/auth", params={"apiKey": "demo-key"})
    """

    def __init__(self, config: EmulatorConfig | Emulator | None = None,
                 host: str = "127.0.0.1", port: int = 0) -> None:
        self._owns_emulator = not isinstance(config, Emulator)  # then stop() closes it
        self.emulator = config if isinstance(config, Emulator) else Emulator(config)
        self.app = create_app(emulator=self.emulator)
        self.host = host
        self._socket = _bind(host, port)
        self.port: int = self._socket.getsockname()[1]
        self._server = _uvicorn(self.app, host, self.port, "warning")
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"

    def start(self) -> EmulatorServer:
        """Start serving; returns once uvicorn accepts connections."""
        if self._thread is not None:
            raise RuntimeError("EmulatorServer already started")
        if self._socket.fileno() == -1:
            raise RuntimeError("EmulatorServer was stopped; create a new one")
        self.emulator.closing.clear()
        self._thread = threading.Thread(target=self._server.run,
                                        kwargs={"sockets": [self._socket]},
                                        name=f"emulator:{self.port}", daemon=True)
        self._thread.start()
        deadline = time.monotonic() + _START_TIMEOUT
        while not self._server.started:
            if not self._thread.is_alive() or time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"the emulator did not start on {self.url}")
            time.sleep(0.01)
        return self

    def stop(self) -> None:
        """Stop serving and release the port (idempotent)."""
        self.emulator.closing.set()  # releases any request hanging on a timeout fault
        self._server.should_exit = True
        if self._thread is not None:
            self._thread.join(timeout=10)
            self._thread = None
        self._socket.close()
        if self._owns_emulator:
            self.emulator.close()  # releases its SQLite file, if it has one

    def __enter__(self) -> EmulatorServer:
        return self.start()

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()


def serve(config: EmulatorConfig | Emulator | None = None, host: str = "127.0.0.1",
          port: int = 8765, *, log_level: str = "info") -> None:
    """Serve the emulator until interrupted: `crm-sync emulator`. It is closed on the way out
    (its SQLite file, if any, released).

    Ctrl-C (SIGINT) shuts down gracefully and returns. On SIGTERM uvicorn shuts down and then
    re-raises the signal, so the process ends as terminated by SIGTERM (what systemd expects).
    """
    emulator = config if isinstance(config, Emulator) else Emulator(config)
    server = _uvicorn(create_app(emulator=emulator), host, port, log_level)
    try:
        server.run()
    except KeyboardInterrupt:  # uvicorn re-raises the captured SIGINT after its shutdown
        pass
    finally:
        emulator.closing.set()
        emulator.close()
