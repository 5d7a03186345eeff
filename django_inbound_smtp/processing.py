"""The processing step: claim a stored message, notify, run mailbox handlers, record.

``message_received`` is sent in exactly one place, :func:`process_message`, whatever
the dispatch mode (inline thread in ``smtpd``, Celery worker, test kit). Synchronous.

A message is processed by one worker at a time. The claim is a conditional UPDATE
from ``received`` to ``processing`` naming the worker; the same worker may take its
own claim again (a Celery task redelivered after its process died has the same task
id), anyone else waits for the sweeper to release a claim older than
``REDISPATCH_AFTER``. The outcome is written only by the claim's holder.
"""

from __future__ import annotations

import enum
import logging
import traceback
from collections.abc import Callable
from typing import Any

from django.db.models import F, Q
from django.utils import timezone
from django.utils.module_loading import import_string

from django_inbound_smtp._celery import celery_app
from django_inbound_smtp._db import unit_of_work
from django_inbound_smtp.envelope import ReceivedEnvelope, ResolvedRecipient
from django_inbound_smtp.models import InboundMessage, InboundRecipient, Mailbox
from django_inbound_smtp.signals import message_received

__all__ = ["Outcome", "claim", "envelope_of", "process_message"]

logger = logging.getLogger(__name__)
Status = InboundMessage.Status


class Outcome(enum.Enum):
    """What :func:`process_message` did."""

    PROCESSED = "processed"
    FAILED = "failed"
    #: Another worker holds the claim; try again later.
    BUSY = "busy"
    #: Nothing to do: already processed, failed, a duplicate, or gone.
    SKIPPED = "skipped"


def claim(pk: int, *, owner: str) -> bool:
    """Take message ``pk`` for processing by ``owner``; ``True`` if this worker has it."""
    now = timezone.now()
    taken = (
        InboundMessage.objects.filter(pk=pk)
        .filter(Q(status=Status.RECEIVED) | Q(status=Status.PROCESSING, claimed_by=owner))
        .update(
            status=Status.PROCESSING,
            claimed_by=owner,
            claimed_at=now,
            attempts=F("attempts") + 1,
        )
    )
    return taken == 1


def envelope_of(message: InboundMessage, recipients: list[InboundRecipient]) -> ReceivedEnvelope:
    """The envelope of a stored message, as receivers get it."""
    return ReceivedEnvelope(
        queue_id=message.queue_id,
        mail_from=message.envelope_from,
        recipients=tuple(
            ResolvedRecipient(address=r.address, mailbox_id=r.mailbox_id, tag=r.tag)
            for r in recipients
        ),
        peer_host=message.peer_ip,
        peer_port=message.peer_port,
        helo=message.helo,
        tls=message.tls,
        tls_version=message.tls_version,
        tls_cipher=message.tls_cipher,
        auth_user=message.auth_user,
        esmtp=True,
        received_at=message.received_at,
    )


def _handler_for(path: str) -> Callable[..., Any] | None:
    # A dotted path to a callable, else a Celery task name (sent by name, so the
    # task may live in a project the smtpd process does not import).
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
                celery_app().send_task(mailbox.handler, args=[message.pk, mailbox.pk])
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


def _notify(message: InboundMessage) -> list[BaseException]:
    recipients = list(message.recipients.select_related("mailbox"))
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


def process_message(pk: int, *, owner: str) -> Outcome:
    """Process message ``pk`` once on behalf of ``owner`` (a worker identity).

    Receiver and handler exceptions are caught, logged and stored: the message
    becomes ``failed`` with their tracebacks (the sweeper retries it per policy).
    Database errors propagate, leaving the claim for a retry.
    """
    with unit_of_work():
        if not claim(pk, owner=owner):
            still_running = InboundMessage.objects.filter(pk=pk, status=Status.PROCESSING).exists()
            return Outcome.BUSY if still_running else Outcome.SKIPPED
        message = InboundMessage.objects.get(pk=pk)
        errors = _notify(message)
        outcome = Outcome.FAILED if errors else Outcome.PROCESSED
        InboundMessage.objects.filter(pk=pk, claimed_by=owner, status=Status.PROCESSING).update(
            status=Status.FAILED if errors else Status.PROCESSED,
            processed_at=timezone.now(),
            claimed_by="",
            error="\n".join("".join(traceback.format_exception(e)) for e in errors),
        )
    logger.info(
        "processed %s: %s", message.queue_id, outcome.value, extra={"queue_id": message.queue_id}
    )
    return outcome
