"""What the handler reads off an aiosmtpd session and envelope: the client, TLS, the
sender, and the envelope a received message is stored with. No I/O."""

from __future__ import annotations

import ipaddress
import logging
from typing import Any

from django_inbound_smtp import replies
from django_inbound_smtp.conf import get_settings
from django_inbound_smtp.envelope import ReceivedEnvelope, ResolvedRecipient, utf8_error
from django_inbound_smtp.smtp._trace import sanitize_helo
from django_inbound_smtp.smtp.protocol import InboundEnvelope

__all__ = [
    "NULL_SENDER",
    "checked_peer",
    "log_accepted",
    "peer_of",
    "received_envelope",
    "sender_of",
    "tls_of",
    "trusted_proxy",
    "utf8_reply",
]

logger = logging.getLogger("django_inbound_smtp.smtp.handler")  # the lines it always logged

NULL_SENDER = "<>"


def peer_of(session: Any) -> tuple[str | None, int | None]:
    peer = session.peer
    if isinstance(peer, tuple) and len(peer) >= 2:
        return str(peer[0]), int(peer[1])
    return None, None


def utf8_reply(address: str, *, smtputf8: bool) -> str | None:
    problem = utf8_error(address, smtputf8=smtputf8)
    if problem == "invalid":
        return str(replies.BAD_UTF8)
    if problem == "needs-smtputf8":
        return str(replies.NEEDS_SMTPUTF8)
    return None


def trusted_proxy(address: str | None) -> bool:
    if address is None:
        return False
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return False
    return any(
        ip in ipaddress.ip_network(network, strict=False)
        for network in get_settings().PROXY_PROTOCOL_FROM
    )


def tls_of(session: Any) -> tuple[bool, str, str]:
    """Whether the session is encrypted, and its protocol version and cipher."""
    info = session.ssl
    if info is None:
        return False, "", ""
    ssl_object = info.get("ssl_object") if isinstance(info, dict) else None
    if ssl_object is None:
        return True, "", ""
    cipher = ssl_object.cipher()
    return True, str(ssl_object.version() or ""), str(cipher[0]) if cipher else ""


def _is_lmtp(server_or_session: Any) -> bool:
    return bool(getattr(server_or_session, "lmtp", False))


def checked_peer(server: Any, session: Any) -> str | None:
    """The client address the sender checks look at; none on LMTP, where the client
    is the MTA in front of us, which did its own checks."""
    return None if _is_lmtp(server) else peer_of(session)[0]


def received_envelope(
    session: Any,
    envelope: InboundEnvelope,
    recipients: tuple[ResolvedRecipient, ...],
    checks: dict[str, Any] | None,
    *,
    received_via: str = "smtp",
) -> ReceivedEnvelope:
    peer_host, peer_port = peer_of(session)
    tls, tls_version, tls_cipher = tls_of(session)
    return ReceivedEnvelope(
        queue_id=envelope.queue_id,
        mail_from=sender_of(envelope),
        recipients=recipients,
        peer_host=peer_host,
        peer_port=peer_port,
        helo=sanitize_helo(session.host_name or ""),
        tls=tls,
        esmtp=bool(session.extended_smtp),
        received_at=envelope.received_at,
        mail_options=tuple(envelope.mail_options),
        tls_version=tls_version,
        tls_cipher=tls_cipher,
        auth_user=str(session.auth_data) if session.authenticated else "",
        bare_newlines=bool(envelope.bare_newlines),
        sender_checks=checks,
        received_via=received_via,
    )


def log_accepted(received: ReceivedEnvelope, pk: int, size: int) -> None:
    logger.info(
        "accepted %s from <%s> for %d recipient(s), %d bytes",
        received.queue_id,
        received.mail_from,
        len(received.recipients),
        size,
        extra={"queue_id": received.queue_id, "message_pk": pk, "peer": received.peer_host},
    )


def sender_of(envelope: InboundEnvelope) -> str:
    # aiosmtpd keeps "<>" literally; it must stay truthy there (its MAIL/RCPT ordering
    # checks test mail_from), so the null sender becomes "" only when stored.
    mail_from = envelope.mail_from or ""
    return "" if mail_from == NULL_SENDER else str(mail_from)
