"""The reliability suite (`pytest -m reliability`): every scenario records its figures (runs,
kills, duplicates, lost, ...) here; they are printed at the end of the session and written as
JSON to $CRM_SYNC_RELIABILITY_JSON, or else to reliability.json in pytest's base temp dir.

PostgreSQL variants need CRM_SYNC_TEST_PG_URL and are skipped, saying so, only when it is unset.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

REPORT_ENV = "CRM_SYNC_RELIABILITY_JSON"
_FIGURES: dict[str, dict[str, Any]] = {}
_REPORT: list[Path] = []


class Figures:
    """`figures.record("scenario", runs=..., kills=..., duplicates=..., lost=...)`."""

    def record(self, scenario: str, **counts: Any) -> None:
        _FIGURES[scenario] = counts
        print(f"\n[reliability] {scenario}: {json.dumps(counts, ensure_ascii=False)}")


@pytest.fixture(scope="session")
def figures(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Figures]:
    yield Figures()
    path = Path(os.environ.get(REPORT_ENV) or
                tmp_path_factory.getbasetemp() / "reliability.json")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(_FIGURES, indent=2, ensure_ascii=False, default=str) + "\n",
                    encoding="utf-8")
    _REPORT.append(path)


def pytest_terminal_summary(terminalreporter: Any) -> None:
    if not _FIGURES:
        return
    tr = terminalreporter
    tr.section("reliability figures")
    for scenario, counts in _FIGURES.items():
        tr.write_line(f"{scenario}: " + ", ".join(f"{k}={v}" for k, v in counts.items()))
    for path in _REPORT:
        tr.write_line(f"written to {path}")


@pytest.fixture
def sqlite_url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path}/crm-sync.db"


@pytest.fixture
def pg_url(fresh_pg_url: str) -> str:
    """A PostgreSQL URL whose search_path is a fresh schema of the test's own (the engine owns
    the fixed-name table `contacts`), dropped at the end."""
    return fresh_pg_url


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def db_url(request: pytest.FixtureRequest) -> str:
    """A database of each kind."""
    name = "sqlite_url" if request.param == "sqlite" else "pg_url"
    return str(request.getfixturevalue(name))
