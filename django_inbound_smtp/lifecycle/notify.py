"""Notify: the ``message_received`` signal and the mailboxes' handlers, for one message.

The only place ``message_received`` is sent. Every receiver and handler error is
logged and returned (the message becomes ``failed`` with the tracebacks); none
escapes, and none can change the SMTP outcome, which was decided long before.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from django.utils.module_loading import import_string

from django_inbound_smtp.lifecycle.backends import send_celery_task
from django_inbound_smtp.models import InboundMessage, InboundRecipient, Mailbox
from django_inbound_smtp.signals import message_received
from django_inbound_smtp.store.rows import envelope_of

__all__ = ["notify"]

logger = logging.getLogger(__name__)


def _handler_for(path: str) -> Callable[..., Any] | None:
    # A dotted path to a callable, else (None) the name of a Celery task.
    try:
        target = import_string(path)
    except ImportError:
        return None
    return target if callable(target) else None


def _run_handlers(
    message: InboundMessage, mailboxes: list[Mailbox], recipients: list[InboundRecipient]
) -> list[BaseException]:
    errors: list[BaseException] = []
    for mailbox in mailboxes:
        if not mailbox.handler:
            continue
        mine = [r for r in recipients if r.mailbox_id == mailbox.pk]
        try:
            handler = _handler_for(mailbox.handler)
            if handler is not None:
                handler(message=message, mailbox=mailbox, recipients=mine)
            else:
                # Only a task the project's Celery app knows: a typo in a dotted path
                # must fail the message visibly, not vanish into a queue.
                send_celery_task(mailbox.handler, [message.pk, mailbox.pk], known_only=True)
        except Exception as error:
            logger.error(
                "handler %s of mailbox %s failed for %s",
                mailbox.handler,
                mailbox.address,
                message.queue_id,
                exc_info=error,
            )
            errors.append(error)
    return errors


def notify(message: InboundMessage) -> list[BaseException]:
    """Send ``message_received`` for ``message`` and run its mailboxes' handlers;
    the errors they raised (empty: all went well)."""
    # Prefetched for the whole batch by the claim (one query); else read now.
    recipients = sorted(message.recipients.all(), key=lambda row: row.pk)
    mailboxes = list({r.mailbox_id: r.mailbox for r in recipients if r.mailbox}.values())
    responses = message_received.send_robust(
        sender=InboundMessage,
        message=message,
        recipients=recipients,
        mailboxes=mailboxes,
        envelope=envelope_of(message, recipients),
    )
    errors: list[BaseException] = []
    for receiver, error in responses:
        if isinstance(error, Exception):
            logger.error(
                "message_received receiver %r failed for %s",
                receiver,
                message.queue_id,
                exc_info=error,
            )
            errors.append(error)
    return errors + _run_handlers(message, mailboxes, recipients)
