"""Tier 4: PROXY protocol v1 and v2, accepted only from trusted balancers."""

from __future__ import annotations

import ipaddress
import socket
import struct

import pytest
from django.test import override_settings

from django_inbound_smtp.models import InboundMessage
from django_inbound_smtp.testing import RunningServer

pytestmark = pytest.mark.integration
TRUST_LOOPBACK = {
    "HOSTNAME": "mx.test",
    "PROXY_PROTOCOL_FROM": ["127.0.0.0/8"],
    "PROXY_PROTOCOL_TIMEOUT": 3,
}
V2_SIGNATURE = b"\r\n\r\n\x00\r\nQUIT\n"


def _v1(client: str, port: int) -> bytes:
    return f"PROXY TCP4 {client} 127.0.0.1 {port} 25\r\n".encode()


def _v2(client: str, port: int) -> bytes:
    addresses = ipaddress.ip_address(client).packed + ipaddress.ip_address("127.0.0.1").packed
    body = addresses + struct.pack("!HH", port, 25)
    # version 2, command PROXY; family INET, protocol STREAM; length of the addresses
    return V2_SIGNATURE + bytes([0x21, 0x11]) + struct.pack("!H", len(body)) + body


def _deliver_through_proxy(server: RunningServer, header: bytes) -> bytes:
    with socket.create_connection((server.host, server.port), timeout=10) as sock:
        sock.sendall(header)
        stream = sock.makefile("rwb")
        greeting = stream.readline()
        if not greeting.startswith(b"220"):
            return greeting + stream.read()
        for command in (
            b"EHLO balancer-client",
            b"MAIL FROM:<a@example.org>",
            b"RCPT TO:<user@our.test>",
            b"DATA",
        ):
            stream.write(command + b"\r\n")
            stream.flush()
            while stream.readline()[3:4] == b"-":
                pass
        stream.write(b"Subject: proxied\r\n\r\nx\r\n.\r\nQUIT\r\n")
        stream.flush()
        return stream.readline()


@pytest.mark.parametrize(("encode", "version"), [(_v1, "v1"), (_v2, "v2")])
@override_settings(INBOUND_SMTP=TRUST_LOOPBACK)
def test_the_client_named_by_a_trusted_proxy_is_stored(
    make_mailbox, smtp_server: RunningServer, encode, version: str
) -> None:
    make_mailbox("user@our.test")
    reply = _deliver_through_proxy(smtp_server, encode("203.0.113.7", 40025))
    assert reply.startswith(b"250 2.0.0 Ok: queued as"), version
    message = InboundMessage.objects.get()
    assert (message.peer_ip, message.peer_port) == ("203.0.113.7", 40025)
    assert b"Received: from balancer-client ([203.0.113.7])" in message.raw_bytes


@override_settings(INBOUND_SMTP={**TRUST_LOOPBACK, "PROXY_PROTOCOL_FROM": ["10.0.0.0/8"]})
def test_a_header_from_an_untrusted_peer_is_refused(make_mailbox, smtp_server) -> None:
    make_mailbox("user@our.test")
    assert _deliver_through_proxy(smtp_server, _v1("203.0.113.7", 1)) == b""  # closed
    assert not InboundMessage.objects.exists()


@override_settings(INBOUND_SMTP=TRUST_LOOPBACK)
def test_a_connection_without_a_valid_header_is_closed(smtp_server) -> None:
    assert _deliver_through_proxy(smtp_server, b"EHLO sneaky\r\n") == b""


@override_settings(INBOUND_SMTP={**TRUST_LOOPBACK, "MAX_SESSIONS_PER_CLIENT": 1})
def test_the_per_client_cap_counts_real_clients_not_the_proxy(smtp_server) -> None:
    held = []
    for client in ("203.0.113.1", "203.0.113.2"):  # two clients, one balancer address
        sock = socket.create_connection((smtp_server.host, smtp_server.port), timeout=10)
        sock.sendall(_v1(client, 1000))
        assert sock.recv(1024).startswith(b"220 ")
        held.append(sock)
    with socket.create_connection((smtp_server.host, smtp_server.port), timeout=10) as again:
        again.sendall(_v1("203.0.113.1", 1001))
        assert again.recv(1024).startswith(b"421 4.7.0 mx.test Error: too many connections")
    for sock in held:
        sock.close()
