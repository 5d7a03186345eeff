"""Immutable values that cross layers: the SMTP envelope and accepted recipients.

Pure (stdlib only): the SMTP layer builds these, policy hooks read them, the write
path stores them.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

__all__ = [
    "address_key",
    "MAX_ADDRESS_LENGTH",
    "MAX_DOMAIN_LENGTH",
    "MAX_LOCAL_PART_LENGTH",
    "ReceivedEnvelope",
    "RecipientContext",
    "ResolvedRecipient",
    "SignedReference",
    "address_syntax_error",
    "helo_syntax_error",
    "split_address",
    "utf8_error",
]

# RFC 5321 §4.5.3.1.1-3: local part 64 octets, domain 255, path 256 including the
# angle brackets, so 254 for the bare address.
MAX_LOCAL_PART_LENGTH = 64
MAX_DOMAIN_LENGTH = 255
MAX_ADDRESS_LENGTH = 254

# Characters that must never reach a lookup, a log line or a database column from an
# envelope address: NUL (PostgreSQL rejects it), CR and LF (header and log injection).
_FORBIDDEN = frozenset("\x00\r\n")


def address_key(address: str) -> str:
    """The form under which two addresses are the same mailbox: trimmed, lower-cased,
    NFC-normalized (RFC 6531 §3.3: canonically equal spellings match).

    The one place address equality is decided: mailbox storage and lookup, duplicate
    ``RCPT`` detection and the dedupe key all use it. The local part is folded too, as
    Postfix does for virtual mailboxes; no NFKC folding, which would map a look-alike
    (fullwidth "ｕser") onto a real user.
    """
    return unicodedata.normalize("NFC", address.strip().lower())


def split_address(address: str) -> tuple[str, str]:
    """Split ``local@domain`` at the **last** ``@`` (a quoted local part may hold ``@``).

    Returns ``(local_part, domain)``; the domain is lower-cased (RFC 5321 §2.4: domain
    names are case-insensitive). An address without ``@`` has an empty domain.
    """
    local, at, domain = address.rpartition("@")
    if not at:
        return address, ""
    return local, domain.lower()


def utf8_error(address: str, *, smtputf8: bool) -> str | None:
    """``"invalid"`` for bytes that were not UTF-8 (aiosmtpd passes them surrogate-escaped),
    ``"needs-smtputf8"`` for a non-ASCII address in a transaction without SMTPUTF8
    (RFC 6531 §3.4), else ``None``."""
    if any("\udc80" <= ch <= "\udcff" for ch in address):
        return "invalid"
    if not smtputf8 and not address.isascii():
        return "needs-smtputf8"
    return None


def address_syntax_error(address: str) -> str | None:
    """Why ``address`` is unusable as an envelope address, or ``None`` if it is usable.

    Checked before any lookup, so over-long or control-character input never reaches
    the database (hostile-inputs cases #39-#41).
    """
    if any(ch in _FORBIDDEN for ch in address):
        return "control character in address"
    if len(address.encode("utf-8", "surrogateescape")) > MAX_ADDRESS_LENGTH:
        return "address too long"
    local, domain = split_address(address)
    if not local or not domain:
        return "address needs a local part and a domain"
    if len(local.encode("utf-8", "surrogateescape")) > MAX_LOCAL_PART_LENGTH:
        return "local part too long"
    if len(domain) > MAX_DOMAIN_LENGTH:
        return "domain too long"
    return None


# RFC 5321 §4.1.1.1 / §4.1.3: a domain name, or an address literal. Underscores are
# tolerated (Windows host names); anything else is not a name (hostile-inputs #69).
_HELO_NAME = re.compile(
    r"^(?=.{1,255}$)[A-Za-z0-9_](?:[A-Za-z0-9_-]{0,62})(?:\.[A-Za-z0-9_-]{1,63})*\.?$"
)
_HELO_LITERAL = re.compile(r"^\[(?:IPv6:[0-9A-Fa-f:.]{2,45}|[0-9]{1,3}(?:\.[0-9]{1,3}){3})\]$")


def helo_syntax_error(name: str) -> str | None:
    """Why ``name`` is not a usable HELO/EHLO argument, or ``None`` if it is."""
    if _HELO_NAME.match(name) or _HELO_LITERAL.match(name):
        return None
    return "not a domain name or address literal"


@dataclass(frozen=True, slots=True)
class RecipientContext:
    """What a recipient validator may know about the transaction so far."""

    mail_from: str
    peer_host: str | None
    helo: str
    tls: bool


@dataclass(frozen=True, slots=True)
class SignedReference:
    """What a verified signed reply address (or signed return path) refers to.

    ``content_type_id`` and ``object_id`` name the model instance the token was made
    for; ``user_id`` the user it was issued to (``""``: none); ``bounce_recipient`` is,
    for a signed return path (VERP), the address the original message was sent to.
    """

    content_type_id: int
    object_id: str
    user_id: str = ""
    bounce_recipient: str = ""


@dataclass(frozen=True, slots=True)
class ResolvedRecipient:
    """An accepted envelope recipient.

    ``address`` is exactly what the client sent in ``RCPT TO``; ``mailbox_id`` is the
    primary key of the matching ``Mailbox`` (``None`` when a custom validator accepted
    an address that has no ``Mailbox`` row); ``tag`` is the plus-address tag, if any;
    ``signed`` what a signed reply address refers to (``reply_addresses``).
    """

    address: str
    mailbox_id: int | None = None
    tag: str = ""
    #: Set when the address is a valid signed reply address or return path.
    signed: SignedReference | None = None


@dataclass(frozen=True, slots=True)
class ReceivedEnvelope:
    """The envelope of one accepted DATA transaction, as stored with the message.

    ``mail_from`` is ``""`` for the null sender ``<>`` (bounces).
    """

    queue_id: str
    mail_from: str
    recipients: tuple[ResolvedRecipient, ...]
    peer_host: str | None
    peer_port: int | None
    helo: str
    tls: bool
    esmtp: bool
    received_at: datetime
    mail_options: tuple[str, ...] = field(default=())
    tls_version: str = ""
    tls_cipher: str = ""
    #: Username the client authenticated as (SMTP AUTH on the submission listener).
    auth_user: str = ""
    #: DATA held CR or LF outside a CRLF (stored normalized, kept or refused by policy).
    bare_newlines: bool = False
    #: Sender-check verdicts to store with the message (``SenderCheck`` field values), or
    #: ``None`` when every check is off.
    sender_checks: Mapping[str, Any] | None = None
    #: How the message came in: ``"smtp"``, ``"lmtp"`` (from the MTA in front),
    #: ``"admin"`` when a staff user injected it, ``"pipe"`` / ``"import"`` through
    #: ``inbound_import``.
    received_via: str = "smtp"
    #: Primary key of the staff user who injected it from the admin, else ``None``.
    injected_by: int | None = None

    @property
    def rcpt_tos(self) -> tuple[str, ...]:
        """The accepted recipient addresses in the order the client gave them."""
        return tuple(r.address for r in self.recipients)
