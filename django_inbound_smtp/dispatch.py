"""The processing step: after commit, send ``message_received`` and record the outcome.

``message_received`` is sent in exactly one place, :func:`process_message`. In the
``smtpd`` process it runs in a small thread pool (``PROCESSING_CONCURRENCY``), so a
slow or failing receiver never delays or changes an SMTP reply.
"""

from __future__ import annotations

import logging
import threading
import traceback
from concurrent.futures import Future, ThreadPoolExecutor, wait

from django.db import transaction
from django.db.models import F
from django.utils import timezone

from django_inbound_smtp._db import unit_of_work
from django_inbound_smtp.conf import get_settings
from django_inbound_smtp.envelope import ReceivedEnvelope, ResolvedRecipient
from django_inbound_smtp.models import InboundMessage, InboundRecipient
from django_inbound_smtp.signals import message_received

__all__ = ["drain", "message_committed", "process_message"]

logger = logging.getLogger(__name__)

_lock = threading.Lock()
_executor: ThreadPoolExecutor | None = None
_pending: set[Future[None]] = set()


def _get_executor() -> ThreadPoolExecutor:
    global _executor
    with _lock:
        if _executor is None:
            _executor = ThreadPoolExecutor(
                max_workers=get_settings().PROCESSING_CONCURRENCY,
                thread_name_prefix="inbound-smtp-process",
            )
        return _executor


def message_committed(pk: int) -> None:
    """``on_commit`` callback of the write path: schedule processing of message ``pk``."""
    future = _get_executor().submit(process_message, pk)
    with _lock:
        _pending.add(future)
    future.add_done_callback(_forget)


def _forget(future: Future[None]) -> None:
    with _lock:
        _pending.discard(future)


def drain(timeout: float | None = None) -> bool:
    """Wait until scheduled processing has finished; ``True`` if nothing is left."""
    with _lock:
        pending = set(_pending)
    if not pending:
        return True
    _done, not_done = wait(pending, timeout=timeout)
    return not not_done


def _envelope_of(message: InboundMessage, recipients: list[InboundRecipient]) -> ReceivedEnvelope:
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
        esmtp=True,
        received_at=message.received_at,
    )


def _claim(pk: int) -> bool:
    # A conditional UPDATE is the lock: of two concurrent attempts only one moves the
    # row out of "received", so a message is never processed twice at once.
    claimed = InboundMessage.objects.filter(pk=pk, status=InboundMessage.Status.RECEIVED).update(
        status=InboundMessage.Status.PROCESSING, attempts=F("attempts") + 1
    )
    return claimed == 1


def process_message(pk: int) -> None:
    """Send ``message_received`` for message ``pk`` once, and record processed/failed.

    Does nothing if the message is not in the ``received`` state. Never raises: a
    receiver's exception is logged with its traceback and stored on the message.
    """
    try:
        with unit_of_work():
            if not _claim(pk):
                return
            message = InboundMessage.objects.get(pk=pk)
            recipients = list(message.recipients.select_related("mailbox"))
            mailboxes = list({r.mailbox_id: r.mailbox for r in recipients if r.mailbox}.values())
            responses = message_received.send_robust(
                sender=InboundMessage,
                message=message,
                recipients=recipients,
                mailboxes=mailboxes,
                envelope=_envelope_of(message, recipients),
            )
            errors = [(r, e) for r, e in responses if isinstance(e, Exception)]
            for receiver, error in errors:
                logger.error(
                    "message_received receiver %r failed for %s",
                    receiver,
                    message.queue_id,
                    exc_info=error,
                    extra={"queue_id": message.queue_id},
                )
            with transaction.atomic():
                InboundMessage.objects.filter(pk=pk).update(
                    status=(
                        InboundMessage.Status.FAILED if errors else InboundMessage.Status.PROCESSED
                    ),
                    processed_at=timezone.now(),
                    error="\n".join("".join(traceback.format_exception(e)) for _, e in errors),
                )
    except Exception:
        # The row stays "processing" or "received"; it is never lost (raw + row are
        # committed). Logged loudly so an operator sees it.
        logger.exception("processing of inbound message %s failed", pk)
