"""Read-only inlines of a message: recipients, attachments (with thumbnails), sender checks,
processing history."""

from __future__ import annotations

from typing import Any

from django.contrib import admin
from django.contrib.admin.utils import flatten
from django.contrib.contenttypes.models import ContentType
from django.http import HttpRequest
from django.template.defaultfilters import filesizeformat
from django.urls import reverse
from django.utils.html import format_html
from django.utils.translation import gettext_lazy as _

from django_inbound_smtp.admin._images import is_raster_type
from django_inbound_smtp.admin._page import seconds
from django_inbound_smtp.models import (
    Attachment,
    BounceRecipient,
    InboundRecipient,
    ProcessingAttempt,
    SenderCheck,
)


class _ReadOnly:
    """For inlines of received data: shown, never added or edited (it goes with its
    message)."""

    extra = 0
    can_delete = False

    def has_add_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False


class RecipientInline(_ReadOnly, admin.TabularInline):
    model = InboundRecipient
    fields = (
        "address",
        "mailbox",
        "tag",
        "route",
        "signed_reference",
        "reply_trust",
        "bounce_recipient",
    )
    readonly_fields = fields

    @admin.display(description=_("signed address for"))
    def signed_reference(self, recipient: InboundRecipient) -> str:
        # What a signed reply address names: "<model> <pk>", and the user it was issued
        # to. Escaped: str() of the object is app data, and the pk came from a token.
        if recipient.reply_content_type_id is None:
            return ""
        # From Django's content type cache: no query per row.
        label = ContentType.objects.get_for_id(recipient.reply_content_type_id).name
        user = recipient.reply_user_pk
        if user:
            return format_html("{} #{} (user #{})", label, recipient.reply_object_id, user)
        return format_html("{} #{}", label, recipient.reply_object_id)


class AttachmentInline(_ReadOnly, admin.TabularInline):
    model = Attachment
    fields = (
        "thumbnail",
        "filename",
        "content_type",
        "size_display",
        "inline",
        "content_id",
        "sha256_display",
        "download",
    )
    readonly_fields = fields

    @admin.display(description=_("preview"))
    def thumbnail(self, attachment: Attachment) -> str:
        # Only safe raster images, from our own endpoint (never SVG, never the
        # sender's type unchecked: the endpoint checks the bytes too).
        if not is_raster_type(attachment.content_type):
            return ""
        url = reverse("admin:inbound_smtp_attachment_image", args=[attachment.pk])
        return format_html(
            '<img class="inbound-thumb" src="{}" alt="{}" loading="lazy">', url, attachment.filename
        )

    @admin.display(description=_("size"), ordering="size")
    def size_display(self, attachment: Attachment) -> str:
        return format_html(
            '<span title="{}">{}</span>', attachment.size, filesizeformat(attachment.size)
        )

    @admin.display(description=_("SHA-256"))
    def sha256_display(self, attachment: Attachment) -> str:
        return format_html(
            '<code class="inbound-cut" title="{}">{}</code>', attachment.sha256, attachment.sha256
        )

    @admin.display(description=_("file"))
    def download(self, attachment: Attachment) -> str:
        url = reverse("admin:inbound_smtp_attachment_download", args=[attachment.pk])
        return format_html(
            '<a href="{}" class="inbound-download" download>{}</a>', url, _("Download")
        )


class SenderCheckInline(_ReadOnly, admin.StackedInline):
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
    readonly_fields = tuple(flatten(fields))


class ProcessingAttemptInline(_ReadOnly, admin.TabularInline):
    """Every processing attempt, newest first: when, by whom, how it ended, and the
    tracebacks of a failure (escaped, in ``<pre>``). One query for all of them."""

    model = ProcessingAttempt
    fields = ("number", "started", "finished", "worker", "outcome", "traceback")
    readonly_fields = fields
    ordering = ("-number", "-pk")
    verbose_name_plural = _("processing history")

    @admin.display(description=_("started"))
    def started(self, attempt: ProcessingAttempt) -> str:
        return seconds(attempt.started_at)

    @admin.display(description=_("finished"))
    def finished(self, attempt: ProcessingAttempt) -> str:
        return seconds(attempt.finished_at)

    @admin.display(description=_("traceback"))
    def traceback(self, attempt: ProcessingAttempt) -> str:
        if not attempt.error:
            return "-"
        # format_html escapes it: a traceback quotes whatever the receiver raised.
        return format_html('<pre style="white-space: pre-wrap">{}</pre>', attempt.error)


class BounceRecipientInline(_ReadOnly, admin.TabularInline):
    """What a bounce reports for each recipient of the mail that bounced (README,
    *Kinds of mail*). Values come from the hostile report: shown escaped."""

    model = BounceRecipient
    verbose_name = _("recipient of the mail that bounced")
    verbose_name_plural = _("recipients of the mail that bounced")
    fields = (
        "original_recipient",
        "final_recipient",
        "action",
        "status",
        "diagnostic_code",
        "remote_mta",
        "original_message_id",
    )
    readonly_fields = fields
