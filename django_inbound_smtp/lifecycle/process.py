"""The processing step, in batches: claim stored messages, parse, notify, record.

``message_received`` is sent in exactly one place, :func:`notify.notify`, called from
:func:`process_batch` whatever the dispatcher (inline thread in ``smtpd``, Celery
worker, ``django.tasks`` worker, test kit). Synchronous. Per batch, not per message:

1. **claim**: one ``UPDATE`` moves every claimable message of the batch to
   ``processing`` under one execution id, one ``SELECT`` reads back the rows this
   execution got (works on every database; no ``RETURNING`` needed);
2. **parse**: each raw file is parsed; the results and attachment rows of the whole
   batch are written in one transaction (``extract.extract_many``);
3. **notify**: receivers and mailbox handlers run, message by message;
4. **record**: in one transaction, one ``UPDATE`` marks the processed ones, one per
   failed message writes its traceback (only rows this execution still holds are
   touched), and one ``INSERT`` adds a ``ProcessingAttempt`` row per claimed message
   (the history: time, worker, outcome, tracebacks; never overwritten).

A claim is a lease: the process's :class:`~.leases.LeaseKeeper` renews it while the
work runs, so a slow but live worker keeps it and only a dead one's claim expires
(or is taken at once, when its process on this host is gone: see ``owners``).
"""

from __future__ import annotations

import enum
import logging
import time
import traceback
import uuid
from collections.abc import Sequence
from datetime import datetime, timedelta

from django.db import router, transaction
from django.db.models import F, Prefetch, Q
from django.utils import timezone

from django_inbound_smtp import metrics
from django_inbound_smtp._db import unit_of_work
from django_inbound_smtp.conf import get_settings
from django_inbound_smtp.lifecycle import leases, owners
from django_inbound_smtp.lifecycle.extract import LARGE_MESSAGE, extract_many
from django_inbound_smtp.lifecycle.notify import notify
from django_inbound_smtp.logging import about
from django_inbound_smtp.models import InboundMessage, InboundRecipient, ProcessingAttempt

__all__ = ["Outcome", "claim", "process_batch", "process_message"]

logger = logging.getLogger(__name__)
Status = InboundMessage.Status
MAX_ERROR_LENGTH = 64 * 1024


class Outcome(enum.Enum):
    """What processing did with one message."""

    PROCESSED = "processed"
    FAILED = "failed"
    #: Another worker holds the claim; try again later.
    BUSY = "busy"
    #: Nothing to do: already processed, failed, a duplicate, or gone.
    SKIPPED = "skipped"
    #: This execution's claim was taken over (its lease had expired): outcome not recorded.
    LOST = "lost"


def _claimable() -> Q:
    settings = get_settings()
    expired = timezone.now() - timedelta(seconds=settings.PROCESSING_LEASE)
    return Q(status=Status.RECEIVED) | Q(
        status=Status.PROCESSING, claimed_at__lt=expired, attempts__lt=settings.MAX_ATTEMPTS
    )


def claim_many(pks: Sequence[int], *, execution: str) -> list[InboundMessage]:
    """Take every claimable message of ``pks`` for ``execution``; the rows it got.

    A ``received`` message can be taken; so can a ``processing`` one whose lease ran
    out (its worker stopped renewing it: it died), unless it used up ``MAX_ATTEMPTS``.
    """
    taken = (
        InboundMessage.objects.filter(pk__in=list(pks))
        .filter(_claimable())
        .update(
            status=Status.PROCESSING,
            claimed_by=execution,
            claimed_at=timezone.now(),
            attempts=F("attempts") + 1,
        )
    )
    if not taken:
        return []
    # The recipients (with their mailboxes) of the whole batch in one more query, in
    # RCPT order: what notify() hands to receivers.
    recipients = InboundRecipient.objects.select_related("mailbox").order_by("pk")
    return list(
        InboundMessage.objects.filter(pk__in=list(pks), claimed_by=execution).prefetch_related(
            Prefetch("recipients", queryset=recipients)
        )
    )


def claim(pk: int, *, owner: str) -> bool:
    """Take message ``pk`` for ``owner`` (as it is); ``True`` if it got it."""
    return bool(claim_many([pk], execution=owner))


def _error_text(errors: list[BaseException]) -> str:
    text = "\n".join("".join(traceback.format_exception(e)) for e in errors)
    # A traceback quotes whatever the receiver raised: no NUL (PostgreSQL refuses it),
    # bounded, so recording the failure can never itself fail.
    return text.replace("\x00", "\\x00")[:MAX_ERROR_LENGTH]


def process_batch(pks: Sequence[int], *, owner: str) -> dict[int, Outcome]:
    """Process the messages ``pks`` once, on behalf of ``owner`` (a worker identity).

    Receiver and handler exceptions are caught, logged and stored: that message
    becomes ``failed`` with their tracebacks (the sweeper retries it per policy).
    Database errors propagate, leaving the claims to expire for a retry."""
    execution = owners.execution_of(owner, uuid.uuid4().hex[:12])
    outcomes: dict[int, Outcome] = {}
    started = time.monotonic()
    with unit_of_work():
        messages = claim_many(pks, execution=execution)
        claimed = [(m.pk, m.queue_id, m.received_at) for m in messages]
        # Each attempt's number and start, as the claim wrote them, for its history row.
        begun = {m.pk: (m.attempts, m.claimed_at) for m in messages}
        errors: dict[int, list[BaseException]] = {}
        with leases.keeper().holding(execution):
            while messages:
                # By size: a batch of large messages is parsed, and held parsed for its
                # receivers, a few at a time (LARGE_MESSAGE of raw bytes), not all at once.
                chunk = _take_chunk(messages)
                # Receivers find the parsed fields and attachments (or parse_error) in place.
                extraction = extract_many(chunk)
                for message in chunk:
                    failure = extraction.failures.get(message.pk)
                    # Receivers' own log lines carry the queue id of their message.
                    with about(message.queue_id):
                        errors[message.pk] = [failure] if failure else notify(message)
                del chunk, extraction
        now = timezone.now()
        recorded = _record(execution, errors, now, begun)
        unclaimed = [pk for pk in pks if pk not in errors]
        busy = set(
            InboundMessage.objects.filter(pk__in=unclaimed, status=Status.PROCESSING).values_list(
                "pk", flat=True
            )
            if unclaimed
            else []
        )
    for pk, queue_id, received_at in claimed:
        if pk not in recorded:
            logger.warning(
                "processing of %s outlived its lease; another worker took over",
                pk,
                extra={"queue_id": queue_id},
            )
            outcomes[pk] = Outcome.LOST
            metrics.processed(Outcome.LOST.value, None)
            continue
        outcomes[pk] = Outcome.FAILED if errors[pk] else Outcome.PROCESSED
        logger.info("processed %s: %s", queue_id, outcomes[pk].value, extra={"queue_id": queue_id})
        metrics.processed(outcomes[pk].value, (now - received_at).total_seconds())
    for pk in unclaimed:
        outcomes[pk] = Outcome.BUSY if pk in busy else Outcome.SKIPPED
    if claimed:
        metrics.processing_batch(time.monotonic() - started)
    return outcomes


def _take_chunk(messages: list[InboundMessage]) -> list[InboundMessage]:
    """Take from the front of ``messages`` as many as fit in ``LARGE_MESSAGE`` bytes
    (at least one)."""
    size, count = 0, 0
    for message in messages:
        if count and size + message.size > LARGE_MESSAGE:
            break
        size, count = size + message.size, count + 1
    chunk = messages[:count]
    del messages[:count]
    return chunk


def _record(
    execution: str,
    errors: dict[int, list[BaseException]],
    now: datetime,
    begun: dict[int, tuple[int, datetime | None]],
) -> set[int]:
    """Write the outcomes this execution still holds, and the history row of every
    attempt, in one transaction; the pks whose outcome was written."""
    if not errors:
        return set()  # nothing claimed: no transaction (on SQLite it takes the write lock)
    texts = {pk: _error_text(found) for pk, found in errors.items() if found}
    with transaction.atomic(using=router.db_for_write(InboundMessage)):
        recorded = _record_outcomes(execution, errors, now, texts)
        # A lost claim may be a deleted message: its history row would fail the foreign
        # key at COMMIT and take every outcome of the batch with it. The rows still
        # there are locked, so a delete cannot slip in before the COMMIT.
        lost = [pk for pk in errors if pk not in recorded]
        there = recorded | set(
            InboundMessage.objects.select_for_update()
            .filter(pk__in=lost)
            .values_list("pk", flat=True)
            if lost
            else []
        )
        ProcessingAttempt.objects.bulk_create(
            ProcessingAttempt(
                message_id=pk,
                number=begun[pk][0],
                started_at=begun[pk][1] or now,
                finished_at=now,
                worker=execution[:200],
                outcome=(
                    (Outcome.FAILED if pk in texts else Outcome.PROCESSED)
                    if pk in recorded
                    else Outcome.LOST
                ).value,
                error=texts.get(pk, ""),
            )
            for pk in errors
            if pk in there
        )
    return recorded


def _record_outcomes(
    execution: str, errors: dict[int, list[BaseException]], now: datetime, texts: dict[int, str]
) -> set[int]:
    mine = InboundMessage.objects.filter(claimed_by=execution, status=Status.PROCESSING)
    done = [pk for pk, found in errors.items() if not found]
    recorded: set[int] = set()
    if done:
        count = mine.filter(pk__in=done).update(
            status=Status.PROCESSED, processed_at=now, claimed_by="", error=""
        )
        if count == len(done):
            recorded.update(done)
        else:  # some leases were taken over: find out which rows are ours
            recorded.update(
                InboundMessage.objects.filter(
                    pk__in=done, status=Status.PROCESSED, processed_at=now
                ).values_list("pk", flat=True)
            )
    for pk, text in texts.items():
        if mine.filter(pk=pk).update(
            status=Status.FAILED, processed_at=now, claimed_by="", error=text
        ):
            recorded.add(pk)
    return recorded


def process_message(pk: int, *, owner: str) -> Outcome:
    """Process message ``pk`` once, on behalf of ``owner``: a batch of one."""
    return process_batch([pk], owner=owner)[pk]
