"""Scheduling processing, at least once: after commit, by the sweeper, on request.

Two modes (``INBOUND_SMTP["DISPATCH"]``):

- ``inline``: processing runs in this process, in a pool of
  ``PROCESSING_CONCURRENCY`` threads. In ``smtpd`` that is after the reply was
  decided and off the event loop, so a slow receiver never delays a ``250``.
- ``celery``: the task ``django_inbound_smtp.tasks.process_message`` is sent with the
  message's primary key. Sending happens in the same background pool, so a broker
  outage never blocks the commit that precedes the ``250``; a message whose task was
  not sent stays ``received`` and the sweeper sends it again.

``auto`` (the default) means ``celery`` when the project configures a Celery broker
(``CELERY_BROKER_URL``), else ``inline``.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor, wait
from contextlib import contextmanager
from contextvars import ContextVar
from datetime import datetime, timedelta
from typing import Any

from django.conf import settings
from django.db import transaction
from django.utils import timezone

from django_inbound_smtp._celery import celery_app
from django_inbound_smtp._db import unit_of_work
from django_inbound_smtp.conf import get_settings
from django_inbound_smtp.models import InboundMessage
from django_inbound_smtp.processing import process_message

__all__ = [
    "PROCESS_TASK",
    "dispatch_mode",
    "drain",
    "held",
    "message_committed",
    "reprocess",
    "schedule",
    "shutdown",
    "sweep",
]

logger = logging.getLogger(__name__)
Status = InboundMessage.Status

#: Name of the Celery task that processes one message (see ``tasks.py``).
PROCESS_TASK = "django_inbound_smtp.tasks.process_message"

_lock = threading.Lock()
_executor: ThreadPoolExecutor | None = None
_pending: set[Future[None]] = set()
_scheduled: set[int] = set()  # pks waiting in this process: never queued twice
#: Messages each sweep moves per kind, so one sweep stays short whatever the backlog.
SWEEP_BATCH = 500
_held: ContextVar[list[int] | None] = ContextVar("inbound_smtp_dispatch_held", default=None)


def dispatch_mode() -> str:
    """``"inline"`` or ``"celery"``, resolving ``"auto"``."""
    mode = get_settings().DISPATCH
    if mode == "auto":
        return "celery" if getattr(settings, "CELERY_BROKER_URL", None) else "inline"
    return mode


def _get_executor() -> ThreadPoolExecutor:
    global _executor
    with _lock:
        if _executor is None:
            _executor = ThreadPoolExecutor(
                max_workers=get_settings().PROCESSING_CONCURRENCY,
                thread_name_prefix="inbound-smtp-process",
            )
        return _executor


def _submit(function: Callable[[int], None], pk: int) -> None:
    with _lock:
        if pk in _scheduled:
            return
        _scheduled.add(pk)
    future = _get_executor().submit(function, pk)
    with _lock:
        _pending.add(future)
    future.add_done_callback(lambda done: _forget(done, pk))


def _forget(future: Future[None], pk: int) -> None:
    with _lock:
        _pending.discard(future)
        _scheduled.discard(pk)


def shutdown() -> None:
    """Drop work of this process that has not started (it stays ``received``; the
    sweeper schedules it again later). Running work is not interrupted."""
    global _executor
    with _lock:
        executor, _executor = _executor, None
    if executor is not None:
        executor.shutdown(wait=False, cancel_futures=True)


def _inline_owner() -> str:
    return f"inline:{socket.gethostname()}:{os.getpid()}:{threading.get_ident()}"


def _process_inline(pk: int) -> None:
    try:
        process_message(pk, owner=_inline_owner())
    except Exception:
        # Database trouble: the message stays claimed or received; the sweeper retries.
        logger.exception("inline processing of message %s failed", pk)


def _send_task(pk: int) -> None:
    try:
        celery_app().send_task(
            PROCESS_TASK,
            args=[pk],
            # Bounded: a broker outage must not pin a thread; the sweeper retries.
            retry=True,
            retry_policy={"max_retries": 2, "interval_start": 0, "interval_step": 0.5},
        )
    except Exception as error:
        logger.warning(
            "could not send processing task for message %s (%s); the sweeper will retry",
            pk,
            type(error).__name__,
        )


def schedule(pk: int) -> None:
    """Hand message ``pk`` to processing in the configured mode; never blocks or raises.

    Inside a transaction, it happens when the transaction commits (so a worker always
    sees the row in the state it was scheduled in).
    """
    recorder = _held.get()
    if recorder is not None:
        recorder.append(pk)
        return
    target = _send_task if dispatch_mode() == "celery" else _process_inline

    def submit() -> None:
        try:
            _submit(target, pk)
        except Exception:  # e.g. interpreter shutting down: the sweeper catches up
            logger.exception("could not schedule processing of message %s", pk)

    transaction.on_commit(submit)


def message_committed(pk: int) -> None:
    """``on_commit`` callback of the write path."""
    schedule(pk)


def drain(timeout: float | None = None) -> bool:
    """Wait until scheduled work of this process has finished; ``True`` if none is left."""
    with _lock:
        pending = set(_pending)
    if not pending:
        return True
    _done, not_done = wait(pending, timeout=timeout)
    return not not_done


def _requeue(pks: Iterable[int], **still: Any) -> list[int]:
    """Move each message back to ``received`` if it still matches ``still`` (checked in
    the UPDATE itself, so a claim taken meanwhile is never undone); schedule those moved."""
    moved: list[int] = []
    now = timezone.now()
    for pk in pks:
        changed = InboundMessage.objects.filter(pk=pk, **still).update(
            status=Status.RECEIVED, claimed_by="", claimed_at=None, dispatched_at=now
        )
        if changed:
            moved.append(pk)
            schedule(pk)
    return moved


def _sweep_waiting(now: datetime, cutoff: datetime) -> int:
    count = 0
    for pk in InboundMessage.objects.waiting_since(cutoff).values_list("pk", flat=True)[
        :SWEEP_BATCH
    ]:
        if InboundMessage.objects.waiting_since(cutoff).filter(pk=pk).update(dispatched_at=now):
            schedule(pk)
            count += 1
    return count


def _sweep_abandoned(lease_cutoff: datetime, max_attempts: int) -> int:
    abandoned = InboundMessage.objects.abandoned_since(lease_cutoff).values_list("pk", "attempts")
    retry: list[int] = []
    for pk, attempts in abandoned[:SWEEP_BATCH]:
        if attempts < max_attempts:
            retry.append(pk)
            continue
        # It killed its worker every time (out of memory, a crash): stop retrying.
        InboundMessage.objects.abandoned_since(lease_cutoff).filter(pk=pk).update(
            status=Status.FAILED,
            claimed_by="",
            processed_at=timezone.now(),
            error=f"abandoned by its worker {attempts} times; not retried again",
        )
        logger.error("message %s abandoned %d times: marked failed", pk, attempts)
    return len(_requeue(retry, status=Status.PROCESSING, claimed_at__lt=lease_cutoff))


def sweep() -> int:
    """Schedule every message that should be processed and is not being: ``received``
    ones not scheduled for ``REDISPATCH_AFTER`` seconds, ``processing`` ones whose
    lease expired (their worker died), and ``failed`` ones due for a retry. At most
    ``SWEEP_BATCH`` of each per call. Returns how many were scheduled."""
    config = get_settings()
    now = timezone.now()
    with unit_of_work():
        count = _sweep_waiting(now, now - timedelta(seconds=config.REDISPATCH_AFTER))
        lease_cutoff = now - timedelta(seconds=config.PROCESSING_LEASE)
        count += _sweep_abandoned(lease_cutoff, config.MAX_ATTEMPTS)
        retry = InboundMessage.objects.retryable(
            now, base_delay=config.REDISPATCH_AFTER, max_attempts=config.MAX_ATTEMPTS
        )[:SWEEP_BATCH]
        for message in retry:
            count += len(
                _requeue([message.pk], status=Status.FAILED, processed_at=message.processed_at)
            )
    if count:
        logger.info("sweeper scheduled %d message(s)", count)
    return count


def reprocess(pks: Iterable[int] | None = None, *, failed_only: bool = False) -> int:
    """Run processing again for finished messages (``pks``, or all); returns how many.

    Only ``processed`` and ``failed`` messages move (``failed`` only, with
    ``failed_only``); one already waiting or running is left alone, so asking twice
    does no double work. Duplicates are never processed.
    """
    statuses = [Status.FAILED] if failed_only else [Status.FAILED, Status.PROCESSED]
    with unit_of_work():
        queryset = InboundMessage.objects.filter(status__in=statuses)
        if pks is not None:
            queryset = queryset.filter(pk__in=list(pks))
        return len(_requeue(list(queryset.values_list("pk", flat=True)), status__in=statuses))


@contextmanager
def held() -> Iterator[list[int]]:
    """Within the block, scheduling only records primary keys instead of processing.

    Used by ``django_inbound_smtp.testing`` to process synchronously in the caller's
    thread (and transaction) instead of in the background.
    """
    recorded: list[int] = []
    token = _held.set(recorded)
    try:
        yield recorded
    finally:
        _held.reset(token)
