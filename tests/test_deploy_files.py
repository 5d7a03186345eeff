"""The files in ``deploy/``: systemd units that systemd accepts, a compose file whose
services run commands that exist, with settings the example project reads."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from django_inbound_smtp.smtp.listeners import LISTENER_NAMES
from tests.smtpd_process import ROOT

DEPLOY = ROOT / "deploy"
UNITS = sorted((DEPLOY / "systemd").iterdir())
VENV_BIN = Path(sys.executable).parent


def test_systemd_accepts_every_unit(tmp_path: Path) -> None:
    """``systemd-analyze verify`` on the units, with their virtualenv paths pointed at
    this one (it checks that each ExecStart= program exists)."""
    analyze = shutil.which("systemd-analyze")
    assert analyze, "systemd-analyze (Debian package systemd) is missing"
    assert {unit.suffix for unit in UNITS} == {".socket", ".service"}
    for unit in UNITS:
        text = unit.read_text().replace("/srv/inbound/venv/bin/", f"{VENV_BIN}/")
        (tmp_path / unit.name).write_text(text)
    result = subprocess.run(
        [analyze, "verify", "--man=no", *(f"./{unit.name}" for unit in UNITS)],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stderr == "", result.stderr


def test_socket_unit_names_a_listener_smtpd_knows() -> None:
    socket_unit = (DEPLOY / "systemd" / "inbound-smtpd.socket").read_text()
    names = [
        line.split("=", 1)[1]
        for line in socket_unit.splitlines()
        if line.startswith("FileDescriptorName=")
    ]
    assert names
    assert set(names) <= set(LISTENER_NAMES)


def _compose() -> Any:
    loaded = yaml.safe_load((DEPLOY / "compose.yaml").read_text())
    assert isinstance(loaded, dict)
    return loaded


def test_compose_has_the_whole_stack() -> None:
    services = _compose()["services"]
    assert set(services) == {"postgres", "redis", "migrate", "smtpd", "worker", "beat"}
    smtpd = services["smtpd"]
    assert smtpd["command"][:3] == ["python", "manage.py", "smtpd"]
    assert "--user" in smtpd["command"]  # binds 25 as root, serves unprivileged
    assert smtpd["ports"] == ["25:25"]
    for name in ("worker", "beat"):
        command = services[name]["command"]
        assert command[:3] == ["celery", "-A", "example_project"]
        assert services[name]["user"] == "inbound"


@pytest.mark.parametrize("service", ["migrate", "smtpd"])
def test_compose_manage_commands_exist(service: str) -> None:
    command = _compose()["services"][service]["command"]
    name = command[2]
    result = subprocess.run(
        [sys.executable, "manage.py", "help", name],
        cwd=ROOT / "example_project",
        env={**os.environ, "DJANGO_SETTINGS_MODULE": "example_project.settings"},
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    for option in command[3:]:
        if option.startswith("--"):
            assert option in result.stdout, f"smtpd has no {option}"


def test_compose_environment_gives_the_example_project_postgresql_and_shared_mail() -> None:
    """The variables compose sets are the ones the example settings read."""
    environment = _compose()["x-app"]["environment"]
    script = (
        "import json, django\n"
        "from django.conf import settings\n"
        "django.setup()\n"
        "db = settings.DATABASES['default']\n"
        "print(json.dumps({'engine': db['ENGINE'], 'host': db['HOST'], 'name': db['NAME'],"
        " 'media': settings.STORAGES['default']['OPTIONS']['location'],"
        " 'broker': settings.CELERY_BROKER_URL}))\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", script],
        cwd=ROOT / "example_project",
        env={
            **os.environ,
            "DJANGO_SETTINGS_MODULE": "example_project.settings",
            **{key: str(value) for key, value in environment.items()},
        },
        capture_output=True,
        text=True,
        check=True,
    )
    assert json.loads(result.stdout) == {
        "engine": "django.db.backends.postgresql",
        "host": "postgres",
        "name": "inbound",
        "media": "/var/lib/inbound-smtp/media",
        "broker": "redis://redis:6379/0",
    }
