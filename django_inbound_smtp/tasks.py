"""Celery tasks. They take primary keys only, and are idempotent and safe to redeliver.

Declared with ``shared_task``: a reusable app must not own the project's Celery app.
Schedule :func:`sweep` with Celery beat when ``DISPATCH`` is ``celery`` and no
``smtpd`` runs its built-in sweeper (see the README).
"""

from __future__ import annotations

from typing import Any

from celery import shared_task
from celery.exceptions import MaxRetriesExceededError
from django.db import DatabaseError

from django_inbound_smtp.conf import get_settings
from django_inbound_smtp.lifecycle import schedule
from django_inbound_smtp.lifecycle.backends import PROCESS_BATCH_TASK, PROCESS_TASK
from django_inbound_smtp.lifecycle.process import Outcome, process_batch
from django_inbound_smtp.store import retention

__all__ = ["process_message", "process_messages", "prune", "sweep"]


# Acknowledge after the work, and put the messages back if the worker process dies: a
# killed worker never loses a message (hostile-inputs §7). Database trouble is
# temporary: retry with exponential back-off and jitter. Finite: a permanent database
# error must not re-run receivers for ever; the messages stay claimed, their leases
# expire and the sweeper takes over.
_RELIABLE: dict[str, Any] = {
    "bind": True,
    "acks_late": True,
    "reject_on_worker_lost": True,
    "autoretry_for": (DatabaseError,),
    "retry_backoff": True,
    "retry_backoff_max": 600,
    "retry_jitter": True,
    "max_retries": 10,
}


def _process(task: Any, pks: list[int]) -> dict[int, Outcome]:
    # The worker's name (celery@host) first: the processing history shows who ran it.
    worker = task.request.hostname or "-"
    outcomes = process_batch(pks, owner=f"celery:{worker}:{task.request.id}")
    busy = [pk for pk, outcome in outcomes.items() if outcome is Outcome.BUSY]
    if busy:
        # Another execution holds a live lease. If it was a worker that died (this is
        # the redelivery), the lease expires soon and a retry takes over; if it is
        # alive, it finishes and the retry finds nothing to do.
        try:
            raise task.retry(
                args=[busy] if task.name == PROCESS_BATCH_TASK else busy,
                countdown=get_settings().PROCESSING_LEASE,
                max_retries=3,
            )
        except MaxRetriesExceededError:
            pass  # the sweeper is the backstop
    return outcomes


@shared_task(name=PROCESS_BATCH_TASK, **_RELIABLE)
def process_messages(self: Any, pks: list[int]) -> dict[str, str]:
    """Process the messages ``pks`` (send ``message_received``, run handlers, record
    the outcomes), in one batch: one claim, one parse write, one outcome write."""
    return {str(pk): outcome.value for pk, outcome in _process(self, list(pks)).items()}


@shared_task(name=PROCESS_TASK, **_RELIABLE)
def process_message(self: Any, pk: int) -> str:
    """Process message ``pk``: the one-message form of :func:`process_messages` (tasks
    sent by earlier versions, and callers of your own)."""
    return _process(self, [pk])[pk].value


@shared_task(name="django_inbound_smtp.tasks.sweep", ignore_result=True)
def sweep() -> int:
    """Schedule messages that are waiting too long, abandoned, or due for a retry."""
    return schedule.sweep()


@shared_task(name="django_inbound_smtp.tasks.prune", ignore_result=True)
def prune() -> dict[str, int]:
    """Delete finished messages past ``INBOUND_SMTP["RETENTION"]``, with their files
    (``store.retention.prune``); returns how many of each status went."""
    return retention.prune().messages
