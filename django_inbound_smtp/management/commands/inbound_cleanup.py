"""``manage.py inbound_cleanup``: remove files no row points at (left by a crash)."""

from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandParser

from django_inbound_smtp.store import orphans


class Command(BaseCommand):
    help = (
        "Delete spool files and stored raw messages or attachments that no database row "
        "points at and that are older than an hour: what a process killed mid-delivery "
        "leaves behind. None of them was acknowledged with a 250. smtpd does the same for "
        "the last two days every ten minutes."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument(
            "--days", type=int, default=2, help="How many past days of storage to look at."
        )
        parser.add_argument(
            "--dry-run", action="store_true", help="List what would be removed; remove nothing."
        )

    def handle(self, *args: Any, **options: Any) -> None:
        found = orphans.remove_orphans(days=options["days"], dry_run=options["dry_run"], force=True)
        for name in found:
            self.stdout.write(name)
        verb = "Would remove" if options["dry_run"] else "Removed"
        self.stdout.write(f"{verb} {len(found)} orphaned file(s).")
