"""systemd's notify protocol (sd_notify), by hand: one datagram to $NOTIFY_SOCKET.

A dependency (python-systemd, sdnotify) is not worth it for three messages. Outside systemd
NOTIFY_SOCKET is unset and every call is a silent no-op, so the daemon calls these freely.

    READY=1      after the scheduler started (Type=notify: `systemctl start` returns then)
    WATCHDOG=1   at half of $WATCHDOG_USEC while the scheduler is alive (WatchdogSec=)
    STOPPING=1   when a signal asked us to stop
    STATUS=...   one line shown by `systemctl status`
"""

from __future__ import annotations

import asyncio
import os
import socket
from collections.abc import Callable

__all__ = ["notify", "watchdog", "watchdog_period"]


def _address(raw: str) -> str:
    # "@name" is Linux's abstract namespace, written with a leading NUL byte on the wire.
    return "\0" + raw[1:] if raw.startswith("@") else raw


def notify(*lines: str, env: dict[str, str] | None = None) -> bool:
    """Send `lines` (e.g. "READY=1", "STATUS=syncing") to systemd; False when not under systemd
    or when the message could not be sent (never raises: a notify problem must not stop a
    sync)."""
    raw = (env if env is not None else os.environ).get("NOTIFY_SOCKET", "")
    if not raw or not lines or raw[0] not in "/@":
        return False
    # A newline inside a value would start a new assignment: keep STATUS to one line.
    message = "\n".join(line.replace("\n", " ") for line in lines).encode("utf-8")
    try:
        # Non-blocking: with a full queue (nobody reading) the message is dropped, never waited on.
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC
                           | socket.SOCK_NONBLOCK) as sock:
            sock.connect(_address(raw))
            sock.sendall(message)
    except OSError:
        return False
    return True


def watchdog_period(env: dict[str, str] | None = None) -> float | None:
    """Seconds between WATCHDOG=1 pings (half of WatchdogSec, as sd_watchdog_enabled advises),
    or None when no watchdog is asked of this process."""
    env = env if env is not None else dict(os.environ)
    usec = env.get("WATCHDOG_USEC", "")
    pid = env.get("WATCHDOG_PID", "")
    if pid and pid != str(os.getpid()):
        return None  # meant for another process (e.g. inherited from a parent)
    try:
        value = int(usec)
    except ValueError:
        return None
    return value / 2 / 1_000_000 if value > 0 else None


async def watchdog(period: float, alive: Callable[[], bool]) -> None:
    """Ping every `period` seconds while `alive()`: a hung loop or a dead scheduler stops the
    pings, and systemd restarts the service after WatchdogSec."""
    while True:
        if alive():
            notify("WATCHDOG=1")
        await asyncio.sleep(period)
