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
import threading
import traceback
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from datetime import timedelta
from typing import Any

from django.db import connections, router
from django.db.models import F, Q
from django.utils import timezone
from django.utils.module_loading import import_string

from django_inbound_smtp._celery import celery_app
from django_inbound_smtp._db import unit_of_work
from django_inbound_smtp.conf import get_settings
from django_inbound_smtp.envelope import ReceivedEnvelope, ResolvedRecipient
from django_inbound_smtp.extraction import extract
from django_inbound_smtp.models import InboundMessage, InboundRecipient, Mailbox
from django_inbound_smtp.signals import message_received

__all__ = ["Outcome", "claim", "envelope_of", "process_message"]

logger = logging.getLogger(__name__)
Status = InboundMessage.Status
MAX_ERROR_LENGTH = 64 * 1024


class Outcome(enum.Enum):
    """What :func:`process_message` did."""

    PROCESSED = "processed"
    FAILED = "failed"
    #: Another worker holds the claim; try again later.
    BUSY = "busy"
    #: Nothing to do: already processed, failed, a duplicate, or gone.
    SKIPPED = "skipped"
    #: This execution's claim was taken over (its lease had expired): outcome not recorded.
    LOST = "lost"


def claim(pk: int, *, owner: str) -> bool:
    """Take message ``pk`` for processing by ``owner``; ``True`` if this execution has it.

    A ``received`` message can be taken; so can a ``processing`` one whose lease ran
    out (its worker stopped renewing it: it died), unless it used up ``MAX_ATTEMPTS``.
    """
    settings = get_settings()
    now = timezone.now()
    expired = now - timedelta(seconds=settings.PROCESSING_LEASE)
    taken = (
        InboundMessage.objects.filter(pk=pk)
        .filter(
            Q(status=Status.RECEIVED)
            | Q(
                status=Status.PROCESSING,
                claimed_at__lt=expired,
                attempts__lt=settings.MAX_ATTEMPTS,
            )
        )
        .update(
            status=Status.PROCESSING,
            claimed_by=owner,
            claimed_at=now,
            attempts=F("attempts") + 1,
        )
    )
    return taken == 1


@contextmanager
def _lease(pk: int, owner: str) -> Iterator[None]:
    """Renew the claim every third of ``PROCESSING_LEASE`` while the work runs, so a slow
    but live worker keeps it and only a dead one's claim expires."""
    if connections[router.db_for_write(InboundMessage)].in_atomic_block:
        yield  # inside the caller's transaction (test kit): nobody else can see the claim
        return
    stop = threading.Event()
    interval = get_settings().PROCESSING_LEASE / 3

    def renew() -> None:
        try:
            while not stop.wait(interval):
                InboundMessage.objects.filter(pk=pk, claimed_by=owner).update(
                    claimed_at=timezone.now()
                )
        except Exception:
            logger.exception("could not renew the processing lease of message %s", pk)
        finally:
            connections.close_all()

    thread = threading.Thread(target=renew, name=f"inbound-smtp-lease-{pk}", daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join()


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


#: Test hook (``testing.captured_tasks``): records Celery-task handlers instead of sending.
task_recorder: ContextVar[Callable[[str, list[int]], None] | None] = ContextVar(
    "inbound_smtp_task_recorder", default=None
)


def _handler_for(path: str) -> Callable[..., Any] | None:
    # A dotted path to a callable, else (None) the name of a Celery task.
    try:
        target = import_string(path)
    except ImportError:
        return None
    return target if callable(target) else None


def _send_handler_task(name: str, args: list[int]) -> None:
    recorder = task_recorder.get()
    if recorder is not None:
        recorder(name, args)
        return
    app = celery_app()
    # Only a task the project's Celery app knows: a typo in a dotted path (or a module
    # that fails to import) must fail the message visibly, not vanish into a queue.
    if name not in app.tasks:
        raise LookupError(
            f"mailbox handler {name!r} is neither an importable callable nor a task "
            "registered with the project's Celery app"
        )
    app.send_task(name, args=args)


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
                _send_handler_task(mailbox.handler, [message.pk, mailbox.pk])
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


def _error_text(errors: list[BaseException]) -> str:
    text = "\n".join("".join(traceback.format_exception(e)) for e in errors)
    # A traceback quotes whatever the receiver raised: no NUL (PostgreSQL refuses it),
    # bounded, so recording the failure can never itself fail.
    return text.replace("\x00", "\\x00")[:MAX_ERROR_LENGTH]


def process_message(pk: int, *, owner: str) -> Outcome:
    """Process message ``pk`` once, on behalf of ``owner`` (a worker identity).

    Receiver and handler exceptions are caught, logged and stored: the message
    becomes ``failed`` with their tracebacks (the sweeper retries it per policy).
    Database errors propagate, leaving the claim to expire for a retry.
    """
    execution = f"{owner}:{uuid.uuid4().hex[:12]}"  # unique even for a redelivered task
    with unit_of_work():
        if not claim(pk, owner=execution):
            still_running = InboundMessage.objects.filter(pk=pk, status=Status.PROCESSING).exists()
            return Outcome.BUSY if still_running else Outcome.SKIPPED
        with _lease(pk, execution):
            message = InboundMessage.objects.get(pk=pk)
            # Receivers find the parsed fields and attachments (or parse_error) in place.
            extract(message)
            errors = _notify(message)
        outcome = Outcome.FAILED if errors else Outcome.PROCESSED
        recorded = InboundMessage.objects.filter(
            pk=pk, claimed_by=execution, status=Status.PROCESSING
        ).update(
            status=Status.FAILED if errors else Status.PROCESSED,
            processed_at=timezone.now(),
            claimed_by="",
            error=_error_text(errors),
        )
    if not recorded:
        logger.warning("processing of %s outlived its lease; another worker took over", pk)
        return Outcome.LOST
    logger.info(
        "processed %s: %s", message.queue_id, outcome.value, extra={"queue_id": message.queue_id}
    )
    return outcome
