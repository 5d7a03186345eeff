"""Helpers shared by the wire tests."""

from __future__ import annotations

import io
import smtplib
import socket
import ssl
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from types import ModuleType
from typing import Any

import trustme

from django_inbound_smtp.envelope import ReceivedEnvelope


class GuardedSMTP(smtplib.SMTP):
    """An ``smtplib`` client that fails the test on a leaked exception reply.

    aiosmtpd's default error path answers ``500 Error: (ExcType) text``: a permanent
    failure carrying internals. Our hooks must never let one out (STYLE §4).
    """

    def getreply(self) -> tuple[int, bytes]:
        code, message = super().getreply()
        assert not message.startswith(b"Error: ("), f"leaked exception: {code} {message!r}"
        return code, message

    def quit_if_open(self) -> None:
        """Say QUIT, unless the server has already closed the connection."""
        try:
            self.quit()
        except smtplib.SMTPServerDisconnected:
            pass


def subprocess_env(**extra: str) -> dict[str, str]:
    """Environment for a child process (smtpd, a Celery worker) that must use the test
    database this test session created, and the same scratch folder (media)."""
    import os
    from pathlib import Path

    from django.db import connection

    env = dict(os.environ)
    env["DJANGO_SETTINGS_MODULE"] = "tests.settings"
    env["PYTHONPATH"] = str(Path(__file__).resolve().parent.parent)
    name = connection.settings_dict["NAME"]
    if connection.vendor == "postgresql":
        env["INBOUND_TEST_PG_NAME"] = name
    else:
        env["INBOUND_TEST_DB_SQLITE_MAIN"] = name
    env.update(extra)
    return env


@dataclass
class Certs:
    ca: trustme.CA
    certfile: Path
    keyfile: Path

    def client_context(self) -> ssl.SSLContext:
        context = ssl.create_default_context()
        self.ca.configure_trust(context)
        return context

    def issue(self) -> str:
        """Write a fresh certificate for mx.test over the files; return its serial."""
        cert = self.ca.issue_cert("mx.test", "127.0.0.1")
        cert.private_key_pem.write_to_path(str(self.keyfile))
        cert.cert_chain_pems[0].write_to_path(str(self.certfile))
        return cert_serial(self.certfile.read_bytes())


def cert_serial(pem: bytes) -> str:
    from cryptography import x509

    return format(x509.load_pem_x509_certificate(pem).serial_number, "x")


def start_data(sock: socket.socket) -> io.BufferedIOBase:
    """Raw dialogue up to the 354 (a@example.org -> user@our.test); returns the stream."""
    stream = sock.makefile("rwb")
    stream.readline()
    for command in (b"EHLO c", b"MAIL FROM:<a@example.org>", b"RCPT TO:<user@our.test>", b"DATA"):
        stream.write(command + b"\r\n")
        stream.flush()
        while (line := stream.readline())[3:4] == b"-":
            pass
    assert line.startswith(b"354"), line
    return stream


@contextmanager
def receiver_connected(receiver: Callable[..., object]) -> Iterator[None]:
    """Connect ``receiver`` to ``message_received`` for the block only."""
    from django_inbound_smtp.signals import message_received

    message_received.connect(receiver, weak=False)
    try:
        yield
    finally:
        message_received.disconnect(receiver)


def local_storages(location: object) -> dict[str, dict[str, object]]:
    """``STORAGES`` with the default alias a ``FileSystemStorage`` at ``location`` (and
    the static files as configured: admin pages need them)."""
    from django.conf import settings

    storages: dict[str, dict[str, object]] = {
        "default": {
            "BACKEND": "django.core.files.storage.FileSystemStorage",
            "OPTIONS": {"location": str(location)},
        },
    }
    if "staticfiles" in settings.STORAGES:
        static: Any = settings.STORAGES["staticfiles"]
        storages["staticfiles"] = dict(static)
    return storages


def broken_storages(folder: Path) -> dict[str, Any]:
    """``STORAGES`` with the default alias as configured and a ``"broken"`` alias whose
    folder is the plain file ``folder/not-a-folder``: writing under it fails for real (EEXIST /
    ENOTDIR), whatever the user (root included)."""
    from django.conf import settings

    blocker = folder / "not-a-folder"
    blocker.write_text("a file where the storage expects a folder")
    return {
        "default": settings.STORAGES["default"],
        "broken": local_storages(blocker)["default"],
    }


def received_envelope(queue_id: str = "QTEST", **fields: object) -> ReceivedEnvelope:
    """A ``ReceivedEnvelope`` as the listener builds one; ``fields`` override the defaults
    (sender a@x.test, no recipients, a loopback client that said EHLO c.test)."""
    values: dict[str, object] = {
        "queue_id": queue_id,
        "mail_from": "a@x.test",
        "recipients": (),
        "peer_host": "127.0.0.1",
        "peer_port": 1025,
        "helo": "c.test",
        "tls": False,
        "esmtp": True,
        "received_at": datetime.now(UTC),
    }
    values.update(fields)
    return ReceivedEnvelope(**values)  # type: ignore[arg-type]


def store_and_schedule(envelope: Any, content: bytes, *, trace: bytes = b"") -> int:
    """Store one message the way ``smtpd`` does (the lifecycle's scheduler as the
    store's after-commit hook); its pk."""
    from django_inbound_smtp import store
    from django_inbound_smtp.lifecycle import schedule

    return store.store_message(
        envelope,
        content,
        trace=trace,
        on_commit=schedule.schedule,
        queued_by=schedule.queue_owner(),
    )


def postfix_module(purpose: str) -> ModuleType:
    """``benchmarks/postfix.py`` (a private Postfix instance), for the tests that run
    a real Postfix; fails (never skips) without Postfix or without root."""
    import importlib
    import os
    import shutil
    import sys

    import pytest

    if not os.access("/usr/sbin/postfix", os.X_OK) and not shutil.which("postfix"):
        pytest.fail(
            "Postfix is not installed: `make test` installs it (benchmarks/install_postfix.sh)"
        )
    if os.geteuid() != 0:
        pytest.fail(
            f"the Postfix {purpose} test needs root (Postfix's master and its postfix user)"
        )
    bench_dir = str(Path(__file__).resolve().parent.parent / "benchmarks")
    sys.path.insert(0, bench_dir)
    try:
        module: ModuleType = importlib.import_module("postfix")
        return module
    finally:
        sys.path.remove(bench_dir)
