"""Scheduling processing, at least once: after commit, by the sweeper, on request.

:func:`schedule` is the store's after-commit hook: it hands primary keys to the
dispatcher ``INBOUND_SMTP["DISPATCH"]`` names (``backends``). ``auto`` (the default)
means ``celery`` when the project configures a Celery broker (``CELERY_BROKER_URL``),
else ``inline``.

The sweeper (:func:`sweep`) schedules what fell through: a message whose holder (an
``smtpd`` process on this host) is gone, at once; a task lost on the way, after
``REDISPATCH_AFTER``; a claim whose lease expired (its worker died elsewhere); a
failure due for a retry.
"""

from __future__ import annotations

import functools
import logging
import threading
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from datetime import datetime, timedelta
from typing import Any

from django.conf import settings
from django.db import transaction
from django.utils import timezone
from django.utils.module_loading import import_string

from django_inbound_smtp._db import unit_of_work
from django_inbound_smtp.conf import get_settings
from django_inbound_smtp.lifecycle import backends, owners
from django_inbound_smtp.models import InboundMessage

__all__ = [
    "dispatch_mode",
    "dispatcher",
    "drain",
    "queue_owner",
    "recording",
    "reprocess",
    "schedule",
    "shutdown",
    "sweep",
]

logger = logging.getLogger(__name__)
Status = InboundMessage.Status

#: Messages each sweep moves per kind, so one sweep stays short whatever the backlog.
SWEEP_BATCH = 500

_NAMED: dict[str, type[backends.Dispatcher]] = {
    "inline": backends.InlineDispatcher,
    "celery": backends.CeleryDispatcher,
    "tasks": backends.TasksDispatcher,
    "memory": backends.MemoryDispatcher,
}
_lock = threading.Lock()
_dispatchers: dict[str, backends.Dispatcher] = {}


def dispatch_mode() -> str:
    """The ``DISPATCH`` setting, resolving ``"auto"`` to ``"celery"`` or ``"inline"``."""
    mode = get_settings().DISPATCH
    if mode == "auto":
        return "celery" if getattr(settings, "CELERY_BROKER_URL", None) else "inline"
    return str(mode)


@functools.cache
def _dispatcher_class(mode: str) -> type[backends.Dispatcher]:
    return _NAMED.get(mode) or import_string(mode)


def dispatcher() -> backends.Dispatcher:
    """The dispatcher in force: a recording one inside :func:`recording`, else the one
    ``DISPATCH`` names (one instance per process and mode)."""
    recorder = backends.recording.get()
    if recorder is not None:
        return recorder
    mode = dispatch_mode()
    with _lock:
        if mode not in _dispatchers:
            _dispatchers[mode] = _dispatcher_class(mode)()
        return _dispatchers[mode]


def queue_owner() -> str:
    """What the store records as the holder of a message it hands to :func:`schedule`."""
    return dispatcher().queue_owner()


def schedule(pks: Sequence[int]) -> None:
    """Hand messages ``pks`` to processing; never blocks or raises.

    Inside a transaction, it happens when the transaction commits (so a worker always
    sees the rows in the state they were scheduled in)."""
    target = dispatcher()
    pks = list(pks)
    if isinstance(target, backends.MemoryDispatcher):
        target.enqueue(pks)  # recorded now: nothing runs, so nothing can race the commit
        return

    def enqueue() -> None:
        try:
            target.enqueue(pks)
        except Exception:  # e.g. interpreter shutting down: the sweeper catches up
            logger.exception("could not schedule processing of %d message(s)", len(pks))

    transaction.on_commit(enqueue)


def drain(timeout: float | None = None) -> bool:
    """Wait until work queued in this process has finished; ``True`` if none is left."""
    with _lock:
        active = list(_dispatchers.values())
    return all(d.drain(timeout) for d in active)


def shutdown() -> None:
    """Drop work of this process that has not started (it stays ``received``; the
    sweeper schedules it again later). Running work is not interrupted."""
    with _lock:
        active = list(_dispatchers.values())
    for each in active:
        each.shutdown()


def _requeue(pks: Iterable[int], **still: Any) -> list[int]:
    """Move each message back to ``received`` if it still matches ``still`` (checked in
    the UPDATE itself, so a claim taken meanwhile is never undone); schedule those moved."""
    moved: list[int] = []
    now = timezone.now()
    holder = queue_owner()
    for pk in pks:
        changed = InboundMessage.objects.filter(pk=pk, **still).update(
            status=Status.RECEIVED, claimed_by=holder, claimed_at=None, dispatched_at=now
        )
        if changed:
            moved.append(pk)
    if moved:
        schedule(moved)
    return moved


def _sweep_waiting(now: datetime, cutoff: datetime) -> int:
    waiting = InboundMessage.objects.waiting_since(cutoff)
    holder = queue_owner()
    moved = [
        pk
        for pk in waiting.values_list("pk", flat=True)[:SWEEP_BATCH]
        if waiting.filter(pk=pk).update(dispatched_at=now, claimed_by=holder)
    ]
    if moved:
        schedule(moved)
    return len(moved)


def _give_up(pk: int, attempts: int, **still: Any) -> None:
    # It killed its worker every time (out of memory, a crash): stop retrying.
    InboundMessage.objects.filter(pk=pk, **still).update(
        status=Status.FAILED,
        claimed_by="",
        processed_at=timezone.now(),
        error=f"abandoned by its worker {attempts} times; not retried again",
    )
    logger.error("message %s abandoned %d times: marked failed", pk, attempts)


def _sweep_abandoned(lease_cutoff: datetime, max_attempts: int) -> int:
    abandoned = InboundMessage.objects.abandoned_since(lease_cutoff).values_list("pk", "attempts")
    retry: list[int] = []
    for pk, attempts in abandoned[:SWEEP_BATCH]:
        if attempts < max_attempts:
            retry.append(pk)
        else:
            _give_up(pk, attempts, status=Status.PROCESSING, claimed_at__lt=lease_cutoff)
    return len(_requeue(retry, status=Status.PROCESSING, claimed_at__lt=lease_cutoff))


def _sweep_dead_local(max_attempts: int) -> int:
    """Messages held by an ``smtpd`` process of this host that no longer exists (killed,
    crashed, restarted): taken over at once, without waiting for a lease to expire.
    A holder on another host is left to its lease. The messages of live processes are
    left out of the query once seen, so a long queue in a live process never hides
    what a dead one left."""
    local = InboundMessage.objects.filter(
        status__in=[Status.RECEIVED, Status.PROCESSING],
        claimed_by__startswith=owners.local_prefix(),
    )
    verdicts: dict[str, bool] = {}
    count = 0
    while True:
        held = local
        for live in [name for name, dead in verdicts.items() if not dead]:
            held = held.exclude(claimed_by=live).exclude(claimed_by__startswith=f"{live}:")
        rows = list(
            held.values_list("pk", "status", "claimed_by", "attempts").order_by("pk")[:SWEEP_BATCH]
        )
        known = len(verdicts)
        for pk, status, claimed_by, attempts in rows:
            process = owners.process_of(claimed_by)
            if process is None:
                continue
            if process not in verdicts:
                verdicts[process] = owners.is_dead_local(process)
            if not verdicts[process]:
                continue
            if status == Status.PROCESSING and attempts >= max_attempts:
                _give_up(pk, attempts, status=status, claimed_by=claimed_by)
                continue
            count += len(_requeue([pk], status=status, claimed_by=claimed_by))
        # Another page only when this one found a live holder to leave out next time.
        if len(rows) < SWEEP_BATCH or len(verdicts) == known or count >= SWEEP_BATCH:
            return count


def sweep() -> int:
    """Schedule every message that should be processed and is not being: those held by
    a dead ``smtpd`` of this host, ``received`` ones not scheduled for
    ``REDISPATCH_AFTER`` seconds, ``processing`` ones whose lease expired (their
    worker died), and ``failed`` ones due for a retry. At most ``SWEEP_BATCH`` of each
    per call. Returns how many were scheduled."""
    config = get_settings()
    now = timezone.now()
    with unit_of_work():
        count = _sweep_dead_local(config.MAX_ATTEMPTS)
        count += _sweep_waiting(now, now - timedelta(seconds=config.REDISPATCH_AFTER))
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
def recording() -> Iterator[backends.MemoryDispatcher]:
    """Within the block, scheduling and Celery task sends are recorded, not run.

    The one test seam: ``django_inbound_smtp.testing`` uses it to process
    synchronously in the caller's thread (and transaction) instead of in the
    background, and to capture mailbox handlers that are Celery tasks."""
    recorder = backends.MemoryDispatcher()
    token = backends.recording.set(recorder)
    try:
        yield recorder
    finally:
        backends.recording.reset(token)
