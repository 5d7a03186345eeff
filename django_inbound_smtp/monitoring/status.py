"""The queue's state, read from the database: depth by status, oldest waiting message,
last arrival and last failure; and how worried to be about it (Nagios levels).

Synchronous (ORM). Four cheap queries, each on an index (``status``, ``received_at``):
``inbound_status`` runs them once, the metrics collector at most once per
``METRICS_CACHE`` seconds, never per message.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from django.db.models import Count
from django.utils import timezone

from django_inbound_smtp._db import unit_of_work
from django_inbound_smtp.models import InboundMessage

__all__ = ["Level", "QueueStatus", "error_summary", "judge", "queue_status"]

Status = InboundMessage.Status
#: Statuses of messages whose processing has not finished.
WAITING = (Status.RECEIVED, Status.PROCESSING)


class Level(enum.IntEnum):
    """Nagios plugin exit codes."""

    OK = 0
    WARNING = 1
    CRITICAL = 2
    UNKNOWN = 3


@dataclass(frozen=True)
class QueueStatus:
    """What the database says about the queue, at ``checked_at``."""

    checked_at: datetime
    #: Messages per status, every status present (0 when none).
    counts: dict[str, int]
    oldest_waiting_at: datetime | None = None
    oldest_waiting_queue_id: str = ""
    last_received_at: datetime | None = None
    last_failure_at: datetime | None = None
    last_failure_queue_id: str = ""
    last_failure_error: str = ""

    @property
    def waiting(self) -> int:
        """Messages received or being processed."""
        return sum(self.counts[status] for status in WAITING)

    def oldest_waiting_age(self, now: datetime | None = None) -> float:
        """Seconds the oldest waiting message has waited (0 when none waits)."""
        if self.oldest_waiting_at is None:
            return 0.0
        return max(((now or timezone.now()) - self.oldest_waiting_at).total_seconds(), 0.0)

    def as_json(self) -> dict[str, Any]:
        """A JSON-ready dict (times in ISO 8601)."""

        def iso(value: datetime | None) -> str | None:
            return None if value is None else value.isoformat()

        return {
            "checked_at": iso(self.checked_at),
            "counts": dict(self.counts),
            "waiting": self.waiting,
            "oldest_waiting": {
                "received_at": iso(self.oldest_waiting_at),
                "queue_id": self.oldest_waiting_queue_id or None,
                "age_seconds": round(self.oldest_waiting_age(self.checked_at), 3),
            },
            "last_received_at": iso(self.last_received_at),
            "last_failure": {
                "at": iso(self.last_failure_at),
                "queue_id": self.last_failure_queue_id or None,
                "error": self.last_failure_error or None,
            },
        }


def error_summary(error: str) -> str:
    """The line of a stored error worth showing: for a traceback, the exception line
    (``ValueError: …``) of the first exception; otherwise the first line. Printable
    characters only, at most 500."""
    lines = [line for line in error.splitlines() if line.strip()]
    chosen = lines[0] if lines else ""
    if chosen.startswith("Traceback"):
        chosen = next((line for line in lines[1:] if not line.startswith((" ", "\t"))), chosen)
    # A receiver's exception text may quote hostile mail: nothing a terminal acts on.
    return "".join(c if c.isprintable() else "?" for c in chosen[:500])


def queue_status() -> QueueStatus:
    """Read the queue's state now. Raises what the database raises."""
    with unit_of_work():
        messages = InboundMessage.objects.order_by()  # no default ordering in GROUP BY
        counts = {status.value: 0 for status in Status}
        for status, count in messages.values_list("status").annotate(count=Count("pk")):
            counts[status] = count
        oldest = (
            messages.filter(status__in=WAITING)
            .order_by("received_at", "pk")
            .values_list("received_at", "queue_id")
            .first()
        )
        last_received = (
            messages.order_by("-received_at").values_list("received_at", flat=True).first()
        )
        failure = (
            messages.filter(status=Status.FAILED)
            .order_by("-processed_at", "-pk")
            .values_list("processed_at", "queue_id", "error")
            .first()
        )
    return QueueStatus(
        checked_at=timezone.now(),
        counts=counts,
        oldest_waiting_at=oldest[0] if oldest else None,
        oldest_waiting_queue_id=oldest[1] if oldest else "",
        last_received_at=last_received,
        last_failure_at=failure[0] if failure else None,
        last_failure_queue_id=failure[1] if failure else "",
        last_failure_error=error_summary(failure[2]) if failure else "",
    )


def judge(status: QueueStatus, *, warning: float, critical: float) -> tuple[Level, str]:
    """How stuck processing is: ``CRITICAL`` when the oldest waiting message has waited
    ``critical`` seconds or more, ``WARNING`` from ``warning`` seconds; and why."""
    age = status.oldest_waiting_age(status.checked_at)
    if status.oldest_waiting_at is None:
        return Level.OK, "nothing waits for processing"
    said = f"oldest waiting message {status.oldest_waiting_queue_id} is {age:.0f} s old"
    if age >= critical:
        return Level.CRITICAL, f"{said} (critical at {critical:.0f} s)"
    if age >= warning:
        return Level.WARNING, f"{said} (warning at {warning:.0f} s)"
    return Level.OK, f"{said}; {status.waiting} waiting"
