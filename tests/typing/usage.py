"""Type-checked use of the public API (run by mypy, never collected by pytest)."""

from __future__ import annotations

import logging
from typing import Any

from django.dispatch import receiver

from django_inbound_smtp import replies
from django_inbound_smtp.envelope import ReceivedEnvelope, RecipientContext, ResolvedRecipient
from django_inbound_smtp.exceptions import Rejected, TemporaryFailure
from django_inbound_smtp.kinds import BOUNCE, handles
from django_inbound_smtp.logging import JSONFormatter, QueueIdFilter, about
from django_inbound_smtp.models import BounceRecipient, InboundMessage, InboundRecipient, Mailbox
from django_inbound_smtp.signals import message_bounced, message_received
from django_inbound_smtp.testing import RunningServer, running_server


def only_example_org(address: str, *, context: RecipientContext) -> ResolvedRecipient | None:
    if not address.endswith("@example.org"):
        return None
    if context.mail_from == "":
        raise TemporaryFailure(replies.LOOKUP_FAILURE)
    if address.startswith("x"):
        raise Rejected(replies.MAILBOX_UNKNOWN)
    return ResolvedRecipient(address=address, tag="")


@receiver(message_received)
def on_mail(
    sender: type[InboundMessage],
    message: InboundMessage,
    recipients: list[InboundRecipient],
    mailboxes: list[Mailbox],
    envelope: ReceivedEnvelope,
    **kwargs: Any,
) -> None:
    raw: bytes = message.raw_bytes
    first: str = envelope.rcpt_tos[0]
    print(len(raw), first, [m.address for m in mailboxes])


def serve() -> int:
    with running_server() as server:
        running: RunningServer = server
        return running.port


def json_logging() -> logging.Handler:
    handler = logging.StreamHandler()
    handler.setFormatter(JSONFormatter())
    handler.addFilter(QueueIdFilter())
    with about("6B1F0C2A9D3E4F57"):
        logging.getLogger("inbox").info("about one message")
    return handler


def reply_addresses_in_use(mailbox: Mailbox, recipient: InboundRecipient) -> list[str]:
    from datetime import timedelta

    from django_inbound_smtp.models import ReplyTrust
    from django_inbound_smtp.reply_addresses import BadToken, reply_address, return_path, verify

    addresses = [
        reply_address(mailbox),
        reply_address(mailbox, for_user=mailbox, expires=timedelta(days=1)),
        reply_address(mailbox, expires=None, domain="reply.example.org"),
        return_path("someone@example.org"),
    ]
    try:
        verify(addresses[0].partition("+")[2].partition("@")[0])
    except BadToken as error:
        addresses.append(error.reason)
    if recipient.reply_trust == ReplyTrust.TRUSTED and recipient.reply_object is not None:
        addresses.append(recipient.bounce_recipient)
    return addresses


# Kinds of mail: a bounce receiver, and a handler that takes bounces only.


@receiver(message_bounced)
def on_bounce(
    sender: type[InboundMessage],
    message: InboundMessage,
    recipients: list[BounceRecipient],
    failed: list[str],
    original_message_id: str,
    **kwargs: Any,
) -> None:
    kind: str = message.kind
    statuses: list[str] = [row.status for row in recipients]
    print(kind, statuses, failed, original_message_id)


@handles(kinds={BOUNCE})
def bounce_handler(*, message: InboundMessage, **kwargs: Any) -> None:
    print([row.recipient for row in message.bounce_recipients.all()])
