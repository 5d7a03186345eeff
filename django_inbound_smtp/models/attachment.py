"""Attachments and inline parts extracted from a stored message."""

from __future__ import annotations

from typing import IO

from django.core.files.storage import Storage, storages
from django.db import models
from django.utils.translation import gettext_lazy as _

from django_inbound_smtp.conf import get_settings
from django_inbound_smtp.models.message import InboundMessage

__all__ = ["Attachment"]


class Attachment(models.Model):
    """One attachment or inline part, its bytes in storage under a random name.

    Everything but the bytes comes from the sender: the display filename is
    sanitized, never used as a path; the content type is a claim, not a fact.
    """

    message = models.ForeignKey(
        InboundMessage,
        on_delete=models.CASCADE,
        related_name="attachments",
        verbose_name=_("message"),
    )
    position = models.PositiveIntegerField(
        _("position"), help_text=_("Order of the part in the message, from 0.")
    )
    filename = models.CharField(
        _("filename"),
        max_length=255,
        help_text=_("Display name, sanitized: no folders, controls or bidi overrides."),
    )
    file = models.CharField(
        _("stored file"),
        max_length=255,
        help_text=_("Random name of the bytes in the INBOUND_SMTP['STORAGE'] storage."),
    )
    content_type = models.CharField(
        _("content type"), max_length=255, help_text=_("As declared by the sender.")
    )
    size = models.PositiveBigIntegerField(_("size"), help_text=_("Decoded size in bytes."))
    sha256 = models.CharField(
        _("SHA-256"), max_length=64, db_index=True, help_text=_("Of the decoded bytes.")
    )
    content_id = models.CharField(
        _("Content-ID"),
        max_length=255,
        blank=True,
        help_text=_("Without angle brackets; what cid: URLs in the HTML body refer to."),
    )
    inline = models.BooleanField(
        _("inline"), default=False, help_text=_("Shown in the body (an image), not attached.")
    )

    class Meta:
        verbose_name = _("attachment")
        verbose_name_plural = _("attachments")
        ordering = ("message", "position")
        constraints = [
            models.UniqueConstraint(
                fields=["message", "position"], name="inbound_smtp_attachment_position"
            )
        ]

    def __str__(self) -> str:
        return self.filename

    @property
    def storage(self) -> Storage:
        """The storage the bytes live in (``INBOUND_SMTP['STORAGE']``)."""
        return storages[get_settings().STORAGE]

    def open(self) -> IO[bytes]:
        """Open the decoded bytes for binary reading; the caller closes it."""
        return self.storage.open(self.file, "rb")

    def read(self) -> bytes:
        """The decoded bytes."""
        with self.open() as handle:
            return handle.read()
