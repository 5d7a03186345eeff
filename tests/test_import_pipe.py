"""Tier 5: ``manage.py inbound_import -`` as an MTA's pipe transport runs it: a real
subprocess, standard input piped, a real database, real faults for the exit codes."""

from __future__ import annotations

import socket
import subprocess
import sys
from pathlib import Path

import pytest

from django_inbound_smtp.models import InboundMessage, Mailbox
from django_inbound_smtp.testing import deliver
from tests.helpers import subprocess_env
from tests.smtpd_process import ROOT, logged_settings

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.slow]

# As Postfix's pipe(8) writes it with flags=F: a From_ line, then LF line endings.
PIPED = (
    b"From sender@example.org  Sun Dec  6 10:00:00 2026\n"
    b"From: Sender <sender@example.org>\n"
    b"To: user@our.test\n"
    b"Subject: piped\n"
    b"Message-ID: <piped-1@example.org>\n"
    b"\n"
    b"first line\n"
    b"From here on, a body line.\n"
)
# What an SMTP client would have sent of the same message.
ON_THE_WIRE = PIPED.split(b"\n", 1)[1].replace(b"\n", b"\r\n")


def _pipe(
    data: bytes, *args: str, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(
        [sys.executable, "-m", "django", "inbound_import", "-", *args],
        input=data,
        cwd=ROOT,
        env=env or subprocess_env(),
        capture_output=True,
        timeout=60,
        check=False,
    )


def _one_line(result: subprocess.CompletedProcess[bytes]) -> str:
    text = result.stderr.decode()
    assert "Traceback" not in text
    assert len(text.strip().splitlines()) == 1, text
    return text


@pytest.fixture
def mailbox(transactional_db: None) -> Mailbox:
    return Mailbox.objects.create(address="user@our.test")


def test_a_piped_message_is_stored_as_smtp_would_and_processed(mailbox: Mailbox) -> None:
    result = _pipe(PIPED, "--sender", "sender@example.org", "--recipient", "user@our.test")

    assert result.returncode == 0, result.stderr
    message = InboundMessage.objects.get()
    trace, content = message.raw_bytes.split(b"\r\n\r\n", 1)[0], message.raw_bytes
    assert trace.startswith(b"Received: by mx.test (django-inbound-smtp) with local id ")
    assert content.endswith(ON_THE_WIRE)  # the From_ line dropped, CRLF as on the wire
    assert message.envelope_from == "sender@example.org"
    assert message.received_via == "pipe"
    assert list(message.recipients.values_list("address", "mailbox")) == [
        ("user@our.test", mailbox.pk)
    ]
    # Processed before the command exited (inline dispatch in this process).
    assert message.status == InboundMessage.Status.PROCESSED
    # The same message over SMTP is the same message: a duplicate.
    again = deliver(ON_THE_WIRE, mail_from="sender@example.org", to=["user@our.test"])
    assert again.duplicate_of_id == message.pk


def test_a_retried_pipe_delivery_is_recorded_as_a_duplicate(mailbox: Mailbox) -> None:
    args = ("--sender", "sender@example.org", "--recipient", "user@our.test")
    assert _pipe(PIPED, *args).returncode == 0
    assert _pipe(PIPED, *args).returncode == 0
    statuses = sorted(InboundMessage.objects.values_list("status", flat=True))
    assert statuses == ["duplicate", "processed"]


def test_null_sender_and_several_recipients(mailbox: Mailbox) -> None:
    Mailbox.objects.create(address="other@our.test")
    result = _pipe(
        PIPED, "--sender", "", "--recipient", "user@our.test", "other@our.test", "USER@our.test"
    )
    assert result.returncode == 0, result.stderr
    message = InboundMessage.objects.get()
    assert message.envelope_from == ""
    assert sorted(message.recipients.values_list("address", flat=True)) == [
        "other@our.test",
        "user@our.test",
    ]


def test_an_unknown_recipient_is_67_and_refuses_the_whole_delivery(mailbox: Mailbox) -> None:
    alone = _pipe(PIPED, "--sender", "a@x.test", "--recipient", "nobody@our.test")
    mixed = _pipe(PIPED, "--sender", "a@x.test", "--recipient", "user@our.test", "nobody@our.test")
    for result in (alone, mixed):
        assert result.returncode == 67
        assert "not accepted here: nobody@our.test" in _one_line(result)
    assert not InboundMessage.objects.exists()


def test_empty_input_is_65_and_usage_errors_are_64(mailbox: Mailbox) -> None:
    empty = _pipe(b"", "--sender", "a@x.test", "--recipient", "user@our.test")
    assert empty.returncode == 65
    assert "empty" in _one_line(empty)
    no_sender = _pipe(PIPED, "--recipient", "user@our.test")
    assert no_sender.returncode == 64
    assert "--sender" in _one_line(no_sender)
    unknown_option = _pipe(PIPED, "--sender", "a@x.test", "--recipient", "u@our.test", "--bogus")
    assert unknown_option.returncode == 64
    assert "--bogus" in unknown_option.stderr.decode()
    assert not InboundMessage.objects.exists()


def _closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def test_a_database_refusing_connections_is_75(mailbox: Mailbox) -> None:
    # PostgreSQL on a loopback port nobody listens on: the connection is refused.
    env = subprocess_env(INBOUND_TEST_DB="postgres", INBOUND_TEST_PG_PORT=str(_closed_port()))
    result = _pipe(PIPED, "--sender", "a@x.test", "--recipient", "user@our.test", env=env)
    assert result.returncode == 75
    assert "temporary failure" in _one_line(result)


def test_a_database_that_cannot_be_opened_is_75(mailbox: Mailbox, tmp_path: Path) -> None:
    # SQLite whose file cannot be created (its folder does not exist).
    env = subprocess_env(INBOUND_TEST_DB_SQLITE_MAIN=str(tmp_path / "missing" / "db.sqlite3"))
    env.pop("INBOUND_TEST_DB", None)
    result = _pipe(PIPED, "--sender", "a@x.test", "--recipient", "user@our.test", env=env)
    assert result.returncode == 75
    assert "temporary failure" in _one_line(result)


def test_unusable_storage_is_75_and_stores_nothing(mailbox: Mailbox, tmp_path: Path) -> None:
    # The storage folder is a plain file: writing the raw message fails for real.
    blocker = tmp_path / "not-a-folder"
    blocker.write_bytes(b"")
    extra = (
        "STORAGES = {**STORAGES, 'default': {'BACKEND': "
        "'django.core.files.storage.FileSystemStorage', "
        f"'OPTIONS': {{'location': {str(blocker)!r}}}}}}}\n"
    )
    env = subprocess_env(**logged_settings(tmp_path, extra))
    result = _pipe(PIPED, "--sender", "a@x.test", "--recipient", "user@our.test", env=env)
    assert result.returncode == 75
    assert "could not be stored" in result.stderr.decode()
    assert "Traceback" not in result.stderr.decode()
    assert not InboundMessage.objects.exists()


def test_an_import_stops_with_75_when_the_database_is_gone(
    mailbox: Mailbox, tmp_path: Path
) -> None:
    path = tmp_path / "export.mbox"
    path.write_bytes(PIPED)
    env = subprocess_env(INBOUND_TEST_DB="postgres", INBOUND_TEST_PG_PORT=str(_closed_port()))
    result = subprocess.run(
        [sys.executable, "-m", "django", "inbound_import", "--mbox", str(path)],
        cwd=ROOT,
        env=env,
        capture_output=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 75
    assert "run the same command again to resume" in _one_line(result)
    assert b"Read 0 message(s)." in result.stdout  # the summary comes first
