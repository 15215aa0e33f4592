"""Secrets given as `<NAME>_FILE`, in the environment or in `.env` (as `.env.example` says),
and the cycle commands naming the API key's setting when none is given."""

from __future__ import annotations

from pathlib import Path

import pytest
import structlog
from typer.testing import CliRunner

from sync.cli import app
from sync.errors import ConfigError
from sync.settings import load_settings

runner = CliRunner()


def _key_file(where: Path, text: str = "key-from-a-file\n") -> Path:
    path = where / "api-key"
    path.write_text(text, encoding="utf-8")
    return path


def test_a_secret_file_named_in_dotenv_is_read(clean_env: Path,
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    # before: ignored without a word, and `sync` found no API key
    monkeypatch.delenv("CRM_SYNC_API_KEY")
    key = _key_file(clean_env)
    (clean_env / ".env").write_text(f"CRM_SYNC_API_KEY_FILE={key}\n", encoding="utf-8")
    assert load_settings().api_key.get_secret_value() == "key-from-a-file"


def test_the_environment_wins_over_a_secret_file_in_dotenv(
        clean_env: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    key = _key_file(clean_env)
    (clean_env / ".env").write_text(f"CRM_SYNC_API_KEY_FILE={key}\n", encoding="utf-8")
    assert load_settings().api_key.get_secret_value() == "a-key"  # clean_env's, in the env
    (clean_env / "sub").mkdir()
    other = _key_file(clean_env / "sub", "key-from-the-env-file")
    monkeypatch.delenv("CRM_SYNC_API_KEY")
    monkeypatch.setenv("CRM_SYNC_API_KEY_FILE", str(other))
    assert load_settings().api_key.get_secret_value() == "key-from-the-env-file"


def test_an_unreadable_secret_file_in_dotenv_is_named(clean_env: Path,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("CRM_SYNC_API_KEY")
    (clean_env / ".env").write_text(f"CRM_SYNC_API_KEY_FILE={clean_env}/missing\n",
                                    encoding="utf-8")
    with pytest.raises(ConfigError, match=r"CRM_SYNC_API_KEY_FILE \(in \.env\): cannot read"):
        load_settings()


def test_a_database_url_file_in_dotenv_is_read(clean_env: Path,
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("CRM_SYNC_DATABASE_URL")
    url = f"sqlite:///{clean_env}/from-file.db"
    (clean_env / "db-url").write_text(url + "\n", encoding="utf-8")
    (clean_env / ".env").write_text(f"CRM_SYNC_DATABASE_URL_FILE={clean_env}/db-url\n",
                                    encoding="utf-8")
    assert load_settings().database_url == url


@pytest.mark.parametrize("command", [["sync"], ["sync", "--dry-run"], ["resync"]])
def test_a_cycle_without_an_api_key_names_the_setting(
        clean_env: Path, monkeypatch: pytest.MonkeyPatch, command: list[str]) -> None:
    # before: "no OMICall API key given", which names no setting
    monkeypatch.delenv("CRM_SYNC_API_KEY")
    try:
        result = runner.invoke(app, command)
    finally:  # the command pointed structlog at the runner's stream, now closed
        structlog.reset_defaults()
    assert result.exit_code == 2, result.output
    assert "CRM_SYNC_API_KEY is not set (nor CRM_SYNC_API_KEY_FILE): a cycle cannot reach " \
        "the CRM without it" in " ".join(result.output.split()), result.output
    assert not (clean_env / "check.db").exists()  # refused before touching the database


@pytest.mark.parametrize(("url", "tenant"), [
    ("https://api.omicall.example", "api.omicall.example"),
    ("http://127.0.0.1:8080", "127.0.0.1:8080"),  # host and port, as README says
    ("https://ops:s3cret@api.omicall.example", "api.omicall.example"),
])
def test_the_default_tenant_is_the_base_urls_host_never_its_credentials(
        clean_env: Path, url: str, tenant: str) -> None:
    # the tenant is stored in every bookkeeping row and shown by `status`
    assert load_settings(base_url=url, api_key="k").tenant_id == tenant
