"""The recipients a bounce reports on: one row each, read from its delivery report."""

from __future__ import annotations

from django.db import models
from django.utils.translation import gettext_lazy as _

from django_inbound_smtp.models.message import InboundMessage

__all__ = ["BounceRecipient"]


class BounceRecipient(models.Model):
    """One recipient of mail *you sent*, as a bounce (``kind = "bounce"``) reports it."""

    class Action(models.TextChoices):
        # RFC 3464 §2.3.3
        FAILED = "failed", _("failed")
        DELAYED = "delayed", _("delayed")
        DELIVERED = "delivered", _("delivered")
        RELAYED = "relayed", _("relayed")
        EXPANDED = "expanded", _("expanded")
        UNKNOWN = "", _("unknown")

    message = models.ForeignKey(
        InboundMessage,
        on_delete=models.CASCADE,
        related_name="bounce_recipients",
        verbose_name=_("bounce"),
    )
    position = models.PositiveIntegerField(_("position"), help_text=_("Order in the report."))
    original_recipient = models.CharField(
        _("original recipient"),
        max_length=254,
        blank=True,
        help_text=_("The address the mail was sent to, as the sender gave it (if reported)."),
    )
    final_recipient = models.CharField(
        _("final recipient"),
        max_length=254,
        blank=True,
        help_text=_("The address the reporting server tried to deliver to."),
    )
    action = models.CharField(
        _("action"), max_length=16, choices=Action.choices, blank=True, db_index=True
    )
    status = models.CharField(
        _("status"), max_length=16, blank=True, help_text=_("Enhanced status code, e.g. 5.1.1.")
    )
    diagnostic_code = models.TextField(
        _("diagnostic code"), blank=True, help_text=_("What the remote server said.")
    )
    remote_mta = models.CharField(_("remote server"), max_length=255, blank=True)
    original_message_id = models.CharField(
        _("returned Message-ID"),
        max_length=512,
        blank=True,
        help_text=_("Message-ID of the mail that bounced, when the bounce quotes it."),
    )

    class Meta:
        verbose_name = _("bounced recipient")
        verbose_name_plural = _("bounced recipients")
        ordering = ("message", "position")
        indexes = [
            models.Index(fields=["final_recipient"], name="inbound_smtp_bounce_final_idx"),
            models.Index(fields=["original_recipient"], name="inbound_smtp_bounce_orig_idx"),
        ]

    def __str__(self) -> str:
        return f"{self.recipient} {self.action} {self.status}".strip()

    @property
    def recipient(self) -> str:
        """The address to act on: the original recipient when known, else the final one."""
        return self.original_recipient or self.final_recipient
