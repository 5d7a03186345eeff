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
from django_inbound_smtp.lifecycle.backends import PROCESS_TASK
from django_inbound_smtp.lifecycle.process import Outcome
from django_inbound_smtp.lifecycle.process import process_message as process

__all__ = ["process_message", "sweep"]


@shared_task(
    bind=True,
    name=PROCESS_TASK,
    # Acknowledge after the work, and put the message back if the worker process dies:
    # a killed worker never loses a message (hostile-inputs §7).
    acks_late=True,
    reject_on_worker_lost=True,
    # Database trouble is temporary: retry with exponential back-off and jitter.
    autoretry_for=(DatabaseError,),
    retry_backoff=True,
    retry_backoff_max=600,
    retry_jitter=True,
    # Finite: a permanent database error must not re-run receivers for ever; the
    # message stays claimed, its lease expires and the sweeper takes over.
    max_retries=10,
)
def process_message(self: Any, pk: int) -> str:
    """Process message ``pk`` (send ``message_received``, run handlers, record the outcome).

    A redelivery of the same task (same task id) takes over its own claim at once;
    while another worker holds the claim, the task retries later.
    """
    outcome = process(pk, owner=f"celery:{self.request.id}")
    if outcome is Outcome.BUSY:
        # Another execution holds a live lease. If it was a worker that died (this is
        # the redelivery), the lease expires soon and a retry takes over; if it is
        # alive, it finishes and the retry finds nothing to do.
        try:
            raise self.retry(countdown=get_settings().PROCESSING_LEASE, max_retries=3)
        except MaxRetriesExceededError:
            return Outcome.BUSY.value  # the sweeper is the backstop
    return str(outcome.value)


@shared_task(name="django_inbound_smtp.tasks.sweep", ignore_result=True)
def sweep() -> int:
    """Schedule messages that are waiting too long, abandoned, or due for a retry."""
    return schedule.sweep()
