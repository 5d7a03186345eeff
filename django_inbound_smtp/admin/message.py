"""Admin for received messages: read-only, a page built for reading mail, safe downloads.

Received content is hostile: nothing from a message is ever rendered as HTML in the
admin's own pages. Headers, the text body and the source are shown escaped; the HTML
body only inside a sandboxed frame served with its own Content-Security-Policy
(``_views``, ``_preview``); the raw message and attachments are downloads.
"""

from __future__ import annotations

from functools import partial
from typing import Any

from django.contrib import admin, messages
from django.contrib.admin.utils import flatten_fieldsets
from django.db.models import Exists, OuterRef, QuerySet
from django.http import HttpRequest
from django.urls import URLPattern, path, reverse
from django.utils.html import format_html
from django.utils.translation import gettext_lazy as _
from django.utils.translation import ngettext
from django.views.decorators.clickjacking import xframe_options_sameorigin

from django_inbound_smtp.admin import _page, export, forward, inject
from django_inbound_smtp.admin._columns import MessageColumns
from django_inbound_smtp.admin._views import MessageViews
from django_inbound_smtp.admin.filters import FilterLookups, MailboxFilter, result_filter
from django_inbound_smtp.admin.inlines import (
    AttachmentInline,
    BounceRecipientInline,
    ProcessingAttemptInline,
    RecipientInline,
    SenderCheckInline,
)
from django_inbound_smtp.admin.search import MessageSearchMixin
from django_inbound_smtp.lifecycle import schedule
from django_inbound_smtp.models import Attachment, InboundMessage
from django_inbound_smtp.store import retention


@admin.register(InboundMessage)
class InboundMessageAdmin(
    MessageSearchMixin, FilterLookups, MessageColumns, MessageViews, admin.ModelAdmin
):
    list_display = (
        "received",
        "from_display",
        "recipient_list",
        "subject_display",
        "attachment_flag",
        "size_display",
        "status",
        "kind",
        "sender_verified",
    )
    list_filter = (
        "status",
        "kind",
        "held",
        MailboxFilter,
        "received_at",
        ("parse_error", admin.EmptyFieldListFilter),
        "sender_check__sender_verified",
        result_filter("spf_result", _("SPF")),
        result_filter("dkim_result", _("DKIM")),
        result_filter("dmarc_result", _("DMARC")),
        result_filter("iprev_result", _("reverse DNS")),
        result_filter("dnsbl_result", _("DNSBL")),
    )
    # The search box (shown when search_fields is set) is read by MessageSearchMixin:
    # operators, full-text on PostgreSQL (admin/search.py).
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
    inlines = (
        RecipientInline,
        AttachmentInline,
        SenderCheckInline,
        ProcessingAttemptInline,
        BounceRecipientInline,
    )
    actions = ("reprocess", "hold", "release_hold", export.export_mbox, forward.forward_selected)
    # Fieldsets with an "inbound-tab-<tab>" class go in that tab (_page.TABS); the
    # first is the summary above the tabs.
    fieldsets = (
        (
            None,
            {
                "fields": (
                    "subject",
                    "from_header",
                    "to_display",
                    ("date_display", "received_display"),
                    ("status", "kind_display", "size_display", "raw_download"),
                )
            },
        ),
        (
            _("Envelope"),
            {
                "classes": ("inbound-tab-envelope",),
                "fields": (
                    "queue_id",
                    ("received_via", "injected_by"),
                    "envelope_from_display",
                    ("peer_ip", "peer_port"),
                    "helo",
                    ("tls", "tls_version", "tls_cipher"),
                    "auth_user",
                    "message_id",
                    "in_reply_to",
                ),
            },
        ),
        (
            _("Processing"),
            {
                "classes": ("inbound-tab-processing",),
                "fields": (
                    ("attempts", "processed_display"),
                    "claimed_by",
                    "duplicate_of",
                    "error",
                ),
            },
        ),
        (
            _("Parsing"),
            {
                "classes": ("inbound-tab-processing",),
                "fields": ("parsed_display", "parse_error", "defects"),
            },
        ),
        (
            _("New text of the reply"),
            {"classes": ("inbound-tab-text",), "fields": ("reply_text_display",)},
        ),
        (
            _("Retention"),
            {"classes": ("inbound-tab-processing",), "fields": ("held", "held_by", "held_at")},
        ),
    )

    class Media:
        css = {"all": ("inbound_smtp/message.css",)}
        js = ("inbound_smtp/message.js",)

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def get_readonly_fields(self, request: HttpRequest, obj: Any = None) -> list[str]:
        # Everything shown is read-only: received data is never edited.
        return flatten_fieldsets(self.fieldsets)

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def get_queryset(self, request: HttpRequest) -> QuerySet[InboundMessage]:
        queryset = super().get_queryset(request).select_related("sender_check", "injected_by")
        # The paperclip: one EXISTS per row of the page, in the same query.
        attached = Attachment.objects.filter(message=OuterRef("pk"), inline=False)
        return queryset.prefetch_related("recipients").annotate(has_attachments=Exists(attached))

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

    @admin.display(description=_("to"))
    def to_display(self, message: InboundMessage) -> str:
        return ", ".join(message.header_values("To")) or "-"

    def delete_model(self, request: HttpRequest, obj: InboundMessage) -> None:
        # With its raw file and attachment files (Django's delete would leave them).
        retention.delete_messages([obj.pk])

    def delete_queryset(self, request: HttpRequest, queryset: QuerySet[InboundMessage]) -> None:
        retention.delete_messages(list(queryset.values_list("pk", flat=True)))

    def has_hold_permission(self, request: HttpRequest) -> bool:
        """Holding decides whether data is kept: the change permission, as reprocessing."""
        return self.has_reprocess_permission(request)

    @admin.action(description=_("Hold: keep whatever retention says"), permissions=["hold"])
    def hold(self, request: HttpRequest, queryset: QuerySet[InboundMessage]) -> None:
        """Put a retention hold on the selected messages."""
        count = queryset.hold(by=request.user.get_username())  # type: ignore[attr-defined]
        self.message_user(
            request,
            ngettext("%(count)d message held.", "%(count)d messages held.", count)
            % {"count": count},
            messages.SUCCESS,
        )

    @admin.action(description=_("Release hold"), permissions=["hold"])
    def release_hold(self, request: HttpRequest, queryset: QuerySet[InboundMessage]) -> None:
        """Let retention delete the selected messages again once they are old enough."""
        count = queryset.release_hold()  # type: ignore[attr-defined]
        self.message_user(
            request,
            ngettext("%(count)d hold released.", "%(count)d holds released.", count)
            % {"count": count},
            messages.SUCCESS,
        )

    @admin.display(description=_("kind"))
    def kind_display(self, message: InboundMessage) -> str:
        # The reason quotes the sender's header fields: escaped by format_html.
        if not message.kind_reason:
            return message.get_kind_display()
        return format_html(
            "{} <small>({})</small>", message.get_kind_display(), message.kind_reason
        )

    @admin.display(description=_("Date header"))
    def date_display(self, message: InboundMessage) -> str:
        return _page.seconds(message.date_header)

    @admin.display(description=_("received"))
    def received_display(self, message: InboundMessage) -> str:
        return _page.seconds(message.received_at)

    @admin.display(description=_("processed"))
    def processed_display(self, message: InboundMessage) -> str:
        return _page.seconds(message.processed_at)

    @admin.display(description=_("parsed"))
    def parsed_display(self, message: InboundMessage) -> str:
        return _page.seconds(message.parsed_at)

    @admin.display(description=_("reply text"))
    def reply_text_display(self, message: InboundMessage) -> str:
        # The sender's text: escaped, control and bidi characters shown as escapes.
        if message.parsed_at is None:
            return str(_("(not parsed yet)"))
        if not message.reply_text:
            return str(_("(no new text)"))
        return format_html(
            '<pre id="message-reply-text" class="inbound-pre">{}</pre>',
            _page.visible(message.reply_text),
        )

    @admin.display(description=_("raw message"))
    def raw_download(self, message: InboundMessage) -> str:
        url = reverse("admin:inbound_smtp_inboundmessage_raw", args=[message.pk])
        return format_html('<a href="{}" id="raw-download">{}</a>', url, _("Download .eml"))

    def render_change_form(
        self,
        request: HttpRequest,
        context: dict[str, Any],
        add: bool = False,  # noqa: FBT001, FBT002 - Django's signature
        change: bool = False,  # noqa: FBT001, FBT002
        form_url: str = "",
        obj: InboundMessage | None = None,
    ) -> Any:
        if obj is not None:
            context["page"] = self.page_context(request, obj, context)
        return super().render_change_form(request, context, add, change, form_url, obj)

    def page_context(
        self, request: HttpRequest, message: InboundMessage, context: dict[str, Any]
    ) -> dict[str, Any]:
        """What the tabs of the message page show (templates under
        ``admin/inbound_smtp/inboundmessage/``)."""
        remote = request.GET.get("remote_images") == "1"
        preview = self.preview(request, message, remote=remote) if message.html else None
        summary, tabs, others = _page.group_tabs(
            context["adminform"],
            context["inline_admin_formsets"],
            # A bounce opens on its report; other mail on its body.
            active="bounce"
            if message.kind == message.Kind.BOUNCE
            else "html"
            if preview
            else "text",
        )
        head = _page.raw_head(message)
        html_url = reverse("admin:inbound_smtp_inboundmessage_html", args=[message.pk])
        return {
            "summary": summary,
            "tabs": tabs,
            "other_inlines": others,
            "preview": preview,
            "remote_allowed": remote,
            "html_url": f"{html_url}?remote_images=1" if remote else html_url,
            "text": _page.text_body(message),
            "raw_missing": head is None,
            "raw_headers": _page.raw_headers(head or b""),
            "headers": _page.decoded_headers(message),
            "source": _page.numbered_source(head or b""),
            "source_cut": head is not None and message.size > len(head),
            "source_limit": _page.SOURCE_MAX_BYTES,
            "raw_url": reverse("admin:inbound_smtp_inboundmessage_raw", args=[message.pk]),
        }

    def get_urls(self) -> list[URLPattern]:
        def view(function: Any) -> Any:
            return self.admin_site.admin_view(function)

        return [
            path("<int:pk>/raw/", view(self.raw_view), name="inbound_smtp_inboundmessage_raw"),
            path(
                "<int:pk>/html/",
                # Framed by our own change page: SAMEORIGIN, where Django's clickjacking
                # middleware would send DENY and the preview would not show.
                view(xframe_options_sameorigin(self.html_view)),
                name="inbound_smtp_inboundmessage_html",
            ),
            path("<int:pk>/link/", view(self.link_view), name="inbound_smtp_inboundmessage_link"),
            path(
                "attachment/<int:pk>/",
                view(self.attachment_view),
                name="inbound_smtp_attachment_download",
            ),
            # Not through admin_view: the preview frame's requests carry no session
            # cookie, so the view checks a signed token or goes through admin_view itself.
            path(
                "attachment/<int:pk>/image/",
                self.image_view,
                name="inbound_smtp_attachment_image",
            ),
            path(
                "inject/",
                view(inject.inject_url_view(self)),
                name="inbound_smtp_inboundmessage_inject",
            ),
            path(
                "forward/",
                view(partial(forward.forward_view, self)),
                name="inbound_smtp_inboundmessage_forward",
            ),
            *super().get_urls(),
        ]


__all__ = ["InboundMessageAdmin"]
