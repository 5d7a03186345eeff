"""``manage.py inbound_dispatch``: one sweep of the at-least-once dispatcher."""

from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand

from django_inbound_smtp.lifecycle import schedule


class Command(BaseCommand):
    help = (
        "Schedule processing again for messages that need it: waiting longer than "
        "REDISPATCH_AFTER (task lost, broker down), claimed by a worker that died, or "
        "failed and due for a retry. The same sweep smtpd runs every SWEEP_INTERVAL."
    )

    def handle(self, *args: Any, **options: Any) -> None:
        count = schedule.sweep()
        mode = schedule.dispatch_mode()
        if mode == "inline":
            # Processing runs in this process: wait for it before exiting.
            schedule.drain()
        self.stdout.write(f"Scheduled {count} message(s) for processing ({mode}).")
