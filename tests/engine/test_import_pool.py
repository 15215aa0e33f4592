"""The worker processes of a first import (sync/import_pool.py, sync/import_worker.py) and
what they compute (sync/prepare.py), on their own: results in order, items the usual path
must plan handed back as such, and workers that go when the cycle's process is killed."""

from __future__ import annotations

import io
import json
import os
import pickle
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import msgspec
import pytest

from sync.api import adapter
from sync.api.adapter import Listed
from sync.convert import Converter
from sync.emulator import operations as ops
from sync.emulator.config import EmulatorConfig
from sync.emulator.emulator import Emulator
from sync.import_pool import ImportPool
from sync.import_worker import STOP, default_workers, read_frame, write_frame
from sync.mapping_file import load_mapping
from sync.merge import Policy
from sync.prepare import ImportSetup, Prepared, prepare_all
from sync.settings import default_mapping_file


def _listed(n: int, seed: int = 5) -> list[Listed]:
    emu = Emulator(EmulatorConfig(contacts=n, seed=seed, page_size_cap=n))
    payload = ops.list_contacts(emu, {"page": "1", "size": str(n)}, None)
    return list(adapter.page_from_wire(msgspec.Raw(payload), 1).listed)


def _setup(mapping: Path | None = None, *, read_only_table: bool = False) -> ImportSetup:
    spec = load_mapping(mapping or default_mapping_file())
    return ImportSetup(spec, Policy.REMOTE_WINS, spec.directions(), read_only_table)


def test_the_setup_crosses_to_a_worker_and_back_unchanged() -> None:
    setup = _setup()
    again = pickle.loads(pickle.dumps(setup))
    assert again == setup and again.policy is setup.policy


def test_prepare_hands_back_what_it_does_not_cover(tmp_path: Path) -> None:
    mapping = tmp_path / "m.yaml"
    mapping.write_text(default_mapping_file().read_text(encoding="utf-8")
                       + "  - {custom: Điểm, column: diem, type: integer}\n", encoding="utf-8")
    setup = _setup(mapping)
    items = _listed(6)
    plain = next(x for x in items if x.ref_id)
    bad = items[1]._replace(raw=json.dumps({
        "public_id": "x", "ref_id": "KH-BAD", "attribute_structure": [
            {"field_code": "more_infomation", "field_type": "customize", "value": [
                {"display_value": "chín", "data_type": "label1", "value_type": "Điểm"}]}],
    }).encode())
    unreadable = items[2]._replace(raw=b"[1, 2]")  # not a contact object
    ui_made = items[2]._replace(raw=b'{"public_id": "y", "attribute_structure": 7}')
    out = prepare_all([plain, bad, unreadable, ui_made], Converter(setup.spec), setup)
    assert isinstance(out[0], Prepared) and out[0].key == plain.ref_id
    assert out[0].row["crm_id"] == plain.public_id and out[0].status == "synced"
    assert json.loads(out[0].base)["full_name"] == out[0].row["full_name"]
    assert out[1] == "KH-BAD"  # a row error: the usual path records it
    assert out[2] is None
    assert isinstance(out[3], Prepared) and (out[3].key, out[3].status) == ("crm:y", "read_only")


def test_a_pull_only_table_records_read_only_contacts() -> None:
    setup = _setup(read_only_table=True)
    out = prepare_all(_listed(2), Converter(setup.spec), setup)
    assert [p.status for p in out if isinstance(p, Prepared)] == ["read_only", "read_only"]


async def test_results_come_back_in_the_order_submitted() -> None:
    items = _listed(40)
    setup = _setup()
    expected = prepare_all(items, Converter(setup.spec), setup)
    pool = ImportPool(setup, workers=2, window=4)
    try:
        for start in range(0, 40, 7):
            pool.submit(items[start:start + 7])
        assert pool.full and len(pool) == 6
        got: list[Prepared | str | None] = []
        while len(pool):
            batch, results = await pool.next()
            assert batch == items[len(got):len(got) + len(batch)]
            got += results
    finally:
        pool.close()
    assert got == expected


async def test_workers_told_the_input_ended_exit_while_batches_are_collected() -> None:
    """end_input lets each worker exit by itself (the pooled import builds its indexes
    meanwhile), and every batch already submitted still comes back."""
    items = _listed(20)
    setup = _setup()
    pool = ImportPool(setup, workers=2, window=4)
    try:
        pool.submit(items[:10])
        pool.submit(items[10:])
        pool.end_input()
        pool.end_input()  # idempotent
        for batch in pool._inflight:  # the workers' own (next() would take back a waiting one)
            for part in batch.parts:
                part.future.result(timeout=60)
        got: list[Prepared | str | None] = []
        while len(pool):
            got += (await pool.next())[1]
        assert got == prepare_all(items, Converter(setup.spec), setup)
        for worker in pool._workers:
            assert worker.process.wait(timeout=30) == 0  # gone without close()
        if Path("/proc/self/status").exists():  # their last figures, read before they went
            stats = pool.stats()
            assert stats["workers_peak_rss_kb"] > 20_000 * len(pool._workers)  # 35 MB each
            assert stats["workers_cpu_ms"] > 0
    finally:
        pool.close()


async def test_batches_no_worker_started_are_prepared_here_while_waiting() -> None:
    """The worker starts on the first batch (a process to start: tens of milliseconds at
    least); meanwhile the newest batches, not started, are taken back and prepared here."""
    items = _listed(50)
    setup = _setup()
    pool = ImportPool(setup, workers=1)
    try:
        for start in range(0, 50, 10):
            pool.submit(items[start:start + 10])
        got: list[Prepared | str | None] = []
        while len(pool):
            got += (await pool.next())[1]
    finally:
        pool.close()
    assert 1 <= pool.stolen <= 5  # all five, if the worker had not even taken the first
    assert got == prepare_all(items, Converter(setup.spec), setup)


_ORPHAN = textwrap.dedent("""
    import asyncio, os, signal, sys
    from sync.api.adapter import Listed
    from sync.import_pool import ImportPool
    from sync.mapping_file import load_mapping
    from sync.merge import Policy
    from sync.prepare import ImportSetup
    from sync.settings import default_mapping_file

    async def main():
        spec = load_mapping(default_mapping_file())
        pool = ImportPool(ImportSetup(spec, Policy.REMOTE_WINS, spec.directions(), False), 1)
        pool.submit([Listed("p1", "KH-1", False, "d1", b'{"public_id": "p1", "ref_id": "KH-1"}')])
        await pool.next()
        print(*pool.pids, flush=True)
        os.kill(os.getpid(), signal.SIGKILL)

    asyncio.run(main())
""")


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().split(") ")[1][0]
    except (FileNotFoundError, IndexError):
        return False
    return state not in ("Z", "X")  # a zombie has exited: only its reaping is left


@pytest.mark.skipif(not Path("/proc").is_dir(), reason="reads /proc to see the workers")
def test_workers_exit_when_the_cycle_process_is_killed() -> None:
    parent = subprocess.run([sys.executable, "-c", _ORPHAN], capture_output=True, text=True,
                            timeout=60, env={**os.environ, "PYTHONPATH": os.getcwd()})
    assert parent.returncode == -9, parent.stderr
    pids = [int(p) for p in parent.stdout.split()]
    assert pids
    deadline = time.monotonic() + 10
    while any(_alive(p) for p in pids) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not any(_alive(p) for p in pids), f"orphaned workers still running: {pids}"


def test_a_pool_needs_a_worker() -> None:
    with pytest.raises(ValueError, match="at least 1"):
        ImportPool(_setup(), workers=0)


@pytest.mark.skipif(not Path("/proc").is_dir(), reason="reads /proc to see the workers")
async def test_workers_get_no_crm_sync_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CRM_SYNC_API_KEY", "sk-never-in-a-worker")
    pool = ImportPool(_setup(), workers=1)
    try:
        pool.submit(_listed(2))
        await pool.next()
        environ = Path(f"/proc/{pool.pids[0]}/environ").read_bytes()
    finally:
        pool.close()
    assert b"sk-never-in-a-worker" not in environ and b"CRM_SYNC_" not in environ
    assert b"PYTHONPATH=" in environ


def test_a_worker_loads_no_http_client() -> None:
    """The worker reads items with the adapter alone: httpx (which brings its command line's
    click and rich), tenacity and structlog stay out, so it starts sooner and smaller."""
    code = ("import sys, sync.import_worker, sync.api.adapter; "
            "print(sorted({'httpx', 'tenacity', 'structlog', 'rich', 'click'} & set(sys.modules)))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True, env={k: v for k, v in os.environ.items()
                                          if not k.startswith("CRM_SYNC_")})
    assert out.stdout.strip() == "[]", out.stdout
    from sync.api import OmiClient, RequestEvent  # the package still gives the client
    from sync.api.client import OmiClient as Client
    assert OmiClient is Client and RequestEvent.__name__ == "RequestEvent"
    with pytest.raises(AttributeError, match="no attribute 'Nothing'"):
        import sync.api
        sync.api.Nothing  # noqa: B018


@pytest.mark.parametrize(("cores", "workers"), [(1, 0), (2, 1), (3, 2), (16, 2)])
def test_default_workers_leave_a_core_to_the_cycle(monkeypatch: pytest.MonkeyPatch,
                                                   cores: int, workers: int) -> None:
    monkeypatch.setattr(os, "sched_getaffinity", lambda _pid: set(range(cores)),
                        raising=False)
    assert default_workers() == workers


def test_frames_round_trip_and_a_cut_frame_is_an_eof() -> None:
    stream = io.BytesIO()
    write_frame(stream, [1, "a"])
    write_frame(stream, [])
    raw = stream.getvalue()
    frames = io.BytesIO(raw)
    assert [read_frame(frames), read_frame(frames)] == [[1, "a"], []]
    assert read_frame(frames) is STOP
    for cut in (3, 8, 12, len(raw) - 1):  # inside a head, after it, inside the last body
        frames = io.BytesIO(raw[:cut])
        with pytest.raises(EOFError, match="inside a frame"):
            while read_frame(frames) is not STOP:
                pass
