"""Tier 2/5: the inbound_mailbox command, and smtpd run as a real subprocess."""

from __future__ import annotations

import signal
import socket
import subprocess
import sys
import time
from io import StringIO
from pathlib import Path

import pytest
from django.core.management import CommandError, call_command

from django_inbound_smtp.management.commands.smtpd import parse_addrport
from django_inbound_smtp.models import InboundMessage, Mailbox
from tests.helpers import GuardedSMTP, start_data, subprocess_env

ROOT = Path(__file__).resolve().parent.parent


def _call(*args: str) -> str:
    out = StringIO()
    call_command("inbound_mailbox", *args, stdout=out)
    return out.getvalue()


def test_inbound_mailbox_add_list_remove(db) -> None:
    assert "No mailboxes" in _call("list")
    assert _call("add", "Info@Example.ORG", "--description", "front desk") == (
        "Added mailbox info@example.org.\n"
    )
    assert _call("add", "*@example.org") == "Added catch-all *@example.org.\n"
    _call("add", "old@example.org", "--inactive")
    listing = _call("list")
    assert "info@example.org\tactive\t0 message(s)\tfront desk" in listing
    assert "old@example.org\tinactive\t0 message(s)" in listing
    assert Mailbox.objects.get(address="*@example.org").is_catch_all
    assert "Removed info@example.org" in _call("remove", "INFO@example.org")
    assert not Mailbox.objects.filter(address="info@example.org").exists()


def test_inbound_mailbox_errors_are_sentences(db) -> None:
    _call("add", "a@example.org")
    with pytest.raises(CommandError, match="already exists"):
        _call("add", "A@example.org")
    with pytest.raises(CommandError, match="Not a usable address"):
        _call("add", "no-at-sign")
    with pytest.raises(CommandError, match="No mailbox 'b@example.org'"):
        _call("remove", "b@example.org")


@pytest.mark.parametrize(
    ("value", "parsed"),
    [
        ("127.0.0.1:25", ("127.0.0.1", 25)),
        ("[::1]:0", ("::1", 0)),
        ("2525", ("127.0.0.1", 2525)),
        (":8025", ("127.0.0.1", 8025)),
        ("0.0.0.0:25", ("0.0.0.0", 25)),
    ],
)
def test_parse_addrport(value: str, parsed: tuple[str, int]) -> None:
    assert parse_addrport(value) == parsed


@pytest.mark.parametrize("value", ["localhost", "1.2.3.4:99999", "[::1", "a:b"])
def test_parse_addrport_rejects(value: str) -> None:
    with pytest.raises(CommandError):
        parse_addrport(value)


def _start_smtpd(*args: str) -> tuple[subprocess.Popen[str], int]:
    process = subprocess.Popen(
        [sys.executable, "-m", "django", "smtpd", *args],
        cwd=ROOT,
        env=subprocess_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    deadline = time.monotonic() + 30
    assert process.stdout is not None
    while time.monotonic() < deadline:
        line = process.stdout.readline()
        if not line:
            break
        if line.startswith("Inbound SMTP server listening on 127.0.0.1:"):
            return process, int(line.rsplit(":", 1)[1])
    process.kill()
    raise AssertionError(f"no banner; output so far: {process.communicate()[0]}")


@pytest.mark.integration
@pytest.mark.slow
def test_smtpd_serves_then_stops_cleanly_on_sigterm(transactional_db) -> None:
    Mailbox.objects.create(address="user@our.test")
    process, port = _start_smtpd("127.0.0.1:0")
    try:
        with GuardedSMTP("127.0.0.1", port, timeout=10) as client:
            assert (
                client.sendmail("a@example.org", ["user@our.test"], b"Subject: cmd\r\n\r\nx\r\n")
                == {}
            )
        idle = socket.create_connection(("127.0.0.1", port), timeout=10)
        assert idle.recv(1024).startswith(b"220 mx.test ESMTP")
        process.send_signal(signal.SIGTERM)
        # An idle client is told we are going away, then the connection closes.
        assert idle.recv(1024).startswith(b"421 4.3.2 mx.test Service shutting down")
        idle.close()
        output, _ = process.communicate(timeout=30)
    finally:
        if process.poll() is None:
            process.kill()
    assert process.returncode == 0, output
    assert "Inbound SMTP server stopped." in output
    assert "Traceback" not in output
    assert InboundMessage.objects.get().subject == "cmd"


@pytest.mark.integration
@pytest.mark.parametrize("workers", [[], ["--workers", "2"]], ids=["one-process", "workers"])
def test_smtpd_bind_error_is_one_sentence(transactional_db, workers: list[str]) -> None:
    # With --workers the parent finds the port taken before any worker starts.
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = subprocess.run(
            [sys.executable, "-m", "django", "smtpd", f"127.0.0.1:{port}", "--skip-checks"]
            + workers,
            cwd=ROOT,
            env=subprocess_env(),
            capture_output=True,
            text=True,
            timeout=60,
        )
    assert result.returncode == 1
    assert f"CommandError: 127.0.0.1:{port} is already in use by another process." in result.stderr
    assert "Traceback" not in result.stderr


@pytest.mark.integration
@pytest.mark.slow
def test_smtpd_second_signal_skips_the_grace(transactional_db) -> None:
    Mailbox.objects.create(address="user@our.test")
    process, port = _start_smtpd("127.0.0.1:0", "--skip-checks")
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=15) as sock:
            start_data(sock).close()
            sock.sendall(b"Subject: never finished\r\n")  # a transfer in progress
            process.send_signal(signal.SIGTERM)
            time.sleep(1)
            # SHUTDOWN_GRACE is 5 s in the test settings: the transfer may still finish.
            assert process.poll() is None
            process.send_signal(signal.SIGTERM)  # impatient operator: stop now
            reply = sock.recv(1024)
            output, _ = process.communicate(timeout=10)
    finally:
        if process.poll() is None:
            process.kill()
            process.communicate()
    assert reply.startswith(b"421 4.3.2 mx.test Service shutting down")
    assert process.returncode == 0, output
    assert "Traceback" not in output
    assert not InboundMessage.objects.exists()
