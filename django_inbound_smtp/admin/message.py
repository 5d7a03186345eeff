"""Admin for received messages: read-only, with a safe detail view and raw download.

Received content is hostile: nothing from a message is ever rendered as HTML. Header
values and the text body are shown escaped inside ``<pre>``; the raw message is a
download with ``Content-Disposition: attachment`` and ``nosniff``, never inline.
"""

from __future__ import annotations

from functools import partial
from typing import Any

from django.contrib import admin, messages
from django.contrib.admin.utils import flatten_fieldsets
from django.core.exceptions import PermissionDenied
from django.db.models import QuerySet
from django.http import HttpRequest, HttpResponse
from django.http.response import HttpResponseBase
from django.shortcuts import get_object_or_404
from django.urls import URLPattern, path, reverse
from django.utils.html import format_html
from django.utils.translation import gettext_lazy as _
from django.utils.translation import ngettext
from django.views.decorators.clickjacking import xframe_options_sameorigin

from django_inbound_smtp import parsing
from django_inbound_smtp.admin import export, forward, inject
from django_inbound_smtp.admin._downloads import download
from django_inbound_smtp.admin.inlines import AttachmentInline, RecipientInline, SenderCheckInline
from django_inbound_smtp.lifecycle import schedule
from django_inbound_smtp.models import Attachment, InboundMessage

# The admin detail parses the stored message on demand. Bigger messages are shown
# without their body: parsing hostile MIME in a web request has no time limit yet.
PREVIEW_MAX_BYTES = 2 * 1024 * 1024


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
        ("parse_error", admin.EmptyFieldListFilter),
        "sender_check__sender_verified",
        "sender_check__spf_result",
        "sender_check__dkim_result",
        "sender_check__dmarc_result",
        "sender_check__iprev_result",
        "sender_check__dnsbl_result",
    )
    search_fields = (
        "subject",
        "envelope_from",
        "from_header",
        "recipients__address",
        "message_id",
        "queue_id",
        "attachments__filename",
    )
    date_hierarchy = "received_at"
    inlines = (RecipientInline, AttachmentInline, SenderCheckInline)
    actions = ("reprocess", export.export_mbox, forward.forward_selected)
    fieldsets = (
        (
            _("Envelope"),
            {
                "fields": (
                    "queue_id",
                    "status",
                    "received_at",
                    ("received_via", "injected_by"),
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
            {
                "fields": (
                    "message_id",
                    "subject",
                    "from_header",
                    "date_header",
                    "in_reply_to",
                    "header_table",
                )
            },
        ),
        (
            _("Body"),
            {"fields": ("text_body", "html_preview", "parsed_at", "parse_error", "defects")},
        ),
        (
            _("Processing"),
            {"fields": ("attempts", "processed_at", "claimed_by", "duplicate_of", "error")},
        ),
    )

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def get_readonly_fields(self, request: HttpRequest, obj: Any = None) -> list[str]:
        # Everything shown is read-only: received data is never edited.
        return flatten_fieldsets(self.fieldsets)

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def get_queryset(self, request: HttpRequest) -> QuerySet[InboundMessage]:
        queryset = super().get_queryset(request).select_related("sender_check", "injected_by")
        return queryset.prefetch_related("recipients")

    def has_reprocess_permission(self, request: HttpRequest) -> bool:
        """Re-running receivers has side effects: it takes the change permission, which
        this read-only admin otherwise never uses."""
        opts = self.opts
        return bool(request.user.has_perm(f"{opts.app_label}.change_{opts.model_name}"))

    @admin.action(description=_("Run processing again"), permissions=["reprocess"])
    def reprocess(self, request: HttpRequest, queryset: QuerySet[InboundMessage]) -> None:
        """Send ``message_received`` (and run handlers) again for finished messages."""
        count = schedule.reprocess(list(queryset.values_list("pk", flat=True)))
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

    def has_forward_permission(self, request: HttpRequest) -> bool:
        """Forwarding sends mail out: the view permission and ``forward_message``."""
        opts = self.opts
        return self.has_view_permission(request) and bool(
            request.user.has_perm(f"{opts.app_label}.{forward.PERMISSION}")
        )

    @admin.display(description=_("envelope sender"), ordering="envelope_from")
    def envelope_from_display(self, message: InboundMessage) -> str:
        sender = message.envelope_from or "<>"
        if message.received_via != InboundMessage.ReceivedVia.ADMIN:
            return sender
        user = message.injected_by
        who = user.get_username() if user is not None else _("a deleted user")
        return format_html("{} <small>({} {})</small>", sender, _("injected by"), who)

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
    def header_table(self, message: InboundMessage) -> str:
        if message.parsed_at is None:
            # Not parsed yet: the header block as received.
            with message.open_raw() as handle:
                block = parsing.header_block(handle.read(parsing.MAX_HEADER_BLOCK))
            text = block.decode("utf-8", errors="replace")
        else:
            text = "\n".join(f"{name}: {decoded}" for name, _raw, decoded in message.headers)
        return format_html('<pre style="white-space: pre-wrap">{}</pre>', text)

    @admin.display(description=_("text body"))
    def text_body(self, message: InboundMessage) -> str:
        if message.parsed_at is not None:
            body: str | None = message.text
        else:
            parsed = self._parsed(message)
            body = None if parsed is None else parsing.text_body(parsed)
        if body is None:
            return str(_("Cannot preview this message; download the raw message."))
        body = body or str(_("(no text/plain part)"))
        return format_html('<pre style="white-space: pre-wrap">{}</pre>', body)

    @admin.display(description=_("HTML body"))
    def html_preview(self, message: InboundMessage) -> str:
        if not message.html:
            return "-"
        # A sandboxed frame: no scripts, no forms, no same-origin access; the page it
        # loads also forbids every fetch, so remote images (tracking pixels) stay out.
        url = reverse("admin:inbound_smtp_inboundmessage_html", args=[message.pk])
        return format_html(
            '<iframe sandbox="" src="{}" style="width: 100%; height: 30em; border: 1px solid #ccc">'
            "</iframe>",
            url,
        )

    def get_urls(self) -> list[URLPattern]:
        raw = path(
            "<int:pk>/raw/",
            self.admin_site.admin_view(self.raw_view),
            name="inbound_smtp_inboundmessage_raw",
        )
        html = path(
            "<int:pk>/html/",
            # Framed by our own change page: SAMEORIGIN, where Django's clickjacking
            # middleware would send DENY and the preview would not show.
            self.admin_site.admin_view(xframe_options_sameorigin(self.html_view)),
            name="inbound_smtp_inboundmessage_html",
        )
        attachment = path(
            "attachment/<int:pk>/",
            self.admin_site.admin_view(self.attachment_view),
            name="inbound_smtp_attachment_download",
        )
        mail_in = path(
            "inject/",
            self.admin_site.admin_view(inject.inject_url_view(self)),
            name="inbound_smtp_inboundmessage_inject",
        )
        forward_out = path(
            "forward/",
            self.admin_site.admin_view(partial(forward.forward_view, self)),
            name="inbound_smtp_inboundmessage_forward",
        )
        return [raw, html, attachment, mail_in, forward_out, *super().get_urls()]

    def _viewable(self, request: HttpRequest, pk: int) -> InboundMessage:
        message = get_object_or_404(InboundMessage, pk=pk)
        if not self.has_view_permission(request, message):
            raise PermissionDenied
        return message

    def raw_view(self, request: HttpRequest, pk: int) -> HttpResponseBase:
        """The stored message as an ``.eml`` attachment; staff with view permission only."""
        message = self._viewable(request, pk)
        return download(
            message.open_raw(), filename=f"{message.queue_id}.eml", content_type="message/rfc822"
        )

    def attachment_view(self, request: HttpRequest, pk: int) -> HttpResponseBase:
        """One attachment as a download (``application/octet-stream``, never rendered)."""
        attachment = get_object_or_404(Attachment, pk=pk)
        self._viewable(request, attachment.message_id)
        return download(
            attachment.open(),
            filename=attachment.filename,
            content_type="application/octet-stream",
        )

    def html_view(self, request: HttpRequest, pk: int) -> HttpResponseBase:
        """The HTML body for the sandboxed preview frame: no scripts, nothing fetched."""
        message = self._viewable(request, pk)
        response = HttpResponse(message.html, content_type="text/html; charset=utf-8")
        response["Content-Security-Policy"] = (
            "sandbox; default-src 'none'; style-src 'unsafe-inline'; img-src data:; "
            "frame-ancestors 'self'"
        )
        response["X-Content-Type-Options"] = "nosniff"
        response["Referrer-Policy"] = "no-referrer"
        return response


__all__ = ["InboundMessageAdmin"]
