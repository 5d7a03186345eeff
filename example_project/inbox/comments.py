"""Reply by email becomes a comment. The route "ticket replies" (settings ``ROUTES``)
sends every recipient ``reply+<token>@example.test`` of a regular message (not a bounce,
auto-reply, list mail or loop: the route's ``kinds``) here; the signed token names the
ticket, which reaches us as ``recipient.reply_object``. The comment is the reply's new
text (``message.reply_text``: no quoted history, no signature).

Processing is at least once (a message may be processed again after a crash, or on
request), so adding a comment is idempotent: one comment per ticket and message.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from typing import Any

from django_inbound_smtp.models import InboundMessage, InboundRecipient, ReplyTrust
from inbox.models import Comment, Ticket

logger = logging.getLogger("inbox")

# A reply to an address issued to a user is posted only when it comes from that user,
# authenticated (DMARC, or SPF/DKIM aligned with their domain): never from a CC'd third
# party, a forwarded notification, or someone writing the user's address in From.
# Replies to the ticket's own address (not issued to a user: NO_USER) are anyone's.
REFUSED = {ReplyTrust.SENDER_MISMATCH, ReplyTrust.UNKNOWN_USER, ReplyTrust.NOT_AUTHENTICATED}


def add_comment(
    *, message: InboundMessage, recipients: list[InboundRecipient], **kwargs: Any
) -> None:
    """The route's handler (``INBOUND_SMTP["ROUTES"]`` in the example settings)."""
    comment_from_message(message, recipients)


def comment_from_message(message: InboundMessage, recipients: Iterable[InboundRecipient]) -> int:
    """Add the reply in ``message`` to every ticket it is addressed to; return how many
    comments were created (0 when they already exist)."""
    if not message.envelope_from:
        # A bounce (null sender <>) is not a comment, and answering it would loop.
        logger.info("%s: null sender, no comment added", message.queue_id)
        return 0
    body = message.reply_text
    if not body:
        logger.info("%s: nothing but quoted text, no comment added", message.queue_id)
        return 0
    created = 0
    seen: set[int] = set()
    for recipient in recipients:
        ticket = recipient.reply_object
        if not isinstance(ticket, Ticket) or ticket.pk in seen:
            continue
        seen.add(ticket.pk)
        if recipient.reply_trust in REFUSED:
            logger.warning(
                "%s: reply to ticket #%s not from the user it was sent to (%s), no comment",
                message.queue_id,
                ticket.pk,
                recipient.reply_trust,
            )
            continue
        _comment, is_new = Comment.objects.get_or_create(
            ticket=ticket,
            source_message=message,
            defaults={
                "author_email": message.envelope_from,
                "body": body,
                "trust": recipient.reply_trust,
            },
        )
        if is_new:
            created += 1
            logger.info("%s: comment added to ticket #%s", message.queue_id, ticket.pk)
        else:
            logger.info("%s: ticket #%s already has this comment", message.queue_id, ticket.pk)
    return created
