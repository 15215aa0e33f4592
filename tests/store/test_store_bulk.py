"""bulk.py's parameter building: each column through its bind processor, a value the rows
share processed once (the memo is by identity, so equal values that are distinct objects, and
mutable ones, are processed each time)."""

from __future__ import annotations

from typing import Any

from sync.store.bulk import Positional


def test_a_shared_value_is_processed_once_and_every_row_gets_it() -> None:
    calls: list[Any] = []

    def process(value: Any) -> Any:
        calls.append(value)
        return f"<{value}>"

    shared, other = ["a"], ["a"]  # equal, not the same object
    rows: list[dict[str, Any]] = [
        {"x": shared, "y": 1}, {"x": shared, "y": 2}, {"x": other, "y": 3},
        {"x": None, "y": 4}, {"x": None, "y": 5}, {"x": shared, "y": 6}]
    bound = Positional("INSERT ...", ["x", "y"], [process, None])
    got = list(bound._values(rows, strict=True))
    assert got == [["<['a']>", 1], ["<['a']>", 2], ["<['a']>", 3], ["<None>", 4],
                   ["<None>", 5], ["<['a']>", 6]]
    assert calls == [shared, other, None, shared]
