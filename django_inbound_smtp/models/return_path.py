"""Addresses that signed return paths (VERP) stand for."""

from __future__ import annotations

from django.db import models
from django.utils.translation import gettext_lazy as _

__all__ = ["ReturnPath"]


class ReturnPath(models.Model):
    """One address our outgoing mail was sent to with a signed return path.

    A local part has 64 octets, too few to carry any address: the signed return path
    names this row, and a bounce to it resolves to ``address``. One row per address.
    """

    address = models.CharField(
        _("address"),
        max_length=254,
        unique=True,
        help_text=_("The recipient of the original message, as given when it was sent."),
    )
    created_at = models.DateTimeField(_("created"), auto_now_add=True)

    class Meta:
        verbose_name = _("return path")
        verbose_name_plural = _("return paths")

    def __str__(self) -> str:
        return self.address
