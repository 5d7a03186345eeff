"""The ``django.tasks`` task (Django 6.0 and later) that processes a batch of messages.

Imported only by ``TasksDispatcher``, never at start-up, so the app still runs on
Django 5.2 (where ``DISPATCH = "tasks"`` is refused by check ``inbound_smtp.E021``).
"""

from __future__ import annotations

from django.tasks import task  # type: ignore[import-not-found,unused-ignore]

from django_inbound_smtp.lifecycle import owners, process

__all__ = ["process_messages"]


@task  # type: ignore[untyped-decorator,unused-ignore]
def process_messages(pks: list[int]) -> dict[str, str]:
    """Process the messages ``pks`` (idempotent: a repeat finds them done)."""
    outcomes = process.process_batch(pks, owner=f"tasks:{owners.process_owner()}")
    return {str(pk): outcome.value for pk, outcome in outcomes.items()}
