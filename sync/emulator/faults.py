"""Fault injection: which /api call fails, and how a failure looks on the wire.

A fault is drawn BEFORE the handler runs, and a faulted call changes nothing: a client that
retries a 500, a 429, a malformed answer or a timeout can never have created a contact behind
its back. Timeouts in particular hang first and then answer 504 without executing: with the
alternative (execute, then hang) a timed-out write would land after the client gave up, which
is realistic but makes "did it happen?" depend on timing; the client must check before
re-sending creates anyway (architecture.md), and determinism keeps the test suites honest.
"""

from __future__ import annotations

import enum
import random
from collections.abc import Callable

from starlette.responses import Response

from sync.emulator.config import EmulatorConfig


class Fault(enum.Enum):
    ERROR_500 = "error_500"
    RATE_429 = "rate_429"
    TIMEOUT = "timeout"
    MALFORMED = "malformed"


_HTML_500 = (
    "<html>\r\n<head><title>500 Internal Server Error</title></head>\r\n<body>\r\n"
    "<center><h1>500 Internal Server Error</h1></center>\r\n<hr><center>nginx</center>\r\n"
    "</body>\r\n</html>\r\n"
)
_HTML_504 = _HTML_500.replace("500 Internal Server Error", "504 Gateway Time-out")
# A body cut mid-way, as when a proxy drops the connection: valid prefix, invalid JSON.
_TRUNCATED = (
    '{"status_code":9999,"instance_id":"emulator","instance_version":"1.2.164",'
    '"payload":{"items":[{"public_id":"'
)


class FaultInjector:
    """Draws one uniform number per /api call and maps it onto the configured rates.

    The rates are cumulative bands of one draw, so they are exclusive and their sum is the
    fraction of faulted calls. Seeded from the config: a run with the same seed and the same
    sequence of calls sees the same faults.
    """

    def __init__(self, seed: int) -> None:
        self._rng = random.Random(f"faults:{seed}")
        self.counts: dict[str, int] = {f.value: 0 for f in Fault}

    def reseed(self, seed: int) -> None:
        self._rng = random.Random(f"faults:{seed}")

    def draw(self, config: EmulatorConfig, *, malformed_allowed: bool = True) -> Fault | None:
        """The fault for this call, or None. Auth calls never get a malformed body."""
        u = self._rng.random()
        bands = (
            (Fault.ERROR_500, config.error_500_rate),
            (Fault.RATE_429, config.rate_429_rate),
            (Fault.TIMEOUT, config.timeout_rate),
            (Fault.MALFORMED, config.malformed_rate if malformed_allowed else 0.0),
        )
        edge = 0.0
        for fault, rate in bands:
            edge += rate
            if rate > 0 and u < edge:
                self.counts[fault.value] += 1
                return fault
        return None


def retry_after_header(seconds: float) -> str:
    """Retry-After as configured: "1" for whole seconds, "0.05" for a fractional knob.

    HTTP says integer seconds; fractions keep tests fast, and clients parse a float.
    """
    text = f"{seconds:.6f}".rstrip("0").rstrip(".")
    return text or "0"


def fault_response(fault: Fault, config: EmulatorConfig,
                   envelope: Callable[[str], bytes]) -> Response:
    """The answer of a faulted call (TIMEOUT: what comes after the hang)."""
    if fault is Fault.ERROR_500:
        return Response(_HTML_500, status_code=500, media_type="text/html")
    if fault is Fault.RATE_429:
        return Response(envelope("too_many_requests"), status_code=429,
                        media_type="application/json",
                        headers={"Retry-After": retry_after_header(config.retry_after)})
    if fault is Fault.TIMEOUT:
        return Response(_HTML_504, status_code=504, media_type="text/html")
    return Response(_TRUNCATED, status_code=200, media_type="application/json")
