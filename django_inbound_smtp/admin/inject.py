"""Put a message in from the admin: upload an ``.eml`` or paste a source, with an envelope.

Staff with the ``inbound_smtp.inject_message`` permission only. The envelope and the
bytes go through the same checks as SMTP mail (``_submit``); every refusal is a form
error quoting the reply an SMTP client would have had, never a server error.
"""

from __future__ import annotations

import logging
import re
from typing import TYPE_CHECKING, Any

from django import forms
from django.contrib import messages
from django.core.exceptions import PermissionDenied
from django.core.files.uploadhandler import FileUploadHandler, StopUpload
from django.http import HttpRequest, HttpResponseRedirect
from django.http.response import HttpResponseBase
from django.template.response import TemplateResponse
from django.urls import reverse
from django.utils.translation import gettext as _
from django.utils.translation import gettext_lazy
from django.views.decorators.csrf import csrf_exempt, csrf_protect

from django_inbound_smtp import replies
from django_inbound_smtp.admin._submit import NotAMessage, Prepared, Refused, prepare, resolve
from django_inbound_smtp.admin._submit import submit as submit_message
from django_inbound_smtp.conf import get_settings
from django_inbound_smtp.envelope import ResolvedRecipient, address_key, address_syntax_error
from django_inbound_smtp.exceptions import Rejected, TemporaryFailure
from django_inbound_smtp.models import InboundMessage
from django_inbound_smtp.smtp._trace import new_queue_id
from django_inbound_smtp.spool import is_disk_full

if TYPE_CHECKING:
    from django.contrib.admin import ModelAdmin

__all__ = ["InjectForm", "inject_view", "inject_url_view"]

logger = logging.getLogger(__name__)

PERMISSION = "inject_message"
_SEPARATORS = re.compile(r"[\s,;]+")


def _bare(address: str) -> str:
    address = address.strip()
    if address.startswith("<") and address.endswith(">"):
        address = address[1:-1].strip()
    return address


class InjectForm(forms.Form):
    """The envelope (MAIL FROM, RCPT TO) and the message (a file or a pasted source)."""

    mail_from = forms.CharField(
        label=gettext_lazy("MAIL FROM"),
        required=False,
        max_length=256,
        help_text=gettext_lazy("The envelope sender; empty for the null sender <>."),
    )
    rcpt_to = forms.CharField(
        label=gettext_lazy("RCPT TO"),
        widget=forms.Textarea(attrs={"rows": 3, "cols": 60}),
        help_text=gettext_lazy(
            "One or more envelope recipients, one a line. Each is checked by the recipient "
            "validators, as at RCPT time."
        ),
    )
    eml = forms.FileField(
        label=gettext_lazy("Message file (.eml)"),
        required=False,
        help_text=gettext_lazy("A whole message, headers and body, as saved by a mail client."),
    )
    source = forms.CharField(
        label=gettext_lazy("or paste its source"),
        required=False,
        strip=False,
        widget=forms.Textarea(attrs={"rows": 14, "cols": 90, "style": "font-family: monospace"}),
    )

    def __init__(
        self, *args: Any, secure: bool = False, too_big: bool = False, **kwargs: Any
    ) -> None:
        super().__init__(*args, **kwargs)
        self.secure = secure
        self.too_big = too_big  # the upload was cut off past MAX_MESSAGE_SIZE
        self.prepared: Prepared | None = None
        self.recipients: list[ResolvedRecipient] = []

    def clean_mail_from(self) -> str:
        address = _bare(self.cleaned_data["mail_from"])
        if address and (problem := address_syntax_error(address)):
            raise forms.ValidationError(
                _("%(reply)s (%(problem)s)")
                % {"reply": replies.BAD_SENDER_SYNTAX, "problem": problem}
            )
        return address

    def clean_rcpt_to(self) -> list[str]:
        addresses: list[str] = []
        seen: set[str] = set()
        for item in _SEPARATORS.split(self.cleaned_data["rcpt_to"]):
            address = _bare(item)
            if not address or address_key(address) in seen:
                continue  # a repeated RCPT is one recipient, as over SMTP
            if address_syntax_error(address) and address.lower() != "postmaster":
                raise forms.ValidationError(
                    _("%(address)s: %(reply)s")
                    % {"address": address, "reply": replies.BAD_RECIPIENT_SYNTAX}
                )
            seen.add(address_key(address))
            addresses.append(address)
        if not addresses:
            raise forms.ValidationError(_("Give at least one recipient."))
        if len(addresses) > get_settings().MAX_RECIPIENTS:
            raise forms.ValidationError(str(replies.TOO_MANY_RECIPIENTS))
        return addresses

    def clean(self) -> dict[str, Any]:
        cleaned = super().clean() or {}
        field, raw = self._content(cleaned)
        if raw is not None:
            try:
                self.prepared = prepare(raw)
            except NotAMessage as error:
                self.add_error(field, str(error))
            except Refused as refusal:
                self.add_error(field, str(refusal.reply))
        if "rcpt_to" in cleaned and "mail_from" in cleaned:
            self._resolve(cleaned["mail_from"], cleaned["rcpt_to"])
        return cleaned

    def _content(self, cleaned: dict[str, Any]) -> tuple[str, bytes | None]:
        upload, source = cleaned.get("eml"), cleaned.get("source") or ""
        if self.too_big:
            self.add_error("eml", str(replies.MESSAGE_TOO_BIG))
            return "eml", None
        if upload and source:
            self.add_error(None, _("Upload a file or paste a source, not both."))
            return "eml", None
        if upload:
            limit = get_settings().MAX_MESSAGE_SIZE
            if limit and upload.size > limit:
                self.add_error("eml", str(replies.MESSAGE_TOO_BIG))
                return "eml", None
            return "eml", upload.read()
        if source:
            return "source", source.encode("utf-8", "surrogateescape")
        if "eml" in cleaned:  # an empty upload is reported by the file field itself
            self.add_error(None, _("Upload a message file or paste its source."))
        return "eml", None

    def _resolve(self, mail_from: str, addresses: list[str]) -> None:
        for address in addresses:
            try:
                self.recipients.append(resolve(address, mail_from=mail_from, secure=self.secure))
            except (Rejected, TemporaryFailure) as refusal:
                # What the SMTP client would have read: "550 5.1.1 <a@b>: ... User unknown".
                self.add_error("rcpt_to", str(refusal.reply.about(address)))
            except Exception:
                reference = new_queue_id()
                logger.exception(
                    "recipient check failed for an injected message (ref %s)", reference
                )
                self.add_error(
                    "rcpt_to", str(replies.LOOKUP_FAILURE.about(address).with_reference(reference))
                )


class _SizeCap(FileUploadHandler):
    """Stops reading an upload as soon as it passes ``MAX_MESSAGE_SIZE``, so a huge
    file is never written to a temporary file whole; the form then says it is too big.
    The rest of the request body is read and dropped (the browser gets its answer)."""

    def __init__(self, request: HttpRequest, limit: int) -> None:
        super().__init__(request)
        self.limit = limit
        self.exceeded = False

    def receive_data_chunk(self, raw_data: bytes, start: int) -> bytes:
        if self.limit and start + len(raw_data) > self.limit:
            self.exceeded = True
            raise StopUpload(connection_reset=False)
        return raw_data

    def file_complete(self, file_size: int) -> None:
        return None  # the next handler (Django's) holds the file


def inject_url_view(model_admin: ModelAdmin[InboundMessage]) -> Any:
    """The view to route (inside ``admin_site.admin_view``).

    CSRF is checked inside, after the size cap is installed: the check reads the
    request body, and upload handlers can only be changed before that (Django's
    documented pattern for custom upload handlers)."""

    @csrf_exempt
    def view(request: HttpRequest) -> HttpResponseBase:
        cap = _SizeCap(request, get_settings().MAX_MESSAGE_SIZE)
        try:
            request.upload_handlers = [cap, *request.upload_handlers]
        except AttributeError:
            pass  # a middleware read the body already: Django's own limits apply

        def checked(request: HttpRequest) -> HttpResponseBase:
            return inject_view(model_admin, request, cap=cap)

        return csrf_protect(checked)(request)

    return view


def inject_view(
    model_admin: ModelAdmin[InboundMessage], request: HttpRequest, *, cap: _SizeCap | None = None
) -> HttpResponseBase:
    """The inject page: GET shows the form, POST stores the message and goes to it."""
    opts = model_admin.opts
    if not request.user.has_perm(f"{opts.app_label}.{PERMISSION}"):
        raise PermissionDenied
    secure = request.is_secure()
    if request.method == "POST":
        data, files = request.POST, request.FILES  # reading the body runs the size cap
        too_big = cap is not None and cap.exceeded
        form = InjectForm(data, files, secure=secure, too_big=too_big)
        if form.is_valid() and (pk := _store(model_admin, form, request)) is not None:
            # A message outside what the admin shows this user: back to the list.
            view = "change" if pk else "changelist"
            args = [pk] if pk else []
            return HttpResponseRedirect(
                reverse(f"admin:{opts.app_label}_{opts.model_name}_{view}", args=args)
            )
    else:
        form = InjectForm(secure=secure)
    context = {
        **model_admin.admin_site.each_context(request),
        "title": _("Put a message in"),
        "opts": opts,
        "form": form,
        "max_size": get_settings().MAX_MESSAGE_SIZE,
    }
    return TemplateResponse(request, "admin/inbound_smtp/inboundmessage/inject.html", context)


def _store(
    model_admin: ModelAdmin[InboundMessage], form: InjectForm, request: HttpRequest
) -> int | None:
    """Store the form's message; its pk, 0 when it is stored but outside the messages
    the admin shows this user (its ``get_queryset``), None when it is not stored."""
    assert form.prepared is not None
    try:
        pk = submit_message(
            form.prepared,
            mail_from=form.cleaned_data["mail_from"],
            recipients=form.recipients,
            user_id=request.user.pk,
            secure=form.secure,
        )
    except Exception as error:
        reference = new_queue_id()
        logger.exception("storing an injected message failed (ref %s)", reference)
        reply = replies.INSUFFICIENT_STORAGE if is_disk_full(error) else replies.TEMPORARY_FAILURE
        form.add_error(
            None, _("Not stored: %(reply)s") % {"reply": reply.with_reference(reference)}
        )
        return None
    visible = model_admin.get_queryset(request)
    message = visible.filter(pk=pk).first()
    if message is None:
        messages.success(
            request, _("Stored; processing is scheduled. It is not among the messages you see.")
        )
        return 0
    if message.status == InboundMessage.Status.DUPLICATE and not (
        visible.filter(pk=message.duplicate_of_id or 0).exists()
    ):
        messages.warning(
            request,
            _(
                "Stored as %(queue_id)s, a duplicate of a message stored before (the same "
                "bytes, sender and recipients), so it is not processed again."
            )
            % {"queue_id": message.queue_id},
        )
    elif message.status == InboundMessage.Status.DUPLICATE:
        messages.warning(
            request,
            _(
                "Stored as %(queue_id)s, a duplicate of message %(original)s: the same bytes, "
                "sender and recipients were stored before, so it is not processed again."
            )
            % {"queue_id": message.queue_id, "original": message.duplicate_of_id},
        )
    else:
        messages.success(
            request,
            _("Stored as %(queue_id)s; processing is scheduled.") % {"queue_id": message.queue_id},
        )
    return pk
