"""`crm-sync notes status|resend`, through Typer, as the lead registers it in sync/cli.py."""

from __future__ import annotations

import json
import os
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
import structlog
import typer
from typer.testing import CliRunner, Result

from sync.emulator import EmulatorServer
from sync.notes_cli import notes_app

from .conftest import Setup, client_for


class _Runner(CliRunner):
    def invoke(self, *args: Any, **kwargs: Any) -> Result:
        try:
            return super().invoke(*args, **kwargs)
        finally:  # the command pointed structlog at the runner's stream, now closed
            structlog.reset_defaults()


runner = _Runner()


def crm_sync() -> typer.Typer:
    """A root app wired the way sync/cli.py does it: one add_typer line."""
    root = typer.Typer()

    @root.command()
    def version() -> None:
        """(a sibling command, so that `notes` stays a group)"""

    root.add_typer(notes_app, name="notes")
    return root


@pytest.fixture
def env(setup: Setup, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Setup:
    monkeypatch.chdir(tmp_path)  # no developer .env
    for name in list(os.environ):
        if name.startswith("CRM_SYNC_") and name != "CRM_SYNC_TEST_PG_URL":
            monkeypatch.delenv(name)
    monkeypatch.setenv("CRM_SYNC_DATABASE_URL", setup.url)
    monkeypatch.setenv("CRM_SYNC_TENANT", setup.tenant)
    monkeypatch.setenv("CRM_SYNC_LOG_FORMAT", "json")
    return setup


async def test_status_and_resend(env: Setup, server: EmulatorServer) -> None:
    app = crm_sync()
    ids = env.add_notes([{"phone": "0901234567", "content": f"n{i}"} for i in range(3)])
    env.add_notes([{"ref_id": "không-có", "content": "x"}])
    result = runner.invoke(app, ["notes", "status", "--json"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["counts"]["pending"] == 4

    async with client_for(server.url) as client:
        await client.authenticate()
        server.emulator.configure(error_500_rate=1.0)
        assert await env.outbox.push(client) == Counter(notes_unknown=3, notes_failed=1)
        server.emulator.configure(error_500_rate=0.0)

    result = runner.invoke(app, ["notes", "status"])
    assert result.exit_code == 3, result.output
    assert "3 unknown" in result.stdout and "1 failed" in result.stdout
    assert "không-có" in result.stdout and "notes resend" in result.stdout
    data = json.loads(runner.invoke(app, ["notes", "status", "--json"]).stdout)
    assert data["counts"] == {"pending": 0, "in_flight": 0, "sent": 0, "failed": 1,
                              "unknown": 3}
    assert {p["status"] for p in data["problems"]} == {"failed", "unknown"}

    result = runner.invoke(app, ["notes", "resend", "--dry-run"])
    assert result.exit_code == 0 and "3 unknown note(s) would go back" in result.stdout
    assert env.outbox.counts()["unknown"] == 3
    result = runner.invoke(app, ["notes", "resend", "--id", str(ids[0])])
    assert result.exit_code == 0 and f"1 note(s) back to pending, sent with the next cycle: " \
        f"{ids[0]}" in result.stdout
    result = runner.invoke(app, ["notes", "resend"])
    assert result.exit_code == 0 and "2 note(s) back to pending" in result.stdout
    assert "no unknown notes" in runner.invoke(app, ["notes", "resend"]).stdout
    async with client_for(server.url) as client:
        assert await env.outbox.push(client) == Counter(notes_sent=3)
    assert runner.invoke(app, ["notes", "status"]).exit_code == 3  # the failed one remains


def test_disabled_notes_and_missing_schema(env: Setup, tmp_path: Path,
                                           monkeypatch: pytest.MonkeyPatch) -> None:
    mapping = tmp_path / "no-notes.yaml"
    mapping.write_text("table: contacts\nnotes_table: null\nfields:\n"
                       "  - {field: phone, column: phone}\n", encoding="utf-8")
    monkeypatch.setenv("CRM_SYNC_MAPPING_FILE", str(mapping))
    result = runner.invoke(notes_app, ["status"])
    # rich wraps the message at the terminal's width, which a long tmp path moves
    assert result.exit_code == 2 and "notes are disabled" in " ".join(result.stderr.split())
    monkeypatch.delenv("CRM_SYNC_MAPPING_FILE")
    monkeypatch.setenv("CRM_SYNC_DATABASE_URL", f"sqlite:///{tmp_path}/empty.db")
    result = runner.invoke(notes_app, ["resend"])
    assert result.exit_code == 1 and "crm-sync db upgrade" in " ".join(result.stderr.split())
