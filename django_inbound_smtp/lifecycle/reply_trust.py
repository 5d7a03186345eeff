"""Whether a reply to a signed address issued to a user may act as that user.

The token proves we made the address; it does not prove who replies: everyone the
notification reached (a CC, a forward, a mailing list) holds it. So a reply counts as
the user's (``trusted``) only when

- its From address, or its envelope sender, is the user's address (``address_key``
  equality), and
- the From domain is authenticated: DMARC pass, or SPF or DKIM passing aligned with it
  (``SenderCheck.sender_verified``), and that domain is the user's own. The second
  condition matters when only the envelope sender matches: an attacker's own domain,
  authenticated, must not vouch for a forged envelope sender at the user's domain.

Run by the processing step, after the message is parsed and before receivers see it;
the verdict is stored on the recipient row (``InboundRecipient.reply_trust``).
"""

from __future__ import annotations

from collections.abc import Sequence

from django.contrib.auth import get_user_model

from django_inbound_smtp.envelope import address_key, split_address
from django_inbound_smtp.models import InboundMessage, InboundRecipient, ReplyTrust, SenderCheck

__all__ = ["assess", "verdict"]


def _user_address(user_pk: str) -> str:
    model = get_user_model()
    try:
        user = model._default_manager.filter(pk=user_pk).first()
    except (ValueError, TypeError):
        return ""
    if user is None:
        return ""
    return str(getattr(user, model.get_email_field_name(), "") or "")


def verdict(message: InboundMessage, *, user_address: str, check: SenderCheck | None) -> str:
    """The :class:`ReplyTrust` value of ``message`` replying as ``user_address``."""
    if not user_address:
        return ReplyTrust.UNKNOWN_USER
    wanted = address_key(user_address)
    authors = message.address_list("from")
    from_matches = len(authors) == 1 and address_key(authors[0][1]) == wanted
    sender_matches = bool(message.envelope_from) and address_key(message.envelope_from) == wanted
    if not (from_matches or sender_matches):
        return ReplyTrust.SENDER_MISMATCH
    if check is None or not check.sender_verified:
        return ReplyTrust.NOT_AUTHENTICATED
    # The authenticated domain is the From domain; it must be the user's own.
    if address_key(check.from_domain) != split_address(wanted)[1]:
        return ReplyTrust.NOT_AUTHENTICATED
    return ReplyTrust.TRUSTED


def assess(message: InboundMessage, recipients: Sequence[InboundRecipient]) -> None:
    """Set (and store when it changed) ``reply_trust`` on every recipient of
    ``message`` that is a signed reply address."""
    signed = [r for r in recipients if r.reply_content_type_id is not None]
    if not signed:
        return
    check = SenderCheck.objects.filter(message_id=message.pk).first()
    changed = []
    for row in signed:
        if row.bounce_recipient:
            continue  # a return path: nobody's reply
        if not row.reply_user_pk:
            value = str(ReplyTrust.NO_USER)
        else:
            value = verdict(message, user_address=_user_address(row.reply_user_pk), check=check)
        if row.reply_trust != value:
            row.reply_trust = value
            changed.append(row)
    if changed:
        InboundRecipient.objects.bulk_update(changed, ["reply_trust"])
