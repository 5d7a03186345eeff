"""``manage.py inbound_mailbox add|remove|list [ADDRESS]``: manage accepted addresses."""

from __future__ import annotations

from argparse import ArgumentParser
from typing import Any

from django.core.exceptions import ValidationError
from django.core.management.base import BaseCommand, CommandError
from django.db.models import Count

from django_inbound_smtp.models import Mailbox, normalize_mailbox_address


class Command(BaseCommand):
    help = (
        "Add, remove or list the addresses this server accepts mail for. "
        "'*@example.org' accepts every address of example.org (catch-all)."
    )

    def add_arguments(self, parser: ArgumentParser) -> None:
        sub = parser.add_subparsers(dest="action", required=True)
        add = sub.add_parser("add", help="Accept mail for ADDRESS.")
        add.add_argument("address")
        add.add_argument("--description", default="", help="A note for your own reference.")
        add.add_argument(
            "--inactive", action="store_true", help="Create it disabled (rejects mail)."
        )
        remove = sub.add_parser("remove", help="Stop accepting mail for ADDRESS.")
        remove.add_argument("address")
        sub.add_parser("list", help="List every mailbox with its message count.")

    def handle(self, *args: Any, **options: Any) -> None:
        action = options["action"]
        if action == "add":
            self._add(options["address"], options["description"], active=not options["inactive"])
        elif action == "remove":
            self._remove(options["address"])
        else:
            self._list()

    def _add(self, address: str, description: str, *, active: bool) -> None:
        mailbox = Mailbox(address=address, description=description, is_active=active)
        try:
            mailbox.full_clean()
        except ValidationError as error:
            messages = "; ".join(m for ms in error.message_dict.values() for m in ms)
            raise CommandError(f"Cannot add {address!r}: {messages}") from error
        mailbox.save()
        kind = "catch-all" if mailbox.is_catch_all else "mailbox"
        self.stdout.write(self.style.SUCCESS(f"Added {kind} {mailbox.address}."))

    def _remove(self, address: str) -> None:
        deleted, _ = Mailbox.objects.filter(address=normalize_mailbox_address(address)).delete()
        if not deleted:
            raise CommandError(f"No mailbox {address!r}.")
        self.stdout.write(
            self.style.SUCCESS(
                f"Removed {normalize_mailbox_address(address)}; stored mail is kept."
            )
        )

    def _list(self) -> None:
        mailboxes = Mailbox.objects.annotate(
            message_count=Count("deliveries__message", distinct=True)
        )
        if not mailboxes:
            self.stdout.write("No mailboxes. Add one with: manage.py inbound_mailbox add ADDRESS")
            return
        for mailbox in mailboxes:
            state = "active" if mailbox.is_active else "inactive"
            self.stdout.write(
                f"{mailbox.address}\t{state}\t{getattr(mailbox, 'message_count', 0)} message(s)"
                + (f"\t{mailbox.description}" if mailbox.description else "")
            )
