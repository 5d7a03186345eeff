"""Admin: editable mailboxes; read-only messages with a safe detail view and raw download.

Received content is hostile: nothing from a message is ever rendered as HTML. Header
values and the text body are shown escaped inside ``<pre>``; the raw message is a
download with ``Content-Disposition: attachment`` and ``nosniff``, never inline.
"""

from __future__ import annotations

from typing import Any

from django.contrib import admin, messages
from django.core.exceptions import PermissionDenied
from django.db.models import Count, QuerySet
from django.http import FileResponse, HttpRequest
from django.http.response import HttpResponseBase
from django.shortcuts import get_object_or_404
from django.urls import URLPattern, path, reverse
from django.utils.html import format_html
from django.utils.translation import gettext_lazy as _
from django.utils.translation import ngettext

from django_inbound_smtp import dispatch, parsing
from django_inbound_smtp.models import InboundMessage, InboundRecipient, Mailbox, SenderCheck

# The admin detail parses the stored message on demand. Bigger messages are shown
# without their body: parsing hostile MIME in a web request has no time limit yet.
PREVIEW_MAX_BYTES = 2 * 1024 * 1024


@admin.register(Mailbox)
class MailboxAdmin(admin.ModelAdmin):
    list_display = ("address", "domain", "is_active", "message_count", "description")
    list_filter = ("is_active", "domain")
    search_fields = ("address", "description")
    readonly_fields = ("domain", "created_at")

    def get_queryset(self, request: HttpRequest) -> QuerySet[Mailbox]:
        queryset: QuerySet[Mailbox] = super().get_queryset(request)
        return queryset.annotate(message_count=Count("deliveries__message", distinct=True))

    @admin.display(description=_("messages"), ordering="message_count")
    def message_count(self, mailbox: Mailbox) -> int:
        return int(getattr(mailbox, "message_count", 0))


class RecipientInline(admin.TabularInline):
    model = InboundRecipient
    fields = ("address", "mailbox", "tag")
    readonly_fields = fields
    extra = 0
    can_delete = False

    def has_add_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False


class SenderCheckInline(admin.StackedInline):
    """The sender-check verdicts of a message, read-only (see README, *Sender checks*)."""

    model = SenderCheck
    fields = (
        ("sender_verified", "from_domain"),
        ("dnsbl_result", "dnsbl_reason"),
        ("iprev_result", "iprev_reason"),
        ("sender_domain_result", "sender_domain_reason"),
        ("spf_result", "spf_reason"),
        ("spf_helo_result", "spf_helo_reason"),
        ("dkim_result", "dkim_reason"),
        ("dmarc_result", "dmarc_policy", "dmarc_reason"),
        ("arc_result", "arc_reason"),
        "details",
        "authentication_results",
    )
    readonly_fields = tuple(
        name for row in fields for name in (row if isinstance(row, tuple) else (row,))
    )
    extra = 0
    can_delete = False

    def has_add_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False


@admin.register(InboundMessage)
class InboundMessageAdmin(admin.ModelAdmin):
    list_display = (
        "received_at",
        "envelope_from_display",
        "recipient_list",
        "subject",
        "size",
        "status",
        "sender_verified",
    )
    list_filter = (
        "status",
        ("recipients__mailbox", admin.RelatedOnlyFieldListFilter),
        "received_at",
        "sender_check__sender_verified",
        "sender_check__spf_result",
        "sender_check__dkim_result",
        "sender_check__dmarc_result",
        "sender_check__iprev_result",
        "sender_check__dnsbl_result",
    )
    search_fields = ("subject", "envelope_from", "recipients__address", "message_id", "queue_id")
    date_hierarchy = "received_at"
    inlines = (RecipientInline, SenderCheckInline)
    actions = ("reprocess",)
    fieldsets = (
        (
            _("Envelope"),
            {
                "fields": (
                    "queue_id",
                    "status",
                    "received_at",
                    "envelope_from_display",
                    ("peer_ip", "peer_port"),
                    "helo",
                    "tls",
                    "size",
                    "raw_download",
                )
            },
        ),
        (
            _("Headers"),
            {"fields": ("message_id", "subject", "from_header", "date_header", "headers")},
        ),
        (_("Body"), {"fields": ("text_body",)}),
        (
            _("Processing"),
            {"fields": ("attempts", "processed_at", "claimed_by", "duplicate_of", "error")},
        ),
    )
    readonly_fields = (
        "queue_id",
        "status",
        "received_at",
        "envelope_from_display",
        "peer_ip",
        "peer_port",
        "helo",
        "tls",
        "size",
        "raw_download",
        "message_id",
        "subject",
        "from_header",
        "date_header",
        "headers",
        "text_body",
        "attempts",
        "processed_at",
        "claimed_by",
        "duplicate_of",
        "error",
    )

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def get_queryset(self, request: HttpRequest) -> QuerySet[InboundMessage]:
        queryset = super().get_queryset(request).select_related("sender_check")
        return queryset.prefetch_related("recipients")

    def has_reprocess_permission(self, request: HttpRequest) -> bool:
        """Re-running receivers has side effects: it takes the change permission, which
        this read-only admin otherwise never uses."""
        opts = self.opts
        return bool(request.user.has_perm(f"{opts.app_label}.change_{opts.model_name}"))

    @admin.action(description=_("Run processing again"), permissions=["reprocess"])
    def reprocess(self, request: HttpRequest, queryset: QuerySet[InboundMessage]) -> None:
        """Send ``message_received`` (and run handlers) again for finished messages."""
        count = dispatch.reprocess(list(queryset.values_list("pk", flat=True)))
        skipped = queryset.count() - count
        self.message_user(
            request,
            ngettext(
                "%(count)d message scheduled for processing.",
                "%(count)d messages scheduled for processing.",
                count,
            )
            % {"count": count},
            messages.SUCCESS,
        )
        if skipped:
            self.message_user(
                request,
                ngettext(
                    "%(count)d message skipped: waiting, being processed or a duplicate.",
                    "%(count)d messages skipped: waiting, being processed or duplicates.",
                    skipped,
                )
                % {"count": skipped},
                messages.WARNING,
            )

    @admin.display(description=_("envelope sender"), ordering="envelope_from")
    def envelope_from_display(self, message: InboundMessage) -> str:
        return message.envelope_from or "<>"

    @admin.display(description=_("sender verified"), boolean=True)
    def sender_verified(self, message: InboundMessage) -> bool | None:
        """``None`` (unknown) when the message has no sender checks."""
        check = getattr(message, "sender_check", None)
        return None if check is None else check.sender_verified

    @admin.display(description=_("recipients"))
    def recipient_list(self, message: InboundMessage) -> str:
        return ", ".join(r.address for r in message.recipients.all())

    @admin.display(description=_("raw message"))
    def raw_download(self, message: InboundMessage) -> str:
        url = reverse("admin:inbound_smtp_inboundmessage_raw", args=[message.pk])
        return format_html('<a href="{}">{}</a>', url, _("Download .eml"))

    def _parsed(self, message: InboundMessage) -> Any:
        with message.open_raw() as handle:
            raw = handle.read(PREVIEW_MAX_BYTES + 1)
        if len(raw) > PREVIEW_MAX_BYTES:
            return None
        try:
            return parsing.parse(raw)
        except (Exception, RecursionError):
            # Hostile structure (hostile-inputs #71): the page must still render.
            return None

    @admin.display(description=_("all headers"))
    def headers(self, message: InboundMessage) -> str:
        with message.open_raw() as handle:
            block = parsing.header_block(handle.read(parsing.MAX_HEADER_BLOCK))
        text = block.decode("utf-8", errors="replace")
        return format_html('<pre style="white-space: pre-wrap">{}</pre>', text)

    @admin.display(description=_("text body"))
    def text_body(self, message: InboundMessage) -> str:
        parsed = self._parsed(message)
        body = None if parsed is None else parsing.text_body(parsed)
        if body is None:
            return str(_("Cannot preview this message; download the raw message."))
        body = body or str(_("(no text/plain part)"))
        return format_html('<pre style="white-space: pre-wrap">{}</pre>', body)

    def get_urls(self) -> list[URLPattern]:
        raw = path(
            "<int:pk>/raw/",
            self.admin_site.admin_view(self.raw_view),
            name="inbound_smtp_inboundmessage_raw",
        )
        return [raw, *super().get_urls()]

    def raw_view(self, request: HttpRequest, pk: int) -> HttpResponseBase:
        """The stored message as an ``.eml`` attachment; staff with view permission only."""
        message = get_object_or_404(InboundMessage, pk=pk)
        if not self.has_view_permission(request, message):
            raise PermissionDenied
        response = FileResponse(
            message.open_raw(),
            as_attachment=True,
            filename=f"{message.queue_id}.eml",
            content_type="message/rfc822",
        )
        response["X-Content-Type-Options"] = "nosniff"
        response["Content-Security-Policy"] = "sandbox"
        return response


__all__ = ["InboundMessageAdmin", "MailboxAdmin", "SenderCheckInline"]
