"""The collector's threshold while cycles run (sync/gcpolicy.py)."""

from __future__ import annotations

import gc
import threading
from collections.abc import Iterator

import pytest

from sync.gcpolicy import cycle_collector


@pytest.fixture(autouse=True)
def default_threshold() -> Iterator[None]:
    saved = gc.get_threshold()
    gc.set_threshold(700, 10, 10)
    yield
    gc.set_threshold(*saved)


def test_raised_for_the_cycle_and_restored_after() -> None:
    with cycle_collector(50_000):
        assert gc.get_threshold() == (50_000, 10, 10)
    assert gc.get_threshold() == (700, 10, 10)


def test_restored_when_the_cycle_fails() -> None:
    with pytest.raises(RuntimeError), cycle_collector(50_000):
        raise RuntimeError("boom")
    assert gc.get_threshold() == (700, 10, 10)


def test_a_higher_threshold_set_by_the_application_is_kept() -> None:
    gc.set_threshold(100_000, 5, 5)
    with cycle_collector(50_000):
        assert gc.get_threshold() == (100_000, 5, 5)
    assert gc.get_threshold() == (100_000, 5, 5)


def test_overlapping_cycles_restore_once_the_last_ends() -> None:
    # two tenants' cycles in threads, ending in the other order than they began
    first_in, second_in, first_may_end = threading.Event(), threading.Event(), threading.Event()
    seen: list[tuple[int, int, int]] = []

    def first() -> None:
        with cycle_collector(50_000):
            first_in.set()
            first_may_end.wait(5)
        seen.append(gc.get_threshold())

    def second() -> None:
        first_in.wait(5)
        with cycle_collector(50_000):
            second_in.set()
            first_may_end.set()
            t1.join(5)
            seen.append(gc.get_threshold())

    t1, t2 = threading.Thread(target=first), threading.Thread(target=second)
    t1.start()
    t2.start()
    t2.join(5)
    assert seen == [(50_000, 10, 10), (50_000, 10, 10)]
    assert gc.get_threshold() == (700, 10, 10)
