"""Settings: environment variables prefixed `CRM_SYNC_`, also read from `.env`.

A secret may be given as `<NAME>_FILE` pointing at a file (systemd credentials, container
secrets). `load_settings` turns every validation problem into a ConfigError naming the setting.
"""

from __future__ import annotations

import difflib
import hashlib
import os
from collections.abc import Iterable, Mapping
from importlib import resources
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from dotenv import dotenv_values
from pydantic import Field, SecretStr, ValidationError, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from sync.errors import ConfigError
from sync.merge import Policy

PREFIX = "CRM_SYNC_"
SECRET_FILE_SETTINGS = ("API_KEY", "DATABASE_URL")
TESTS_PREFIX = PREFIX + "TEST_"  # the test suite's own (CRM_SYNC_TEST_PG_URL)
ENV_FILE = ".env"  # read from the working directory, under the environment


def default_mapping_file() -> Path:
    return Path(str(resources.files("sync") / "mappings" / "default.yaml"))


class Settings(BaseSettings):
    """Every setting of crm-sync. `.env.example` documents each one."""

    model_config = SettingsConfigDict(env_prefix=PREFIX, env_file=ENV_FILE, extra="ignore",
                                      env_file_encoding="utf-8")

    base_url: str = "http://127.0.0.1:8765"
    api_key: SecretStr = SecretStr("")
    tenant: str = ""  # derived from base_url when empty
    database_url: str = "sqlite:///crm-sync.db"
    mapping_file: Path = Field(default_factory=default_mapping_file)

    interval_seconds: float = Field(60.0, gt=0)
    full_sync_cron: str = "0 3 * * *"
    page_size: int = Field(1000, ge=1, le=10_000)  # asked for; the server caps it
    concurrency: int = Field(4, ge=1, le=64)
    batch_size: int = Field(100, ge=1, le=5_000)
    conflict_policy: Policy = Policy.REMOTE_WINS
    max_delete_fraction: float = Field(0.1, ge=0.0, le=1.0)
    pending_recheck_seconds: float = Field(300.0, ge=0)
    # worker processes for a first import of import_min_contacts or more; 0: none; unset:
    # one per core beyond the first, at most two (import_worker.default_workers)
    import_workers: int | None = Field(None, ge=0, le=32)
    import_min_contacts: int = Field(10_000, ge=0)

    connect_timeout: float = Field(10.0, gt=0)
    read_timeout: float = Field(30.0, gt=0)
    max_retries: int = Field(5, ge=0, le=20)
    backoff_max: float = Field(30.0, gt=0)

    health_host: str = "127.0.0.1"
    health_port: int = Field(8787, ge=0, le=65535)
    ready_max_age_seconds: float = Field(600.0, gt=0)
    lock_wait_seconds: float = Field(600.0, ge=0)
    log_format: str = Field("auto", pattern="^(auto|json|console)$")
    log_level: str = Field("info", pattern="^(debug|info|warning|error)$")

    @field_validator("base_url")
    @classmethod
    def _url(cls, v: str) -> str:
        parts = urlsplit(v)
        if parts.scheme not in ("http", "https") or not parts.netloc:
            raise ValueError("must be an http(s) URL such as https://public-v1.omicall.com")
        return v.rstrip("/")

    @field_validator("full_sync_cron")
    @classmethod
    def _cron(cls, v: str) -> str:
        # checked here, not only when the daemon starts: `check` must refuse what `run` would
        from apscheduler.triggers.cron import CronTrigger

        try:
            CronTrigger.from_crontab(v)
        except ValueError as exc:
            raise ValueError(f"{exc} (five fields: minute hour day-of-month month day-of-week, "
                             "e.g. '0 3 * * *')") from None
        return v

    @property
    def tenant_id(self) -> str:
        """Names this CRM tenant in the bookkeeping tables and the lock."""
        if self.tenant:
            return self.tenant
        # host[:port] as written; never a user:password@ the URL may carry (it is stored)
        return urlsplit(self.base_url).netloc.rpartition("@")[2][:64]

    @property
    def api_key_fingerprint(self) -> str:
        """Safe to show: identifies the key without revealing it."""
        raw = self.api_key.get_secret_value()
        return hashlib.sha256(raw.encode()).hexdigest()[:8] if raw else "(none)"


def _secret_files(env: Mapping[str, str], dotenv: Mapping[str, str | None]
                  ) -> dict[str, Any]:
    """The secrets given as `<NAME>_FILE`, in the environment or in `.env`. As for every
    setting, the environment wins over `.env`: a `_FILE` there, or the setting itself, hides
    a `_FILE` in `.env`."""
    found: dict[str, Any] = {}
    for name in SECRET_FILE_SETTINGS:
        var = f"{PREFIX}{name}_FILE"
        path, where = env.get(var), "in the environment"
        if not path and f"{PREFIX}{name}" not in env:
            path, where = dotenv.get(var), "in .env"
        if not path:
            continue
        try:
            found[name.lower()] = Path(path).read_text(encoding="utf-8").strip()
        except OSError as exc:
            raise ConfigError(f"{var} ({where}): cannot read {path}: {exc.strerror}") from None
    return found


def require_api_key(settings: Settings, why: str) -> None:
    """ConfigError naming the setting when no API key is given; `why`: what needs it."""
    if not settings.api_key.get_secret_value():
        raise ConfigError(f"{PREFIX}API_KEY is not set (nor {PREFIX}API_KEY_FILE): {why}")


def unknown_settings(names: Iterable[str] | None = None) -> list[str]:
    """A warning for each CRM_SYNC_* name among these (default: the environment's and
    `.env`'s) that names no setting, with the closest one: a misspelt setting is otherwise
    ignored without a word."""
    if names is None:
        names = [*os.environ, *dotenv_values(ENV_FILE)]
    known = {PREFIX + name.upper() for name in Settings.model_fields}
    known |= {f"{PREFIX}{name}_FILE" for name in SECRET_FILE_SETTINGS}
    out = []
    for name in sorted(set(names)):
        if name.startswith(PREFIX) and name not in known and not name.startswith(TESTS_PREFIX):
            close = difflib.get_close_matches(name, sorted(known), n=1)
            out.append(f"{name} is not a setting and is ignored"
                       + (f": did you mean {close[0]}?" if close else ""))
    return out


def load_settings(**overrides: Any) -> Settings:
    """Build Settings from the environment, `.env`, `*_FILE` secrets and explicit overrides."""
    values = {**_secret_files(os.environ, dotenv_values(ENV_FILE)), **overrides}
    try:
        return Settings(**values)
    except ValidationError as exc:
        problems = []
        for err in exc.errors():
            field = "_".join(str(p) for p in err["loc"])
            name = PREFIX + field.upper()
            # never echo the input: it may be a secret
            problems.append(f"{name}{_where(name, field, overrides)}: {err['msg']}")
        raise ConfigError("invalid settings: " + "; ".join(problems)) from None


def _where(name: str, field: str, overrides: dict[str, Any]) -> str:
    """Where a setting's value came from, for the message (the environment wins over .env)."""
    if field in overrides:
        return ""
    if name in os.environ:
        return " (in the environment)"
    if name in dotenv_values(ENV_FILE):
        return " (in .env)"
    if f"{name}_FILE" in os.environ or f"{name}_FILE" in dotenv_values(ENV_FILE):
        return f" (in the file {name}_FILE names)"
    return ""
