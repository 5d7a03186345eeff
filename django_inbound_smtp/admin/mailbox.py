"""Admin for mailboxes: the addresses we accept mail for (editable)."""

from __future__ import annotations

from urllib.parse import urlencode

from django.contrib import admin
from django.db.models import Count, QuerySet
from django.http import HttpRequest
from django.urls import reverse
from django.utils.html import format_html
from django.utils.translation import gettext_lazy as _

from django_inbound_smtp.models import Mailbox


@admin.register(Mailbox)
class MailboxAdmin(admin.ModelAdmin):
    list_display = (
        "address",
        "domain",
        "is_active",
        "message_count",
        "quota_messages",
        "quota_bytes",
        "description",
    )
    list_filter = ("is_active", "domain")
    search_fields = ("address", "description")
    readonly_fields = ("domain", "created_at")

    def get_queryset(self, request: HttpRequest) -> QuerySet[Mailbox]:
        queryset: QuerySet[Mailbox] = super().get_queryset(request)
        return queryset.annotate(message_count=Count("deliveries__message", distinct=True))

    @admin.display(description=_("messages"), ordering="message_count")
    def message_count(self, mailbox: Mailbox) -> str:
        """The count, linking to the message list filtered by this mailbox."""
        count = int(getattr(mailbox, "message_count", 0))
        url = reverse("admin:inbound_smtp_inboundmessage_changelist")
        query = urlencode({"recipients__mailbox__id__exact": mailbox.pk})
        return format_html(
            '<a href="{}?{}" class="inbound-mailbox-messages">{}</a>', url, query, count
        )
