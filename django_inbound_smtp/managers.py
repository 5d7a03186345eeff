"""Querysets of the models: what the validator, the sweeper and the admin ask for."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import TYPE_CHECKING

from django.db import models
from django.utils import timezone

if TYPE_CHECKING:
    from django_inbound_smtp.models import InboundMessage, Mailbox  # noqa: F401 - in strings

__all__ = ["InboundMessageQuerySet", "MailboxQuerySet"]


class MailboxQuerySet(models.QuerySet["Mailbox"]):
    """Queries the recipient validator needs."""

    def active(self) -> MailboxQuerySet:
        return self.filter(is_active=True)

    def serves_domain(self, domain: str) -> bool:
        """True if any active mailbox (or catch-all) exists for ``domain``."""
        return self.active().filter(domain=domain.lower()).exists()


class InboundMessageQuerySet(models.QuerySet["InboundMessage"]):
    """Queries of the processing lifecycle."""

    def waiting_since(self, cutoff: datetime) -> InboundMessageQuerySet:
        """``received`` messages last scheduled before ``cutoff`` (lost task, broker down)."""
        return self.filter(status="received").filter(
            models.Q(dispatched_at__lt=cutoff) | models.Q(dispatched_at__isnull=True)
        )

    def abandoned_since(self, cutoff: datetime) -> InboundMessageQuerySet:
        """``processing`` messages claimed before ``cutoff``: their worker died."""
        return self.filter(status="processing", claimed_at__lt=cutoff)

    def retryable(
        self, now: datetime, *, base_delay: float, max_attempts: int
    ) -> list[InboundMessage]:
        """``failed`` messages due for another attempt, with exponential back-off:
        the n-th retry waits ``base_delay * 2**(n-1)`` seconds after the last failure."""
        candidates = self.filter(
            status="failed",
            attempts__lt=max_attempts,
            processed_at__lt=now - timedelta(seconds=base_delay),
        ).only("pk", "attempts", "processed_at")
        return [
            message
            for message in candidates
            if message.processed_at is not None
            and message.processed_at
            <= now - timedelta(seconds=base_delay * 2 ** max(message.attempts - 1, 0))
        ]

    def hold(self, *, by: str = "") -> int:
        """Put a retention hold on every message here (``by``: who, recorded with the
        time); returns how many were not held before. Held messages are never pruned."""
        return self.filter(held=False).update(held=True, held_by=by[:150], held_at=timezone.now())

    def release_hold(self) -> int:
        """Release the retention hold of every message here; returns how many were held."""
        return self.filter(held=True).update(held=False, held_by="", held_at=None)
