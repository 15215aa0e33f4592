"""deploy/: the systemd unit (and `systemd-analyze verify` when available), the Dockerfile,
the Kubernetes sidecar example and the compose file. There is no Docker engine here: the
container files are checked by reading them."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from collections import defaultdict
from pathlib import Path
from typing import Any

import pytest
import yaml

from sync.settings import Settings

from .conftest import ROOT

DEPLOY = ROOT / "deploy"


def unit_sections(text: str) -> dict[str, dict[str, list[str]]]:
    """systemd's format: repeated keys accumulate, so configparser will not do."""
    sections: dict[str, dict[str, list[str]]] = defaultdict(lambda: defaultdict(list))
    current = ""
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith(("#", ";")):
            continue
        if line.startswith("["):
            current = line.strip("[]")
            continue
        key, _, value = line.partition("=")
        sections[current][key.strip()].append(value.strip())
    return sections


def test_systemd_unit_has_what_the_daemon_relies_on() -> None:
    svc = unit_sections((DEPLOY / "crm-sync.service").read_text())["Service"]

    def one(key: str) -> str:
        assert len(svc[key]) == 1, (key, svc[key])
        return svc[key][0]

    assert one("Type") == "notify" and one("NotifyAccess") == "main"
    assert one("ExecStart") == "/usr/local/bin/crm-sync run"
    assert int(one("WatchdogSec")) >= 30
    assert one("EnvironmentFile") == "-/etc/crm-sync/env"
    assert one("LoadCredential") == "api-key:/etc/crm-sync/api-key"
    env = dict(v.split("=", 1) for v in svc["Environment"])
    assert env["CRM_SYNC_API_KEY_FILE"] == "%d/api-key"
    assert "CRM_SYNC_API_KEY" not in env  # the key only ever as a credential file
    assert env["CRM_SYNC_DATABASE_URL"] == "sqlite:////var/lib/crm-sync/crm-sync.db"
    assert one("DynamicUser") == "yes" and one("StateDirectory") == "crm-sync"
    assert one("WorkingDirectory") == "%S/crm-sync"
    for key, value in {"NoNewPrivileges": "yes", "ProtectSystem": "strict",
                       "ProtectHome": "yes", "PrivateTmp": "yes", "PrivateDevices": "yes",
                       "Restart": "on-failure"}.items():
        assert one(key) == value, key
    assert set(one("RestrictAddressFamilies").split()) == {"AF_UNIX", "AF_INET", "AF_INET6"}
    # stop: the daemon exits within 10 s; systemd must not kill it first
    assert int(one("TimeoutStopSec")) > 10
    # every CRM_SYNC_* name in the unit is a real setting
    fields = set(Settings.model_fields)
    for name in env:
        assert name.removeprefix("CRM_SYNC_").removesuffix("_FILE").lower() in fields, name


def test_systemd_analyze_verify(tmp_path: Path) -> None:
    tool = shutil.which("systemd-analyze")
    if tool is None:
        pytest.skip("systemd-analyze is not installed (Debian: apt-get install systemd)")
    # verify checks that ExecStart's binary exists: point it at this venv's console script
    # (or the interpreter, when the package is not installed as a script)
    script = Path(sys.executable).with_name("crm-sync")
    target = script if script.exists() else Path(sys.executable)
    text = (DEPLOY / "crm-sync.service").read_text()
    unit = tmp_path / "crm-sync.service"
    unit.write_text(text.replace("/usr/local/bin/crm-sync", str(target)))
    proc = subprocess.run([tool, "verify", str(unit)], capture_output=True, text=True,
                          timeout=60)
    problems = [line for line in (proc.stdout + proc.stderr).splitlines()
                if "crm-sync.service" in line]
    assert proc.returncode == 0 and not problems, proc.stdout + proc.stderr


def instructions(text: str) -> list[tuple[str, str]]:
    joined = re.sub(r"\\\n", " ", text)
    out = []
    for line in joined.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            word, _, rest = line.partition(" ")
            out.append((word.upper(), rest.strip()))
    return out


def test_dockerfile() -> None:
    steps = instructions((DEPLOY / "Dockerfile").read_text())
    assert steps[0] == ("FROM", "python:3.11-slim")
    users = [rest for word, rest in steps if word == "USER"]
    assert users and users[-1].split(":")[0] not in ("root", "0")
    health = [rest for word, rest in steps if word == "HEALTHCHECK"]
    assert len(health) == 1 and '["crm-sync", "health"]' in health[0]
    assert any(word == "RUN" and "pip install /src" in rest for word, rest in steps)
    assert ("ENTRYPOINT", '["crm-sync"]') in steps and ("CMD", '["run"]') in steps
    # nothing secret baked in: no key in ENV/ARG, and no wholesale COPY of the context
    # (which would take .env and database files along)
    for word, rest in steps:
        if word in ("ENV", "ARG"):
            assert "API_KEY" not in rest and "PASSWORD" not in rest.upper(), rest
        if word == "COPY":
            assert not rest.startswith((". ", "./ ")), rest
    copied = " ".join(rest for word, rest in steps if word == "COPY")
    for needed in ("pyproject.toml", "README.md", "sync"):
        assert needed in copied
    env = " ".join(rest for word, rest in steps if word == "ENV")
    assert "CRM_SYNC_HEALTH_HOST=0.0.0.0" in env  # probes come from outside the loopback


def k8s_docs() -> list[dict[str, Any]]:
    docs = [d for d in yaml.safe_load_all((DEPLOY / "k8s-sidecar.yaml").read_text()) if d]
    assert all(isinstance(d, dict) and "kind" in d for d in docs)
    return docs


def test_k8s_sidecar() -> None:
    docs = {d["kind"]: d for d in k8s_docs()}
    pod = docs["Deployment"]["spec"]["template"]["spec"]
    containers = {c["name"]: c for c in pod["containers"]}
    assert len(containers) >= 2 and "crm-sync" in containers  # beside an app container
    sync = containers["crm-sync"]
    assert sync["args"] == ["run"]
    port = sync["ports"][0]["containerPort"]
    config = docs["ConfigMap"]["data"]
    assert config["CRM_SYNC_HEALTH_HOST"] == "0.0.0.0" and int(config["CRM_SYNC_HEALTH_PORT"]) \
        == port
    assert all(isinstance(v, str) for v in config.values())  # ConfigMap values are strings
    assert sync["livenessProbe"]["httpGet"]["path"] == "/healthz"
    assert sync["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert sync["startupProbe"]["httpGet"]["path"] == "/healthz"
    env = {e["name"]: e for e in sync["env"]}
    assert "CRM_SYNC_API_KEY" not in env and "CRM_SYNC_API_KEY" not in config
    key_file = env["CRM_SYNC_API_KEY_FILE"]["value"]
    mounts = {m["name"]: m for m in sync["volumeMounts"]}
    volumes = {v["name"]: v for v in pod["volumes"]}
    secret_mount = next(m for m in mounts.values() if key_file.startswith(m["mountPath"] + "/"))
    secret = volumes[secret_mount["name"]]["secret"]
    assert secret_mount.get("readOnly") and key_file.endswith("/api-key")
    assert secret["secretName"] == "omicall-api-key"
    assert sync["securityContext"]["runAsUser"] != 0
    assert sync["securityContext"]["readOnlyRootFilesystem"] is True
    assert any(m["mountPath"] == "/tmp" for m in mounts.values())
    assert pod["terminationGracePeriodSeconds"] > 10


def test_compose() -> None:
    compose = yaml.safe_load((DEPLOY / "compose.yaml").read_text())
    services = compose["services"]
    assert {"postgres", "emulator", "crm-sync"} <= set(services)
    daemon, emulator = services["crm-sync"], services["emulator"]
    assert daemon["command"] == ["run"] and emulator["command"][0] == "emulator"
    assert daemon["depends_on"]["postgres"]["condition"] == "service_healthy"
    assert daemon["depends_on"]["emulator"]["condition"] == "service_healthy"
    env = daemon["environment"]
    assert env["CRM_SYNC_BASE_URL"] == "http://emulator:8765"
    assert env["CRM_SYNC_DATABASE_URL"].startswith("postgresql+psycopg://")
    assert "@postgres:5432/" in env["CRM_SYNC_DATABASE_URL"]
    assert env["CRM_SYNC_API_KEY_FILE"] == "/run/secrets/omicall_api_key"
    secret_file = DEPLOY / compose["secrets"]["omicall_api_key"]["file"]
    assert secret_file.read_text().strip() == "demo-key"  # the emulator's public demo key
    for service in (daemon, emulator):
        assert service["build"]["dockerfile"] == "deploy/Dockerfile"
        assert (DEPLOY / service["build"]["context"] / service["build"]["dockerfile"]).exists()
    # every CRM_SYNC_* name used is a real setting
    fields = set(Settings.model_fields)
    for name in env:
        assert name.removeprefix("CRM_SYNC_").removesuffix("_FILE").lower() in fields, name
