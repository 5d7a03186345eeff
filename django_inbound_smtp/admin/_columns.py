"""The columns of the message list: short, cut to fit, timestamps to the second.

Every value comes from the row or what ``InboundMessageAdmin.get_queryset`` already
fetched (the sender check, the prefetched recipients, the ``has_attachments``
annotation): no column runs a query of its own.
"""

from __future__ import annotations

from django.contrib import admin
from django.template.defaultfilters import filesizeformat
from django.utils.html import format_html
from django.utils.translation import gettext_lazy as _

from django_inbound_smtp.admin import _page
from django_inbound_smtp.models import InboundMessage

__all__ = ["MessageColumns"]

# List cells longer than this are cut on the server (the full value is the title).
CELL_MAX_CHARS = 200


def _cell(value: str, *, css: str) -> str:
    """A list cell cut with an ellipsis by CSS, the whole value in its tooltip."""
    value = _page.visible(value)
    return format_html('<span class="{}" title="{}">{}</span>', css, value, value[:CELL_MAX_CHARS])


def _injected_by(message: InboundMessage) -> str | None:
    """Who put the message in from the admin (``None`` for mail that came by SMTP)."""
    if message.received_via != InboundMessage.ReceivedVia.ADMIN:
        return None
    user = message.injected_by  # select_related by the admin's queryset
    return user.get_username() if user is not None else str(_("a deleted user"))


class MessageColumns:
    """List columns mixed into ``InboundMessageAdmin``."""

    @admin.display(description=_("received"), ordering="received_at")
    def received(self, message: InboundMessage) -> str:
        # Day and time wrap onto two lines: the column stays narrow, seconds included.
        day, _space, time = _page.seconds(message.received_at, zone=False).partition(" ")
        return format_html('<span class="inbound-day">{}</span> {}', day, time)

    @admin.display(description=_("from"), ordering="from_header")
    def from_display(self, message: InboundMessage) -> str:
        sender = message.from_header or message.envelope_from or "<>"
        who = _injected_by(message)
        if who is None:
            return _cell(sender, css="inbound-cut")
        # Put in from the admin: who did it comes first, so the cut never hides it.
        return format_html(
            '<span class="inbound-cut" title="{}"><small>({} {})</small> {}</span>',
            _page.visible(sender),
            _("injected by"),
            who,
            _page.visible(sender)[:CELL_MAX_CHARS],
        )

    @admin.display(description=_("to"))
    def recipient_list(self, message: InboundMessage) -> str:
        addresses = ", ".join(r.address for r in message.recipients.all())
        return _cell(addresses, css="inbound-cut")

    @admin.display(description=_("subject"), ordering="subject")
    def subject_display(self, message: InboundMessage) -> str:
        return _cell(message.subject, css="inbound-cut")

    @admin.display(description=_("attachments"), empty_value="")
    def attachment_flag(self, message: InboundMessage) -> str | None:
        if not getattr(message, "has_attachments", False):
            return None
        label = _("has attachments")
        return format_html(
            '<span class="inbound-clip" role="img" aria-label="{}" title="{}"></span>',
            label,
            label,
        )

    @admin.display(description=_("size"), ordering="size")
    def size_display(self, message: InboundMessage) -> str:
        return filesizeformat(message.size)

    @admin.display(description=_("envelope sender"), ordering="envelope_from")
    def envelope_from_display(self, message: InboundMessage) -> str:
        sender = message.envelope_from or "<>"
        who = _injected_by(message)
        if who is None:
            return sender
        return format_html("{} <small>({} {})</small>", sender, _("injected by"), who)

    @admin.display(description=_("verified"), boolean=True)
    def sender_verified(self, message: InboundMessage) -> bool | None:
        """``None`` (unknown) when the message has no sender checks."""
        check = getattr(message, "sender_check", None)
        return None if check is None else check.sender_verified
