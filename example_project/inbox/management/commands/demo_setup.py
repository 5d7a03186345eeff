"""``manage.py demo_setup``: the mailbox and the admin login the demo needs."""

from typing import Any

from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand

from django_inbound_smtp.models import Mailbox

DEMO_MAILBOX = "demo@example.test"
DEMO_USERNAME = "admin"
DEMO_PASSWORD = "admin"  # noqa: S105 - local demo only


class Command(BaseCommand):
    help = (
        f"Ensure the mailbox {DEMO_MAILBOX} and a superuser {DEMO_USERNAME!r} with password "
        f"{DEMO_PASSWORD!r} exist; safe to run again. LOCAL DEMO ONLY: never run it "
        "against a database reachable by anyone else."
    )

    def handle(self, *args: Any, **options: Any) -> None:
        _mailbox, created = Mailbox.objects.get_or_create(address=DEMO_MAILBOX)
        if created:
            self.stdout.write(self.style.SUCCESS(f"Created mailbox {DEMO_MAILBOX}."))
        else:
            self.stdout.write(f"Mailbox {DEMO_MAILBOX} already exists.")

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
