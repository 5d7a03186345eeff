"""Outgoing: a notification about a ticket, whose Reply-To is a signed reply address
issued to the requester. Their reply comes back through ``smtpd`` and becomes a
comment (``inbox/comments.py``)."""

from __future__ import annotations

from django.conf import settings
from django.core.mail import EmailMessage

from inbox.models import Ticket


def notify_requester(ticket: Ticket, text: str) -> EmailMessage | None:
    """Mail ``text`` to the ticket's requester; ``None`` when there is nobody to tell."""
    requester = ticket.requester
    address = getattr(requester, "email", "") if requester is not None else ""
    if not address:
        return None
    email = EmailMessage(
        subject=f"[#{ticket.pk}] {ticket.subject}",
        body=f"{text}\n\nReply to this message to comment on the ticket.\n",
        from_email=settings.DEFAULT_FROM_EMAIL,
        to=[address],
        reply_to=[ticket.reply_address_for(requester)],
    )
    email.send()
    return email
