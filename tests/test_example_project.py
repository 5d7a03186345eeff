"""Guards on ``example_project/``: it passes its checks, and the demo really receives mail.

Everything runs as subprocesses of ``example_project/manage.py`` with their own SQLite
file and media folder under ``tmp_path``; no test database of pytest-django is used.
"""

from __future__ import annotations

import os
import queue
import re
import signal
import smtplib
import sqlite3
import subprocess
import sys
import threading
from contextlib import closing
from pathlib import Path
from typing import IO

import pytest

ROOT = Path(__file__).resolve().parent.parent
MANAGE = ROOT / "example_project" / "manage.py"
COMMAND_TIMEOUT = 120
BANNER = re.compile(r"Inbound SMTP server listening on (?P<host>[\d.]+):(?P<port>\d+)")
BANNER_TIMEOUT = 60
STOP_TIMEOUT = 30


def example_env(tmp_path: Path) -> dict[str, str]:
    """Environment for the example project, isolated in ``tmp_path``."""
    env = dict(os.environ)
    # pytest-django exported the test settings; the example project has its own.
    env["DJANGO_SETTINGS_MODULE"] = "example_project.settings"
    env["EXAMPLE_DB_PATH"] = str(tmp_path / "example.sqlite3")
    env["EXAMPLE_MEDIA_ROOT"] = str(tmp_path / "media")
    env["PYTHONUNBUFFERED"] = "1"
    # No DNS from the tests: the example's sender checks (tag by default) are turned off.
    env["EXAMPLE_SENDER_CHECKS"] = "off"
    # The same package source as the in-process tests (pytest's pythonpath = ["."]).
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    return env


def manage(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    """Run ``manage.py *args`` to completion; stdout and stderr merged."""
    return subprocess.run(
        [sys.executable, str(MANAGE), *args],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        timeout=COMMAND_TIMEOUT,
        check=False,
    )


def test_example_project_passes_checks(tmp_path: Path) -> None:
    env = example_env(tmp_path)
    check = manage(env, "check", "--fail-level", "WARNING")
    assert check.returncode == 0, check.stdout
    migrations = manage(env, "makemigrations", "--check", "--dry-run")
    assert migrations.returncode == 0, migrations.stdout
    assert "No changes detected" in migrations.stdout


def _pump(stream: queue.Queue[str | None], lines: list[str], source: IO[str]) -> None:
    # Reads the child's output until EOF, so a full pipe never blocks it.
    for line in source:
        lines.append(line)
        stream.put(line)
    stream.put(None)


def _wait_for_banner(stream: queue.Queue[str | None], lines: list[str]) -> tuple[str, int]:
    while True:
        try:
            line = stream.get(timeout=BANNER_TIMEOUT)
        except queue.Empty:
            pytest.fail(f"no listening banner within {BANNER_TIMEOUT} s:\n{''.join(lines)}")
        if line is None:
            pytest.fail(f"smtpd exited before listening:\n{''.join(lines)}")
        match = BANNER.search(line)
        if match:
            return match["host"], int(match["port"])


@pytest.mark.integration
def test_example_project_receives_mail(tmp_path: Path) -> None:
    env = example_env(tmp_path)
    migrate = manage(env, "migrate", "--noinput")
    assert migrate.returncode == 0, migrate.stdout
    mailbox = manage(env, "inbound_mailbox", "add", "demo@example.test")
    assert mailbox.returncode == 0, mailbox.stdout

    subject = "Example project smoke test"
    lines: list[str] = []
    stream: queue.Queue[str | None] = queue.Queue()
    with subprocess.Popen(
        [sys.executable, str(MANAGE), "smtpd", "127.0.0.1:0"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        encoding="utf-8",
        errors="replace",
    ) as smtpd:
        reader = threading.Thread(target=_pump, args=(stream, lines, smtpd.stdout), daemon=True)
        reader.start()
        try:
            host, port = _wait_for_banner(stream, lines)
            with smtplib.SMTP(host, port, local_hostname="client.test", timeout=10) as client:
                client.ehlo()
                client.mail("sender@example.org")
                client.rcpt("demo@example.test")
                code, reply = client.data(
                    f"Subject: {subject}\r\nMessage-ID: <smoke@example.org>\r\n\r\nHello.\r\n"
                )
            assert code == 250, reply
            assert b"queued as" in reply
            queue_id = reply.decode("ascii").rsplit(" ", 1)[-1]

            smtpd.send_signal(signal.SIGTERM)
            exit_code = smtpd.wait(timeout=STOP_TIMEOUT)
        finally:
            if smtpd.poll() is None:
                smtpd.kill()
                smtpd.wait(timeout=STOP_TIMEOUT)
            reader.join(timeout=STOP_TIMEOUT)
    output = "".join(lines)
    assert exit_code == 0, output
    # The demo receiver ran (LOGGING prints the inbox logger on the console).
    assert f"inbox: {queue_id} from sender@example.org to demo@example.test" in output, output

    with closing(sqlite3.connect(tmp_path / "example.sqlite3")) as db:
        messages = db.execute(
            "SELECT queue_id, subject, status FROM inbound_smtp_inboundmessage"
        ).fetchall()
        recipients = db.execute("SELECT address FROM inbound_smtp_inboundrecipient").fetchall()
    assert messages == [(queue_id, subject, "processed")]
    assert recipients == [("demo@example.test",)]
