"""Tier 4/5: STARTTLS, implicit TLS, TLS required, certificate reload (trustme certs)."""

from __future__ import annotations

import signal
import socket
import ssl
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from django.test import override_settings

from django_inbound_smtp.models import InboundMessage
from django_inbound_smtp.testing import running_server
from tests.helpers import Certs, GuardedSMTP, cert_serial, subprocess_env

pytestmark = [pytest.mark.integration, pytest.mark.django_db(transaction=True)]
MESSAGE = b"Subject: secret\r\n\r\nx\r\n"
ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture
def tls_settings(certs: Certs, make_mailbox) -> Iterator[dict[str, str]]:
    make_mailbox("user@our.test")
    settings = {
        "HOSTNAME": "mx.test",
        "TLS_CERTFILE": str(certs.certfile),
        "TLS_KEYFILE": str(certs.keyfile),
    }
    with override_settings(INBOUND_SMTP=settings):
        yield settings


def test_starttls_protects_the_session_and_is_recorded(tls_settings, certs: Certs) -> None:
    with running_server() as server, GuardedSMTP(server.host, server.port, timeout=10) as client:
        client.ehlo("c.test")
        assert "starttls" in client.esmtp_features
        code, _ = client.starttls(context=certs.client_context())
        assert code == 220
        client.ehlo("c.test")
        # RFC 3207 §4.2: after TLS, STARTTLS is not offered again; no AUTH on an MX.
        assert "starttls" not in client.esmtp_features
        assert "auth" not in client.esmtp_features
        assert client.sendmail("a@example.org", ["user@our.test"], MESSAGE) == {}
        # A second STARTTLS would nest a handshake in aiosmtpd (hostile-inputs #18).
        code, text = client.docmd("STARTTLS")
        assert (code, text.decode()) == (554, "5.5.1 Error: TLS already active")
        assert client.noop()[0] == 250  # the session survives it
    message = InboundMessage.objects.get()
    assert message.tls is True
    assert message.tls_version.startswith("TLSv1.")
    assert message.tls_cipher
    header = message.raw_bytes.split(b"\r\n\r\n", 1)[0].decode()
    assert f"(using {message.tls_version} with cipher {message.tls_cipher})" in header
    assert "with ESMTPS id" in header


def test_commands_pipelined_before_the_handshake_are_discarded(tls_settings, certs) -> None:
    # CVE-2024-34083 class (hostile-inputs #15): plaintext sent with STARTTLS must not
    # run inside TLS. aiosmtpd 1.4.6 clears a private buffer; this guards the behaviour.
    with running_server() as server:
        with socket.create_connection((server.host, server.port), timeout=10) as raw:
            stream = raw.makefile("rb")
            stream.readline()
            raw.sendall(b"EHLO c\r\n")
            while stream.readline()[3:4] == b"-":
                pass
            raw.sendall(b"STARTTLS\r\nMAIL FROM:<injected@evil.test>\r\n")
            assert stream.readline().startswith(b"220 2.0.0")
            with certs.client_context().wrap_socket(raw, server_hostname="mx.test") as tls:
                tls_stream = tls.makefile("rwb")
                tls_stream.write(b"EHLO c\r\n")
                tls_stream.flush()
                first = tls_stream.readline()
                assert first.startswith(b"250-mx.test")  # the EHLO answer, not the MAIL's
                while tls_stream.readline()[3:4] == b"-":
                    pass
                tls_stream.write(b"RCPT TO:<user@our.test>\r\n")
                tls_stream.flush()
                # No MAIL ran: the injected sender was never accepted.
                assert tls_stream.readline().startswith(b"503 5.5.1 Error: need MAIL command")


def test_tls_can_be_required_before_mail(tls_settings, certs) -> None:
    with override_settings(INBOUND_SMTP={**tls_settings, "TLS_REQUIRED": True}):
        with running_server() as server:
            with GuardedSMTP(server.host, server.port, timeout=10) as client:
                client.ehlo("c")
                code, text = client.docmd("MAIL FROM:<a@example.org>")
                assert (code, text.decode()) == (
                    530,
                    "5.7.0 Must issue a STARTTLS command first",
                )
                client.starttls(context=certs.client_context())
                client.ehlo("c")
                assert client.sendmail("a@example.org", ["user@our.test"], MESSAGE) == {}
    assert InboundMessage.objects.get().tls


def test_without_a_certificate_starttls_is_not_available(smtp_client) -> None:
    assert "starttls" not in smtp_client.esmtp_features
    code, text = smtp_client.docmd("STARTTLS")
    assert (code, text.decode()) == (454, "4.7.0 TLS not available")


def test_implicit_tls_listener(tls_settings, certs) -> None:
    with override_settings(INBOUND_SMTP={**tls_settings, "TLS_BIND": "127.0.0.1:0"}):
        with running_server() as server:
            assert server.tls_port
            with socket.create_connection((server.host, server.tls_port), timeout=10) as raw:
                context = certs.client_context()
                with context.wrap_socket(raw, server_hostname="mx.test") as tls:
                    client = GuardedSMTP()
                    client.sock = tls
                    client.file = None
                    assert client.getreply()[0] == 220
                    client.ehlo("c")
                    assert "starttls" not in client.esmtp_features  # already encrypted
                    assert client.sendmail("a@example.org", ["user@our.test"], MESSAGE) == {}
                    client.quit()
    message = InboundMessage.objects.get()
    assert message.tls
    assert message.tls_version.startswith("TLSv1.")


def _servedcert_serial(port: int, certs: Certs) -> str:
    with GuardedSMTP("127.0.0.1", port, timeout=10) as client:
        client.starttls(context=certs.client_context())
        assert isinstance(client.sock, ssl.SSLSocket)
        der = client.sock.getpeercert(binary_form=True)
        assert der is not None
    return cert_serial(ssl.DER_cert_to_PEM_cert(der).encode())


@pytest.mark.slow
def test_smtpd_tls_options_and_sighup_reload(certs: Certs, make_mailbox) -> None:
    first = cert_serial(certs.certfile.read_bytes())
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "django",
            "smtpd",
            "127.0.0.1:0",
            "--skip-checks",
            "--tls-cert",
            str(certs.certfile),
            "--tls-key",
            str(certs.keyfile),
        ],
        cwd=ROOT,
        env=subprocess_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        assert process.stdout is not None
        banner = process.stdout.readline()
        assert banner.startswith("Inbound SMTP server listening on 127.0.0.1:")
        assert banner.rstrip().endswith("(STARTTLS offered)")
        port = int(banner.split("127.0.0.1:", 1)[1].split()[0])
        assert _servedcert_serial(port, certs) == first
        renewed = certs.issue()
        process.send_signal(signal.SIGHUP)
        deadline = time.monotonic() + 10
        while _servedcert_serial(port, certs) != renewed:
            assert time.monotonic() < deadline, "certificate not reloaded"
            time.sleep(0.1)
        process.send_signal(signal.SIGTERM)
        output, _ = process.communicate(timeout=30)
    finally:
        if process.poll() is None:
            process.kill()
            process.communicate()
    assert process.returncode == 0, output
    assert "TLS certificate reloaded" in output or "Traceback" not in output
