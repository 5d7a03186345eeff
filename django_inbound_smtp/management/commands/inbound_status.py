"""``manage.py inbound_status [--json] [--warning S] [--critical S]``: the queue's state,
with Nagios-style exit codes (0 OK, 1 WARNING, 2 CRITICAL, 3 UNKNOWN) for cron and
monitoring checks."""

from __future__ import annotations

import json
import sys
from argparse import ArgumentParser
from datetime import datetime
from typing import Any

from django.core.management.base import BaseCommand

from django_inbound_smtp.conf import get_settings
from django_inbound_smtp.monitoring.status import Level, QueueStatus, judge, queue_status


class Command(BaseCommand):
    help = (
        "Show the inbound queue: messages by status, the oldest waiting for processing, "
        "the last received and the last failure. Exits 1 (warning) or 2 (critical) when "
        "the oldest waiting message is older than the thresholds, 3 if the database "
        "cannot be read."
    )
    requires_system_checks: list[str] = []  # a monitoring check must not fail on a warning

    def add_arguments(self, parser: ArgumentParser) -> None:
        settings = get_settings()
        parser.add_argument("--json", action="store_true", help="One JSON object on stdout.")
        parser.add_argument(
            "--warning",
            type=float,
            metavar="SECONDS",
            default=settings.STUCK_WARNING_AFTER,
            help="Exit 1 when a message has waited this long (STUCK_WARNING_AFTER).",
        )
        parser.add_argument(
            "--critical",
            type=float,
            metavar="SECONDS",
            default=settings.STUCK_CRITICAL_AFTER,
            help="Exit 2 when a message has waited this long (STUCK_CRITICAL_AFTER).",
        )

    def handle(self, *args: Any, **options: Any) -> None:
        try:
            status = queue_status()
        except Exception as error:  # the database is down: UNKNOWN, in one line
            first = (str(error).strip().splitlines() or [""])[0]
            self._finish(
                Level.UNKNOWN,
                f"cannot read the queue: {type(error).__name__}: {first}",
                None,
                as_json=options["json"],
            )
            return
        level, reason = judge(status, warning=options["warning"], critical=options["critical"])
        self._finish(level, reason, status, as_json=options["json"])

    def _finish(
        self, level: Level, reason: str, status: QueueStatus | None, *, as_json: bool
    ) -> None:
        if as_json:
            body = {"level": level.name, "exit_code": int(level), "reason": reason}
            if status is not None:
                body.update(status.as_json())
            self.stdout.write(json.dumps(body, indent=2))
        else:
            self.stdout.write(f"INBOUND {level.name}: {reason}")
            if status is not None:
                self.stdout.write(_table(status))
        self.stdout.flush()
        if level is not Level.OK:
            sys.exit(int(level))


def _when(value: datetime | None, now: datetime) -> str:
    if value is None:
        return "never"
    return f"{value.isoformat(timespec='seconds')} ({(now - value).total_seconds():.0f} s ago)"


def _table(status: QueueStatus) -> str:
    now = status.checked_at
    width = max(len(name) for name in status.counts)
    lines = [f"  {name:<{width}}  {count:>8}" for name, count in status.counts.items()]
    oldest = _when(status.oldest_waiting_at, now)
    if status.oldest_waiting_queue_id:
        oldest += f" {status.oldest_waiting_queue_id}"
    lines += [f"oldest waiting: {oldest}", f"last received: {_when(status.last_received_at, now)}"]
    failure = _when(status.last_failure_at, now)
    if status.last_failure_queue_id:
        failure += f" {status.last_failure_queue_id}: {status.last_failure_error}"
    lines.append(f"last failure: {failure}")
    return "\n".join(["messages by status:", *lines])
