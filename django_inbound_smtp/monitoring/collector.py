"""Prometheus gauges read from the database at scrape time: the queue.

The service refreshes :attr:`QueueCollector.latest` off the event loop, at most once
per ``METRICS_CACHE`` seconds however often Prometheus (or several of them) scrapes;
:meth:`QueueCollector.collect` only formats what it holds. Ages are computed at
collection time, so they keep growing between refreshes.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from django.utils import timezone

from django_inbound_smtp.metrics import NAMESPACE
from django_inbound_smtp.monitoring.status import QueueStatus

__all__ = ["QueueCollector"]


class QueueCollector:
    """Yields ``inbound_smtp_messages{status}``, the oldest waiting message's age, the
    last arrival and failure times, and ``inbound_smtp_database_up``."""

    def __init__(self) -> None:
        #: The last queue state read, or ``None`` if the last read failed.
        self.latest: QueueStatus | None = None

    def describe(self) -> list[Any]:
        return []  # nothing to check at registration; never query then

    def collect(self) -> Iterator[Any]:
        from prometheus_client.core import GaugeMetricFamily

        latest = self.latest
        yield GaugeMetricFamily(
            f"{NAMESPACE}_database_up",
            "1 if the last queue query succeeded, 0 if the database did not answer.",
            value=0 if latest is None else 1,
        )
        if latest is None:
            return
        by_status = GaugeMetricFamily(
            f"{NAMESPACE}_messages",
            "Stored messages by status (received + processing: the queue depth).",
            labels=["status"],
        )
        for status, count in sorted(latest.counts.items()):
            by_status.add_metric([status], count)
        yield by_status
        yield GaugeMetricFamily(
            f"{NAMESPACE}_oldest_unprocessed_age_seconds",
            "Seconds the oldest received or processing message has waited (0: none).",
            value=latest.oldest_waiting_age(timezone.now()),
        )
        for name, when, text in (
            ("last_received_timestamp_seconds", latest.last_received_at, "received"),
            ("last_failure_timestamp_seconds", latest.last_failure_at, "marked failed"),
        ):
            if when is not None:
                yield GaugeMetricFamily(
                    f"{NAMESPACE}_{name}",
                    f"Unix time the newest message was {text}.",
                    value=when.timestamp(),
                )
