"""Our ``Received:`` trace header and queue ids (RFC 5321 §4.4). Pure."""

from __future__ import annotations

import re
import secrets
from collections.abc import Sequence
from datetime import datetime
from email.utils import format_datetime

__all__ = ["new_queue_id", "received_field", "received_header", "sanitize_helo"]

# Anything outside printable ASCII in a HELO name is dropped before it goes into a
# header or a column: the name is client-controlled (hostile-inputs #69).
_NOT_PRINTABLE = re.compile(r"[^\x21-\x7e]")


def new_queue_id() -> str:
    """A fresh queue id: 16 upper-case hex digits (64 random bits)."""
    return secrets.token_hex(8).upper()


def sanitize_helo(name: str) -> str:
    """The HELO/EHLO argument reduced to printable ASCII, at most 255 characters."""
    return _NOT_PRINTABLE.sub("", name)[:255]


def received_header(
    *,
    helo: str,
    peer_host: str | None,
    hostname: str,
    queue_id: str,
    recipients: tuple[str, ...],
    esmtp: bool,
    tls: bool,
    when: datetime,
    tls_version: str = "",
    tls_cipher: str = "",
    authenticated: bool = False,
    lmtp: bool = False,
) -> bytes:
    """The ``Received:`` field we prepend to SMTP and LMTP mail (see
    :func:`received_field`)."""
    # RFC 3848: ESMTP, ESMTPS (TLS), ESMTPA (AUTH), ESMTPSA (both); LMTP likewise.
    base = "LMTP" if lmtp else "ESMTP" if esmtp else "SMTP"
    protocol = base + ("S" if tls else "") + ("A" if authenticated else "")
    ip = sanitize_helo(peer_host or "unknown")
    lines = [f"Received: from {sanitize_helo(helo) or 'unknown'} ([{ip}])"]
    if tls_version:
        # As Postfix writes it, so the hop's protection can be audited later.
        lines.append(
            f"\t(using {sanitize_helo(tls_version)} with cipher {sanitize_helo(tls_cipher)})"
        )
    return received_field(
        lines,
        hostname=hostname,
        protocol=protocol,
        queue_id=queue_id,
        recipients=recipients,
        when=when,
    )


def received_field(
    from_lines: Sequence[str],
    *,
    hostname: str,
    protocol: str,
    queue_id: str,
    recipients: Sequence[str],
    when: datetime,
) -> bytes:
    """A ``Received:`` field from its ``from`` part (``from_lines``, the first one
    starting ``Received:``): then ``by`` us ``with`` ``protocol`` ``id`` ``queue_id``,
    ``for`` the recipient and the date; folded, ending in CRLF. Every message we store
    gets one: SMTP and LMTP mail, and mail put in from the admin.

    ``for <rcpt>`` is given only for a single recipient, as Postfix does, so one copy
    never reveals the other (possibly BCC) recipients.
    """
    lines = [
        *from_lines,
        f"\tby {hostname} (django-inbound-smtp) with {protocol} id {queue_id}",
    ]
    suffix = f"; {format_datetime(when)}"
    if len(recipients) == 1:
        lines.append(f"\tfor <{recipients[0]}>{suffix}")
    else:
        lines[-1] += suffix
    return ("\r\n".join(lines) + "\r\n").encode("utf-8", "surrogateescape")
