"""kill -9 during a push (a real process, a slow emulator): no duplicate, no silent loss.

Every local note ends sent, or unknown and visible; `unknown` ones are not re-sent by the next
push, only after `resend`.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

from sync.emulator import EmulatorConfig, EmulatorServer

from .conftest import API_KEY, Setup, client_for

ROOT = Path(__file__).resolve().parents[2]
N, BATCH = 40, 5


def wait_for(check: object, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not check():  # type: ignore[operator]
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(0.01)


async def test_kill_9_mid_push(setup: Setup) -> None:
    ids = setup.add_notes([{"phone": f"09{i:08d}", "content": f"Ghi chú {i}",
                            "note_by": "an.le@shop.vn"} for i in range(N)])
    with EmulatorServer(EmulatorConfig(api_key=API_KEY, latency=0.3)) as server:
        proc = subprocess.Popen(
            [sys.executable, str(Path(__file__).with_name("pusher.py")), setup.url, setup.tenant,
             server.url, str(BATCH)],
            cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)},
            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        try:
            def mid_batch() -> bool:
                c = setup.outbox.counts()
                return c["sent"] >= 2 * BATCH and c["in_flight"] > 0
            wait_for(mid_batch, 30, "a batch in flight after two sent")
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait(timeout=10)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
        assert proc.returncode == -signal.SIGKILL
        before = setup.outbox.counts()
        assert before["in_flight"] == BATCH and before["unknown"] == 0
        time.sleep(0.6)  # the request the dead process made may still be served

        assert setup.outbox.recover() == BATCH  # the next cycle's first step
        rows = setup.outbox_rows()
        unknown = sorted(i for i, r in rows.items() if r["status"] == "unknown")
        assert len(unknown) == BATCH
        async with client_for(server.url) as client:
            counts = await setup.outbox.push(client, batch_size=BATCH)
            assert counts == Counter(notes_sent=N - before["sent"] - BATCH)
            assert await setup.outbox.push(client) == Counter()

        got = Counter(n["content"] for n in server.emulator.notes)
        assert max(got.values()) == 1  # never duplicated
        rows = setup.outbox_rows()
        by_content = {f"Ghi chú {k}": i for k, i in enumerate(ids)}
        for content, note_id in by_content.items():
            status = rows[note_id]["status"]
            assert status in ("sent", "unknown")
            if status == "sent":
                assert got[content] == 1  # every sent note arrived
            elif got[content] == 0:
                pass  # not arrived, and visibly unknown: nothing lost silently
        assert set(got) <= set(by_content)
        final = setup.outbox.counts()
        assert final == {"pending": 0, "in_flight": 0, "sent": N - BATCH, "failed": 0,
                         "unknown": BATCH}

        # the operator looks, then re-sends: they go out with the next push
        assert setup.outbox.resend_unknown(dry_run=True) == unknown
        assert setup.outbox.resend_unknown(dry_run=False) == unknown
        async with client_for(server.url) as client:
            assert await setup.outbox.push(client) == Counter(notes_sent=BATCH)
        assert setup.outbox.counts()["sent"] == N
