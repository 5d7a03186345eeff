"""The extra views of a message: raw and attachment downloads, the HTML preview frame,
its inline images and the warning page its links go through."""

from __future__ import annotations

import copy
from typing import TYPE_CHECKING
from urllib.parse import urlencode, urlsplit

from django.contrib.auth import get_user_model
from django.core.exceptions import PermissionDenied
from django.http import FileResponse, Http404, HttpRequest, HttpResponse
from django.http.response import HttpResponseBase
from django.shortcuts import get_object_or_404
from django.template.response import TemplateResponse
from django.urls import reverse
from django.utils.translation import gettext as _

from django_inbound_smtp.admin import _images
from django_inbound_smtp.admin._downloads import download
from django_inbound_smtp.admin._preview import Preview, external_target, rewrite
from django_inbound_smtp.models import Attachment, InboundMessage

__all__ = ["MessageViews", "preview_csp"]

# Shown on the warning page; a longer "link" is shown cut, and not offered.
MAX_LINK_LENGTH = 8192


def preview_csp(*, allow_remote: bool) -> str:
    """The policy of the preview frame: no script, nothing fetched but our own images
    (and remote ones when staff asked for them), links only as new tabs."""
    images = "'self' data: https: http:" if allow_remote else "'self' data:"
    return (
        "sandbox allow-popups allow-popups-to-escape-sandbox; default-src 'none'; "
        f"style-src 'unsafe-inline'; img-src {images}; base-uri 'none'; "
        "form-action 'none'; frame-ancestors 'self'"
    )


if TYPE_CHECKING:
    from django.contrib.admin import ModelAdmin

    _Admin = ModelAdmin[InboundMessage]
else:
    _Admin = object


class MessageViews(_Admin):
    """Views mixed into ``InboundMessageAdmin``; each checks the view permission on the
    message (``ModelAdmin.has_view_permission``) and finds it through the admin's
    ``get_queryset``, so a project that narrows that queryset per user narrows these
    views too."""

    def _viewable(self, request: HttpRequest, pk: int) -> InboundMessage:
        message = get_object_or_404(self.get_queryset(request), pk=pk)
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

    def preview(self, request: HttpRequest, message: InboundMessage, *, remote: bool) -> Preview:
        """The HTML body rewritten for the frame, with image URLs for ``request.user``."""
        images = {
            a.content_id: a
            for a in message.attachments.all()
            if a.content_id and _images.is_raster_type(a.content_type)
        }
        folded = {content_id.lower(): a for content_id, a in images.items()}
        image_name = "admin:inbound_smtp_attachment_image"
        link_base = reverse("admin:inbound_smtp_inboundmessage_link", args=[message.pk])

        def image_url(content_id: str) -> str | None:
            attachment = images.get(content_id) or folded.get(content_id.lower())
            if attachment is None:
                return None
            token = _images.sign_image(attachment.pk, request.user.pk)
            return f"{reverse(image_name, args=[attachment.pk])}?{urlencode({'t': token})}"

        def link_url(target: str) -> str:
            return f"{link_base}?{urlencode({'url': target})}"

        return rewrite(message.html, image_url=image_url, link_url=link_url, allow_remote=remote)

    def html_view(self, request: HttpRequest, pk: int) -> HttpResponseBase:
        """The HTML body for the sandboxed frame; ``?remote_images=1`` lets remote images
        load for this response only."""
        message = self._viewable(request, pk)
        remote = request.GET.get("remote_images") == "1"
        preview = self.preview(request, message, remote=remote)
        response = HttpResponse(preview.html, content_type="text/html; charset=utf-8")
        response["Content-Security-Policy"] = preview_csp(allow_remote=remote)
        response["X-Content-Type-Options"] = "nosniff"
        response["Referrer-Policy"] = "no-referrer"
        return response

    def image_view(self, request: HttpRequest, pk: int) -> HttpResponseBase:
        """A safe raster attachment shown inline (the preview's ``cid:`` images, the
        thumbnails). With the preview's token (``?t=``) the user it names is checked;
        without it, the session's user, through the admin's login."""
        token = request.GET.get("t")
        if token is None:
            return self.admin_site.admin_view(self._session_image)(request, pk)
        user_pk = _images.unsign_image(token, pk)
        user = get_user_model()._default_manager.filter(pk=user_pk).first() if user_pk else None
        opts = self.opts
        allowed = (
            user is not None
            and user.is_active
            and user.is_staff
            and (
                user.has_perm(f"{opts.app_label}.view_{opts.model_name}")
                or user.has_perm(f"{opts.app_label}.change_{opts.model_name}")
            )
        )
        if not allowed or user is None:  # (None is not allowed: for the type checker)
            raise PermissionDenied
        attachment = get_object_or_404(Attachment, pk=pk)
        # The queryset the admin gives the token's user, not the cookie-less request's.
        as_user = copy.copy(request)
        as_user.user = user
        if not self.get_queryset(as_user).filter(pk=attachment.message_id).exists():
            raise Http404("no such message")
        return _inline_image(attachment)

    def _session_image(self, request: HttpRequest, pk: int) -> HttpResponseBase:
        attachment = get_object_or_404(Attachment, pk=pk)
        self._viewable(request, attachment.message_id)
        return _inline_image(attachment)

    def link_view(self, request: HttpRequest, pk: int) -> HttpResponseBase:
        """The warning page of a link in the preview: it shows where the link goes and
        offers it as a plain link. Never a redirect."""
        message = self._viewable(request, pk)
        given = request.GET.get("url", "")[:MAX_LINK_LENGTH]
        target = external_target(given)
        host = urlsplit(target).hostname if target else None
        context = {
            **self.admin_site.each_context(request),
            "title": _("You are leaving the admin"),
            "opts": self.opts,
            "original": message,
            "given": given,
            "target": target,
            "host": host,
            "ascii_host": _ascii_host(host),
        }
        response = TemplateResponse(
            request, "admin/inbound_smtp/inboundmessage/leave.html", context
        )
        response["Referrer-Policy"] = "no-referrer"
        return response


def _ascii_host(host: str | None) -> str | None:
    """The punycode form of an internationalized host, so look-alikes show (or None)."""
    if not host or host.isascii():
        return None
    try:
        return host.encode("idna").decode("ascii")
    except UnicodeError:
        return None


def _inline_image(attachment: Attachment) -> HttpResponseBase:
    if not _images.is_raster_type(attachment.content_type):
        raise Http404("not an image shown inline")
    handle = attachment.open()
    kind = _images.sniff_raster(handle.read(_images.SNIFF_BYTES), attachment.content_type)
    if kind is None:
        handle.close()
        raise Http404("not an image shown inline")
    handle.seek(0)
    response = FileResponse(handle, content_type=kind)
    response["X-Content-Type-Options"] = "nosniff"
    response["Content-Security-Policy"] = "default-src 'none'; sandbox"
    response["Cache-Control"] = "private, max-age=3600"
    return response
