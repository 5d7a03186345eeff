"""``manage.py inbound_prune``: delete finished messages past their retention."""

from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandParser

from django_inbound_smtp.store import retention


class Command(BaseCommand):
    help = (
        "Delete processed, failed and duplicate messages older than INBOUND_SMTP['RETENTION'] "
        "allows, with their raw files and attachments. Never deletes received or "
        "processing messages, nor held ones."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument(
            "--dry-run",
            action="store_true",
            help="Print how many messages of each status would go; delete nothing.",
        )

    def handle(self, *args: Any, **options: Any) -> None:
        limits = retention.retention_limits()
        if not limits:
            self.stdout.write("RETENTION keeps every status for ever: nothing to prune.")
            return
        report = retention.prune(dry_run=options["dry_run"])
        verb = "Would delete" if report.dry_run else "Deleted"
        for status, days in limits.items():
            count = report.messages.get(status, 0)
            self.stdout.write(f"{verb} {count} {status} message(s) older than {days} day(s).")
        if not report.dry_run:
            if report.with_original:
                count = report.with_original
                self.stdout.write(f"Deleted {count} duplicate(s) with their original.")
            self.stdout.write(f"Deleted {report.files} file(s).")
