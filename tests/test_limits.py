"""Tier 4: session caps, timeouts, command floods and HTTP probes over real sockets."""

from __future__ import annotations

import socket
import time

import pytest
from django.test import override_settings

from django_inbound_smtp import replies
from django_inbound_smtp.models import InboundMessage
from django_inbound_smtp.smtp.limits import SessionLimiter, client_key
from django_inbound_smtp.testing import RunningServer
from tests.helpers import start_data

pytestmark = pytest.mark.integration


def _connect(server: RunningServer, *, source: str = "127.0.0.1") -> socket.socket:
    sock = socket.create_connection(
        (server.host, server.port), timeout=10, source_address=(source, 0)
    )
    return sock


def _read_all(sock: socket.socket) -> bytes:
    data = b""
    while chunk := sock.recv(4096):
        data += chunk
    return data


def test_limiter_counts_per_client_and_in_total() -> None:
    limiter = SessionLimiter(total=3, per_client=2)
    assert limiter.admit("a") is None
    assert limiter.admit("a") is None
    assert limiter.admit("a") == replies.TOO_MANY_FROM_CLIENT
    assert limiter.admit("b") is None
    assert limiter.admit("c") == replies.TOO_MANY_SESSIONS
    limiter.release("a")
    assert limiter.admit("c") is None
    assert limiter.open_sessions == 3


@override_settings(INBOUND_SMTP={"HOSTNAME": "mx.test", "MAX_SESSIONS_PER_CLIENT": 2})
def test_sessions_per_client_are_capped(smtp_server: RunningServer) -> None:
    first, second = _connect(smtp_server), _connect(smtp_server)
    assert first.recv(1024).startswith(b"220 ")
    assert second.recv(1024).startswith(b"220 ")
    with _connect(smtp_server) as third:
        assert _read_all(third) == (
            b"421 4.7.0 mx.test Error: too many connections from your address\r\n"
        )
    # Another client address is not affected (the loopback range is all ours).
    with _connect(smtp_server, source="127.0.0.2") as other:
        assert other.recv(1024).startswith(b"220 ")
    first.close()
    time.sleep(0.2)
    with _connect(smtp_server) as again:
        assert again.recv(1024).startswith(b"220 ")
    second.close()


@override_settings(INBOUND_SMTP={"HOSTNAME": "mx.test", "MAX_SESSIONS": 2})
def test_sessions_in_total_are_capped(smtp_server: RunningServer) -> None:
    held = [_connect(smtp_server, source=f"127.0.0.{n}") for n in (2, 3)]
    for sock in held:
        assert sock.recv(1024).startswith(b"220 ")
    with _connect(smtp_server, source="127.0.0.4") as refused:
        assert _read_all(refused).startswith(b"421 4.3.2 mx.test Too many concurrent SMTP")
    for sock in held:
        sock.close()


@override_settings(INBOUND_SMTP={"HOSTNAME": "mx.test", "COMMAND_TIMEOUT": 0.5})
def test_a_silent_client_gets_421_before_the_close(smtp_server: RunningServer) -> None:
    with _connect(smtp_server) as sock:
        assert _read_all(sock).endswith(b"421 4.4.2 mx.test Error: timeout exceeded\r\n")


@override_settings(INBOUND_SMTP={"HOSTNAME": "mx.test", "DATA_TIMEOUT": 1, "COMMAND_TIMEOUT": 5})
def test_a_trickling_data_transfer_is_cut_at_the_deadline(make_mailbox, smtp_server) -> None:
    make_mailbox("user@our.test")
    with _connect(smtp_server) as sock:
        stream = start_data(sock)
        reply = b""
        for _ in range(40):  # one line every 0.1 s: steady, never idle, never done
            try:
                stream.write(b"still coming\r\n")
                stream.flush()
            except OSError:
                break
            time.sleep(0.1)
            sock.settimeout(0.01)
            try:
                reply += sock.recv(1024)
            except TimeoutError:
                continue
            if reply:
                break
        assert reply.startswith(b"421 4.4.2 mx.test Error: DATA took too long")
    assert not InboundMessage.objects.exists()


def test_noop_flood_is_cut_off(smtp_client) -> None:
    codes = [smtp_client.noop()[0] for _ in range(20)]
    assert codes == [250] * 20
    code, text = smtp_client.noop()
    assert (code, text.decode()) == (421, "4.7.0 NOOP sent too many times")


def test_an_http_request_is_closed_at_once(smtp_server: RunningServer) -> None:
    with _connect(smtp_server) as sock:
        sock.recv(1024)
        sock.sendall(b"GET / HTTP/1.1\r\nHost: mx.test\r\n\r\n")
        assert _read_all(sock) == b"221 2.7.0 Error: I can break rules, too. Goodbye.\r\n"


@override_settings(INBOUND_SMTP={"HOSTNAME": "mx.test", "DATA_TIMEOUT": 1, "COMMAND_TIMEOUT": 30})
def test_a_stalled_data_transfer_is_cut_at_the_deadline_not_the_idle_timeout(
    make_mailbox, smtp_server
) -> None:
    make_mailbox("user@our.test")
    with _connect(smtp_server) as sock:
        stream = start_data(sock)
        stream.write(b"Subject: then nothing\r\n")
        stream.flush()
        # The idle timeout (30 s) is longer than the socket timeout (10 s): only the
        # DATA deadline can produce this reply in time.
        assert stream.readline() == b"421 4.4.2 mx.test Error: DATA took too long\r\n"
    assert not InboundMessage.objects.exists()


@pytest.mark.parametrize(
    ("address", "key"),
    [
        ("192.0.2.1", "192.0.2.1"),
        ("2001:db8:1:2:aaaa::1", "2001:db8:1:2::/64"),
        ("2001:db8:1:2:bbbb::9", "2001:db8:1:2::/64"),
        ("::ffff:192.0.2.1", "192.0.2.1"),
    ],
)
def test_one_client_is_an_ipv4_address_or_an_ipv6_slash_64(address: str, key: str) -> None:
    assert client_key(address) == key


def test_longest_line_counts_across_chunks() -> None:
    from django_inbound_smtp.smtp._data import longest_line

    assert longest_line(b"abc\r\nde", 0) == (3, 2)
    assert longest_line(b"fgh\r\n", 2) == (5, 0)
    assert longest_line(b"xy", 5) == (7, 7)


def test_a_data_line_limit_refuses_the_message_when_set(make_mailbox, smtp_server) -> None:
    make_mailbox("user@our.test")
    with override_settings(INBOUND_SMTP={"HOSTNAME": "mx.test", "DATA_LINE_LIMIT": 998}):
        with _connect(smtp_server) as sock:
            stream = start_data(sock)
            stream.write(b"Subject: long\r\n\r\n" + b"x" * 999 + b"\r\n.\r\n")
            stream.flush()
            assert stream.readline() == b"500 5.5.2 Error: line too long\r\n"
            stream.write(b"MAIL FROM:<a@example.org>\r\n")
            stream.flush()
            assert stream.readline().startswith(b"250")  # the session goes on
    assert not InboundMessage.objects.exists()


def test_early_talkers_are_refused_when_asked(smtp_server) -> None:
    strict = {"HOSTNAME": "mx.test", "EARLY_TALKERS": "reject", "GREETING_DELAY": 0.5}
    with override_settings(INBOUND_SMTP=strict):
        with _connect(smtp_server) as talker:
            talker.sendall(b"EHLO bot\r\n")  # before the greeting
            assert _read_all(talker) == b"554 5.5.0 Error: SMTP protocol synchronization\r\n"
        with _connect(smtp_server) as pipeliner:
            assert pipeliner.recv(1024).startswith(b"220 ")
            # Commands behind EHLO before its reply could say whether PIPELINING is on.
            pipeliner.sendall(b"EHLO bot\r\nMAIL FROM:<a@example.org>\r\n")
            assert _read_all(pipeliner) == b"554 5.5.0 Error: SMTP protocol synchronization\r\n"
        with _connect(smtp_server) as polite:
            assert polite.recv(1024).startswith(b"220 ")
            polite.sendall(b"EHLO client.test\r\n")
            assert polite.recv(1024).startswith(b"250-mx.test")
