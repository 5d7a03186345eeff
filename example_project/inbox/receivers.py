"""Receivers of ``django_inbound_smtp.signals.message_received``.

The signal is sent after a message has been stored and committed, so the client has
already been told ``250``: a receiver cannot reject mail, and one that raises only
marks the message ``failed`` (its traceback is shown on the message in the admin).
Replies to tickets are not handled here but by a route (``ROUTES`` in the settings,
``inbox/comments.py``).
"""

import logging
from typing import Any

from django.dispatch import receiver

from django_inbound_smtp.models import InboundMessage, InboundRecipient
from django_inbound_smtp.signals import message_received

logger = logging.getLogger("inbox")


@receiver(message_received, dispatch_uid="inbox.log_received_message")
def log_received_message(
    sender: type[InboundMessage],
    *,
    message: InboundMessage,
    recipients: list[InboundRecipient],
    **kwargs: Any,
) -> None:
    """Log one line per message; with the example LOGGING it reads
    ``INFO inbox: <queue id> from <envelope sender> to <addresses>: <subject>``.

    ``**kwargs`` also carries ``mailboxes`` and ``envelope``, and takes any keyword
    argument a later version adds.
    """
    logger.info(
        "%s from %s to %s: %s",
        message.queue_id,
        message.envelope_from or "<>",
        ", ".join(recipient.address for recipient in recipients),
        message.subject,
    )
