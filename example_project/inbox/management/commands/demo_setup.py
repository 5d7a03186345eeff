"""``manage.py demo_setup``: the mailboxes, the demo ticket and the admin login the demo
needs."""

from argparse import ArgumentParser
from typing import Any

from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand
from django.core.management.color import no_style
from django.db import connection

from django_inbound_smtp.models import Mailbox
from inbox.models import Ticket

DEMO_MAILBOX = "demo@example.test"
DEMO_TICKET_ID = 1
DEMO_TICKET_SUBJECT = "Demo ticket: reply by email to comment"
DEMO_USERNAME = "admin"
DEMO_PASSWORD = "admin"  # noqa: S105 - local demo only


def demo_reply_address() -> str:
    """The demo ticket's signed reply address, not issued to a user and without expiry, so
    it is the same every time (the demo's SECRET_KEY is fixed)."""
    ticket = Ticket(pk=DEMO_TICKET_ID)
    return ticket.reply_address_for(None, expires=None)


class Command(BaseCommand):
    help = (
        f"Ensure the mailbox {DEMO_MAILBOX}, ticket "
        f"#{DEMO_TICKET_ID} and a superuser {DEMO_USERNAME!r} with password "
        f"{DEMO_PASSWORD!r} exist; safe to run again. LOCAL DEMO ONLY: never run it "
        "against a database reachable by anyone else."
    )

    def add_arguments(self, parser: ArgumentParser) -> None:
        parser.add_argument(
            "--reply-address",
            action="store_true",
            help="Only print the demo ticket's signed reply address (run_demo.py asks).",
        )

    def handle(self, *args: Any, **options: Any) -> None:
        if options["reply_address"]:
            self.stdout.write(demo_reply_address())
            return
        self._ensure_mailbox(DEMO_MAILBOX)
        self._ensure_ticket()
        self._ensure_superuser()

    def _ensure_mailbox(self, address: str) -> None:
        mailbox, created = Mailbox.objects.get_or_create(address=address)
        if created:
            self.stdout.write(self.style.SUCCESS(f"Created mailbox {address}."))
        elif not mailbox.is_active:
            mailbox.is_active = True
            mailbox.save(update_fields=["is_active"])
            self.stdout.write(self.style.WARNING(f"Reactivated mailbox {address}."))
        else:
            self.stdout.write(f"Mailbox {address} already exists.")

    def _ensure_ticket(self) -> None:
        ticket = Ticket.objects.filter(pk=DEMO_TICKET_ID).first()
        if ticket is None:
            ticket = Ticket.objects.create(pk=DEMO_TICKET_ID, subject=DEMO_TICKET_SUBJECT)
            # An explicit primary key does not move PostgreSQL's sequence; reset it so
            # the next ticket created in the admin does not collide (no-op on SQLite).
            with connection.cursor() as cursor:
                for sql in connection.ops.sequence_reset_sql(no_style(), [Ticket]):
                    cursor.execute(sql)
            self.stdout.write(self.style.SUCCESS(f"Created ticket {ticket}."))
        else:
            self.stdout.write(f"Ticket {ticket} already exists.")
        self.stdout.write(
            f"Comment on it by mail: send a reply to {demo_reply_address()}; its new text, "
            "without the quote and the signature, becomes a comment (admin: Demo inbox > Tickets)."
        )

    def _ensure_superuser(self) -> None:
        user_model = get_user_model()
        user = user_model._default_manager.filter(username=DEMO_USERNAME).first()
        if user is None:
            user_model._default_manager.create_superuser(
                username=DEMO_USERNAME, email="admin@example.test", password=DEMO_PASSWORD
            )
            self.stdout.write(
                self.style.SUCCESS(
                    f"Created superuser {DEMO_USERNAME!r} with password {DEMO_PASSWORD!r}."
                )
            )
            return
        if (
            user.is_active
            and user.is_staff
            and user.is_superuser
            and user.check_password(DEMO_PASSWORD)
        ):
            self.stdout.write(f"Superuser {DEMO_USERNAME!r} already exists.")
            return
        user.is_active = user.is_staff = user.is_superuser = True
        user.set_password(DEMO_PASSWORD)
        user.save()
        self.stdout.write(
            self.style.WARNING(
                f"Reset superuser {DEMO_USERNAME!r}: active, staff, superuser, "
                f"password {DEMO_PASSWORD!r}."
            )
        )
