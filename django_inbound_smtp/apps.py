"""App configuration. ``ready()`` only registers the system checks."""

from __future__ import annotations

from django.apps import AppConfig
from django.utils.translation import gettext_lazy as _


class InboundSmtpConfig(AppConfig):
    name = "django_inbound_smtp"
    # Fixed for ever: it names the tables, the permissions and the check ids.
    label = "inbound_smtp"
    verbose_name = _("Inbound mail")
    # Pinned so a project's DEFAULT_AUTO_FIELD never produces a migration for us.
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        from django_inbound_smtp import checks  # noqa: F401 - registers the checks
