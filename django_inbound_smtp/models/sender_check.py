"""What the sender checks found for one message."""

from __future__ import annotations

from typing import TYPE_CHECKING

from django.db import models
from django.utils.translation import gettext_lazy as _

from django_inbound_smtp.models.message import InboundMessage

__all__ = ["SenderCheck"]

if TYPE_CHECKING:
    from django.utils.functional import _StrOrPromise as StrOrPromise


def _result(label: StrOrPromise) -> models.CharField[str, str]:
    # No index per result: eight more index writes per message, for admin filters on
    # columns of a handful of values each.
    return models.CharField(label, max_length=16, blank=True)


def _reason(label: StrOrPromise) -> models.CharField[str, str]:
    return models.CharField(label, max_length=255, blank=True)


class SenderCheck(models.Model):
    """What the sender checks found for one message (``INBOUND_SMTP["SENDER_CHECKS"]``).

    Each ``*_result`` is an RFC 8601 result word (``pass``, ``fail``, ``softfail``,
    ``neutral``, ``none``, ``temperror``, ``permerror``; ``nullmx`` for a sender domain
    that receives no mail), or empty when that check was off. ``sender_verified`` is
    the one verdict to trust: the From domain is authenticated by an aligned SPF or
    DKIM pass (DMARC's test, with the domain's own strictness when it publishes one).
    """

    message = models.OneToOneField(
        InboundMessage,
        on_delete=models.CASCADE,
        related_name="sender_check",
        verbose_name=_("message"),
    )
    sender_verified = models.BooleanField(
        _("sender verified"),
        default=False,
        db_index=True,
        help_text=_("The From domain is authenticated (aligned SPF or DKIM pass)."),
    )
    from_domain = models.CharField(
        _("From domain"), max_length=255, blank=True, help_text=_("Domain of the From header.")
    )
    dnsbl_result = _result(_("DNSBL"))
    dnsbl_reason = _reason(_("DNSBL reason"))
    iprev_result = _result(_("reverse DNS"))
    iprev_reason = _reason(_("reverse DNS reason"))
    sender_domain_result = _result(_("sender domain"))
    sender_domain_reason = _reason(_("sender domain reason"))
    spf_result = _result(_("SPF"))
    spf_reason = _reason(_("SPF reason"))
    spf_helo_result = _result(_("SPF (HELO)"))
    spf_helo_reason = _reason(_("SPF (HELO) reason"))
    dkim_result = _result(_("DKIM"))
    dkim_reason = _reason(_("DKIM reason"))
    dmarc_result = _result(_("DMARC"))
    dmarc_reason = _reason(_("DMARC reason"))
    dmarc_policy = models.CharField(
        _("DMARC policy"), max_length=16, blank=True, help_text=_("The domain's p= (or sp=).")
    )
    arc_result = _result(_("ARC"))
    arc_reason = _reason(_("ARC reason"))
    details = models.JSONField(
        _("details"), default=dict, blank=True, help_text=_("Per-signature DKIM results etc.")
    )
    authentication_results = models.TextField(
        _("Authentication-Results"), blank=True, help_text=_("The header we added (RFC 8601).")
    )

    class Meta:
        verbose_name = _("sender check")
        verbose_name_plural = _("sender checks")

    def __str__(self) -> str:
        return f"{self.message_id}: {'verified' if self.sender_verified else 'not verified'}"
