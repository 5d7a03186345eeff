"""``manage.py inbound_reprocess [--failed] [--id ID ...]``: run processing again."""

from __future__ import annotations

from argparse import ArgumentParser
from typing import Any

from django.core.management.base import BaseCommand, CommandError

from django_inbound_smtp.lifecycle import schedule


class Command(BaseCommand):
    help = (
        "Run processing (the message_received signal and mailbox handlers) again for "
        "finished messages. Messages already waiting or being processed are left alone, "
        "so running it twice does no double work."
    )

    def add_arguments(self, parser: ArgumentParser) -> None:
        parser.add_argument(
            "--failed", action="store_true", help="Every failed message (or only failed --id)."
        )
        parser.add_argument(
            "--id", type=int, nargs="+", dest="ids", metavar="ID", help="Message primary keys."
        )

    def handle(self, *args: Any, **options: Any) -> None:
        if not options["failed"] and not options["ids"]:
            raise CommandError("Say which messages: --failed, --id ID ..., or both.")
        count = schedule.reprocess(options["ids"], failed_only=options["failed"])
        if schedule.dispatch_mode() == "inline":
            schedule.drain()
        self.stdout.write(f"Reprocessing {count} message(s).")
