"""The mapping between an envelope and its rows, both ways, losing nothing.

:func:`message_row` and :func:`recipient_rows` turn what the SMTP layer accepted into
(unsaved) rows; :func:`envelope_of` turns the stored rows back into the same
:class:`ReceivedEnvelope`, which is what processing hands to receivers. Every field
of the envelope that is not a pure function of another is a column, so the round trip
is exact (``tests/test_store.py`` checks it field by field).
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from typing import Any

from django_inbound_smtp.envelope import (
    ReceivedEnvelope,
    ResolvedRecipient,
    SignedReference,
    address_key,
)
from django_inbound_smtp.models import InboundMessage, InboundRecipient, SenderCheck
from django_inbound_smtp.parsing import HeaderSummary, clean_text, storable

__all__ = [
    "dedupe_key",
    "envelope_of",
    "message_row",
    "recipient_rows",
    "sender_check_rows",
]


def peer_ip(envelope: ReceivedEnvelope) -> str | None:
    """The client address as the column takes it."""
    host = envelope.peer_host
    if not host:
        return None
    # IPv6 peers may carry a zone id ("fe80::1%eth0"), which the column does not take.
    return host.split("%", 1)[0]


def dedupe_key(envelope: ReceivedEnvelope, content_sha256: str, message_id: str) -> str:
    """SHA-256 over what makes two deliveries the same message: the digest of the
    client's bytes, the Message-ID, the envelope sender and the sorted recipients (not
    our trace line, not the time or the client address, which differ on a retry)."""
    digest = hashlib.sha256(content_sha256.encode("ascii"))
    recipients = sorted(address_key(address) for address in envelope.rcpt_tos)
    for part in (message_id, envelope.mail_from, *recipients):
        digest.update(b"\x00" + part.encode("utf-8", "surrogateescape"))
    return digest.hexdigest()


def message_row(
    envelope: ReceivedEnvelope, summary: HeaderSummary, **fields: Any
) -> InboundMessage:
    """The (unsaved) message row for ``envelope``; ``fields`` adds the storage fields."""
    return InboundMessage(
        queue_id=envelope.queue_id,
        envelope_from=envelope.mail_from,
        mail_options=list(envelope.mail_options),
        esmtp=envelope.esmtp,
        peer_ip=peer_ip(envelope),
        peer_port=envelope.peer_port,
        helo=clean_text(envelope.helo, limit=255),
        tls=envelope.tls,
        tls_version=envelope.tls_version[:16],
        tls_cipher=envelope.tls_cipher[:100],
        auth_user=envelope.auth_user[:150],
        bare_newlines=envelope.bare_newlines,
        received_at=envelope.received_at,
        dispatched_at=envelope.received_at,
        message_id=summary.message_id,
        subject=summary.subject,
        from_header=summary.from_header,
        date_header=summary.date,
        received_via=envelope.received_via,
        injected_by_id=envelope.injected_by,
        # Replaced by the full parse's list (which repeats these) after the 250.
        defects=list(summary.defects),
        **fields,
    )


def recipient_rows(envelope: ReceivedEnvelope, message: InboundMessage) -> list[InboundRecipient]:
    """The (unsaved) recipient rows of ``message``, one per accepted RCPT, in order."""
    return [
        InboundRecipient(
            message=message,
            mailbox_id=recipient.mailbox_id,
            address=recipient.address,
            tag=clean_text(recipient.tag, limit=64),
            **_signed_fields(recipient.signed),
        )
        for recipient in envelope.recipients
    ]


def _signed_fields(signed: SignedReference | None) -> dict[str, object]:
    if signed is None:
        return {}
    return {
        "reply_content_type_id": signed.content_type_id,
        "reply_object_id": signed.object_id,
        "reply_user_pk": signed.user_id,
        "bounce_recipient": signed.bounce_recipient,
    }


def _signed_of(row: InboundRecipient) -> SignedReference | None:
    if row.reply_content_type_id is None:
        return None
    return SignedReference(
        content_type_id=row.reply_content_type_id,
        object_id=row.reply_object_id,
        user_id=row.reply_user_pk,
        bounce_recipient=row.bounce_recipient,
    )


def sender_check_rows(envelope: ReceivedEnvelope, message: InboundMessage) -> list[SenderCheck]:
    """The (unsaved) sender-check row of ``message``, if the checks ran."""
    if envelope.sender_checks is None:
        return []
    # Reasons, the From domain and DKIM details quote what the sender wrote.
    return [SenderCheck(message=message, **storable(envelope.sender_checks))]


def envelope_of(
    message: InboundMessage, recipients: Sequence[InboundRecipient]
) -> ReceivedEnvelope:
    """The envelope of a stored message, as it was accepted (recipients in RCPT order)."""
    ordered = sorted(recipients, key=lambda row: row.pk or 0)
    return ReceivedEnvelope(
        queue_id=message.queue_id,
        mail_from=message.envelope_from,
        recipients=tuple(
            ResolvedRecipient(
                address=r.address, mailbox_id=r.mailbox_id, tag=r.tag, signed=_signed_of(r)
            )
            for r in ordered
        ),
        peer_host=message.peer_ip,
        peer_port=message.peer_port,
        helo=message.helo,
        tls=message.tls,
        esmtp=message.esmtp,
        received_at=message.received_at,
        mail_options=tuple(message.mail_options or ()),
        tls_version=message.tls_version,
        tls_cipher=message.tls_cipher,
        auth_user=message.auth_user,
        bare_newlines=message.bare_newlines,
        received_via=message.received_via,
        injected_by=message.injected_by_id,
    )
