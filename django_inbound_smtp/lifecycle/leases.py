"""One thread per process renews the leases of every claim the process holds.

A claim's lease is ``claimed_at``; the sweeper takes over a claim not renewed for
``PROCESSING_LEASE`` seconds (its worker died). Renewing every third of the lease
keeps a slow but live worker's claims. One thread and one ``UPDATE`` for all the
process's claims, instead of a thread per message.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager

from django.db import connections, router
from django.utils import timezone

from django_inbound_smtp._db import unit_of_work
from django_inbound_smtp.conf import get_settings
from django_inbound_smtp.models import InboundMessage

__all__ = ["LeaseKeeper", "keeper"]

logger = logging.getLogger(__name__)


class LeaseKeeper:
    """The claims this process holds, and the thread that renews them."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._held: Counter[str] = Counter()
        self._thread: threading.Thread | None = None
        self._wake = threading.Event()  # a new claim: look at the lease setting again

    @contextmanager
    def holding(self, execution: str) -> Iterator[None]:
        """Keep ``execution``'s claims alive for the duration of the block."""
        if connections[router.db_for_write(InboundMessage)].in_atomic_block:
            yield  # inside the caller's transaction (test kit): nobody else sees the claim
            return
        with self._lock:
            self._held[execution] += 1
            self._wake.set()
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(
                    target=self._run, name="inbound-smtp-leases", daemon=True
                )
                self._thread.start()
        try:
            yield
        finally:
            with self._lock:
                self._held[execution] -= 1
                if self._held[execution] <= 0:
                    del self._held[execution]

    def _run(self) -> None:
        renewed = time.monotonic()
        try:
            while True:
                # Woken at least every second, so a shorter lease set meanwhile (or
                # the last claim released) takes effect without waiting a long one.
                interval = get_settings().PROCESSING_LEASE / 3
                self._wake.wait(min(interval, 1.0))
                self._wake.clear()
                with self._lock:
                    held = list(self._held)
                    if not held:
                        self._thread = None
                        return
                if time.monotonic() - renewed >= interval:
                    self.renew(held)
                    renewed = time.monotonic()
        finally:
            connections.close_all()

    @staticmethod
    def renew(executions: list[str]) -> int:
        """Move the lease of every claim of ``executions`` to now; rows renewed."""
        try:
            # A unit of work: the connection follows CONN_MAX_AGE (kept open in smtpd).
            with unit_of_work():
                return InboundMessage.objects.filter(
                    claimed_by__in=executions, status=InboundMessage.Status.PROCESSING
                ).update(claimed_at=timezone.now())
        except Exception:
            logger.exception("could not renew %d processing lease(s)", len(executions))
            return 0


_keeper = LeaseKeeper()


def keeper() -> LeaseKeeper:
    """This process's lease keeper."""
    return _keeper
