"""Reply by email becomes a comment: mail to ``ticket+<id>@example.test`` is added to
ticket ``<id>`` as a ``Comment``: the reply's new text (``message.reply_text``, set by
django_inbound_smtp's parse step), without the quoted mail it answers and the
signature.

Called from the ``message_received`` receiver in ``inbox/receivers.py``. Processing is
at least once (a message may be processed again after a crash, or on request), so
adding a comment is idempotent: one comment per ticket and source message.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterable

from django_inbound_smtp.models import InboundMessage, InboundRecipient
from inbox.models import TICKET_MAILBOX, Comment, Ticket

logger = logging.getLogger("inbox")

# The plus-address tag is the ticket id: ASCII digits only (str.isdigit() would take
# other scripts' digits too), and short enough for any integer column.
_TICKET_TAG = re.compile(r"[0-9]{1,18}")


def ticket_id_of(recipient: InboundRecipient) -> int | None:
    """The ticket a recipient addresses: ``ticket+<id>@example.test``, else ``None``.

    Relies on the server's resolution: the recipient was accepted by the mailbox
    ``ticket@example.test`` and its plus-address tag is the id.
    """
    mailbox = recipient.mailbox
    if mailbox is None or mailbox.address != TICKET_MAILBOX:
        return None
    if not _TICKET_TAG.fullmatch(recipient.tag):
        return None
    return int(recipient.tag)


def comment_from_message(message: InboundMessage, recipients: Iterable[InboundRecipient]) -> int:
    """Add the reply in ``message`` to every ticket it is addressed to; return how many
    comments were created (0 when they already exist)."""
    ticket_ids = list(dict.fromkeys(filter(None, map(ticket_id_of, recipients))))
    if not ticket_ids:
        return 0
    if not message.envelope_from:
        # A bounce or auto-reply (null sender <>) is not a comment, and answering
        # it would risk a mail loop.
        logger.info("%s: null sender, no comment added", message.queue_id)
        return 0
    body = message.reply_text
    if not body:
        logger.info("%s: nothing but quoted text, no comment added", message.queue_id)
        return 0
    created = 0
    for ticket_id in ticket_ids:
        ticket = Ticket.objects.filter(pk=ticket_id).first()
        if ticket is None:
            logger.warning("%s: no ticket #%s, no comment added", message.queue_id, ticket_id)
            continue
        _comment, is_new = Comment.objects.get_or_create(
            ticket=ticket,
            source_message=message,
            defaults={"author_email": message.envelope_from, "body": body},
        )
        if is_new:
            created += 1
            logger.info("%s: comment added to ticket #%s", message.queue_id, ticket_id)
        else:
            logger.info("%s: ticket #%s already has this comment", message.queue_id, ticket_id)
    return created
