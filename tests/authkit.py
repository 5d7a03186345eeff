"""Zone data, DKIM keys and signed messages for the sender-check tests."""

from __future__ import annotations

import base64
import functools
from typing import Any

import dkim
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from tests.dnsserver import DnsServer

ALL_CHECKS = ("DNSBL", "IPREV", "SENDER_DOMAIN", "SPF", "DKIM", "DMARC")


@functools.cache
def dkim_key() -> tuple[bytes, str]:
    """A 1024-bit RSA key: (PKCS#1 PEM private key, DNS ``p=`` value). One per run."""
    key = rsa.generate_private_key(public_exponent=65537, key_size=1024)
    private = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.TraditionalOpenSSL,
        serialization.NoEncryption(),
    )
    public = key.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return private, base64.b64encode(public).decode("ascii")


def txt(value: str) -> str:
    """A TXT rdata in zone-file form, split in 200-byte strings."""
    chunks = [value[i : i + 200] for i in range(0, len(value), 200)] or [""]
    return " ".join(f'"{chunk}"' for chunk in chunks)


def message(
    *,
    sender: str = "alice@sender.test",
    to: str = "user@our.test",
    body: str = "Hello.\r\n",
    extra: str = "",
) -> bytes:
    return (
        f"From: Alice <{sender}>\r\nTo: {to}\r\nSubject: sender checks\r\n"
        f"Message-ID: <{abs(hash(body + extra))}@sender.test>\r\n{extra}\r\n{body}"
    ).encode()


def sign(content: bytes, *, domain: str = "sender.test", selector: str = "sel") -> bytes:
    private, _public = dkim_key()
    header = dkim.sign(
        content,
        selector.encode(),
        domain.encode(),
        private,
        include_headers=[b"from", b"to", b"subject", b"message-id"],
    )
    return bytes(header) + content


def load_sender_zone(
    dns: DnsServer,
    *,
    spf: str = "v=spf1 ip4:127.0.0.1 -all",
    dmarc: str | None = "v=DMARC1; p=reject",
) -> None:
    """sender.test: MX, SPF, DMARC, the DKIM key at sel._domainkey; 127.0.0.1 forward-
    confirms as client.sender.test (the HELO name the tests use)."""
    _private, public = dkim_key()
    zone: dict[str, list[tuple[str, str]]] = {
        "sender.test": [("MX", "10 mx.sender.test."), ("TXT", txt(spf))],
        "mx.sender.test": [("A", "127.0.0.1")],
        "sel._domainkey.sender.test": [("TXT", txt(f"v=DKIM1; k=rsa; p={public}"))],
        "1.0.0.127.in-addr.arpa": [("PTR", "client.sender.test.")],
        "client.sender.test": [("A", "127.0.0.1"), ("TXT", txt("v=spf1 a -all"))],
    }
    if dmarc:
        zone["_dmarc.sender.test"] = [("TXT", txt(dmarc))]
    dns.load(zone)


def checks_settings(dns: DnsServer, base: dict[str, Any], **policies: str) -> dict[str, Any]:
    """``INBOUND_SMTP`` with every check on (tag unless given) against ``dns``."""
    return {
        **base,
        "SENDER_CHECKS": {name: policies.get(name, "tag") for name in ALL_CHECKS},
        "DNS": {"NAMESERVERS": [dns.address], "TIMEOUT": 1.0, "CACHE_SIZE": 0},
        "SENDER_CHECKS_TIMEOUT": 3,
    }
