"""Forward stored messages to an address through Django's email backend.

Each message goes in its own email from ``DEFAULT_FROM_EMAIL``: a short note (who
forwarded it, the queue id, when and from whom it was received, the staff member's
own words) and the stored message attached as ``message/rfc822``, byte for byte as
stored (``Content-Transfer-Encoding`` 7bit or 8bit; never re-encoded, so the relay
must carry 8-bit data, as every current one does). Needs the view permission and
``inbound_smtp.forward_message``: sending mail out of the mail room is a decision
apart from reading it.
"""

from __future__ import annotations

import email.message
import logging
import re
from email.mime.base import MIMEBase
from typing import TYPE_CHECKING, Any

import django
from django import forms
from django.conf import settings
from django.contrib import admin, messages
from django.core.exceptions import PermissionDenied
from django.core.mail import EmailMessage
from django.db.models import QuerySet
from django.http import HttpRequest, HttpResponseRedirect
from django.http.response import HttpResponseBase
from django.template.response import TemplateResponse
from django.urls import reverse
from django.utils.translation import gettext as _
from django.utils.translation import gettext_lazy, ngettext

from django_inbound_smtp.models import InboundMessage
from django_inbound_smtp.smtp._trace import new_queue_id

if TYPE_CHECKING:
    from django.contrib.admin import ModelAdmin

__all__ = ["ForwardForm", "forward_email", "forward_selected", "forward_view", "rfc822_part"]

logger = logging.getLogger(__name__)

PERMISSION = "forward_message"
#: Messages one form may forward (each is an email of its own).
MAX_MESSAGES = 20
_CONTROL = re.compile(r"[\x00-\x1f\x7f]+")


class ForwardForm(forms.Form):
    to = forms.EmailField(label=gettext_lazy("Forward to"))
    note = forms.CharField(
        label=gettext_lazy("Note"),
        required=False,
        max_length=2000,
        widget=forms.Textarea(attrs={"rows": 4, "cols": 60}),
        help_text=gettext_lazy("Put above the attached message."),
    )


class _Verbatim(str):
    """Message bytes held as text (one character per byte, 8-bit ones as surrogates)
    that encode back to exactly those bytes.

    The stdlib generator writes a string payload of a ``message/*`` part as is (never
    parsed and re-folded, never ``>From``-mangled), but its bytes generator encodes it
    as strict ASCII, which 8-bit mail is not."""

    __slots__ = ()

    def encode(self, encoding: str = "utf-8", errors: str = "strict") -> bytes:
        return str.encode(self, "ascii", "surrogateescape")


def rfc822_part(raw: bytes, *, filename: str) -> email.message.Message:
    """A ``message/rfc822`` attachment whose body is ``raw``, written out unchanged."""
    part: email.message.Message
    if django.VERSION >= (6, 0):
        part = email.message.MIMEPart()  # Django 6 deprecates MIMEBase attachments
        part["Content-Type"] = "message/rfc822"
    else:
        part = MIMEBase("message", "rfc822")  # Django 5.2 takes MIMEBase only
    part["Content-Disposition"] = f'attachment; filename="{filename}"'
    part["Content-Transfer-Encoding"] = "7bit" if raw.isascii() else "8bit"
    part.set_payload(_Verbatim(raw.decode("ascii", "surrogateescape")))
    return part


def forward_email(message: InboundMessage, *, to: str, note: str, user: Any) -> EmailMessage:
    """The email forwarding ``message`` to ``to`` (not sent)."""
    subject = _CONTROL.sub(" ", message.subject).strip()[:200]
    sender = message.envelope_from or "<>"
    received = message.received_at.strftime("%Y-%m-%d %H:%M:%S %Z")
    lines = [note.strip(), ""] if note.strip() else []
    lines.append(
        _(
            "Forwarded by %(user)s from the inbound mail admin: message %(queue_id)s, "
            "received %(received)s from %(sender)s. The message is attached as it was stored."
        )
        % {
            "user": user.get_username(),
            "queue_id": message.queue_id,
            "received": received,
            "sender": sender,
        }
    )
    forwarded = EmailMessage(
        subject=f"Fwd: {subject}" if subject else "Fwd: (no subject)",
        body="\n".join(lines) + "\n",
        from_email=settings.DEFAULT_FROM_EMAIL,
        to=[to],
        reply_to=[user.email] if getattr(user, "email", "") else None,
    )
    # MIMEBase on Django 5.2, MIMEPart on 6.x (rfc822_part): the stubs know one only.
    forwarded.attach(rfc822_part(message.raw_bytes, filename=f"{message.queue_id}.eml"))  # type: ignore[call-overload]
    return forwarded


def _selected(request: HttpRequest) -> list[int]:
    raw = request.POST.get("ids") or request.GET.get("ids") or ""
    return [int(part) for part in raw.split(",") if part.strip().isdigit()][:MAX_MESSAGES]


def forward_view(model_admin: ModelAdmin[InboundMessage], request: HttpRequest) -> HttpResponseBase:
    """GET ``?ids=1,2``: the form; POST: send one email per message, back to the list."""
    opts = model_admin.opts
    if not (
        model_admin.has_view_permission(request)
        and request.user.has_perm(f"{opts.app_label}.{PERMISSION}")
    ):
        raise PermissionDenied
    # Through the admin's queryset: a project narrowing it per user narrows this too.
    visible = model_admin.get_queryset(request)
    chosen = list(visible.filter(pk__in=_selected(request)).order_by("received_at"))
    changelist = reverse(f"admin:{opts.app_label}_{opts.model_name}_changelist")
    if not chosen:
        messages.error(request, _("No message to forward."))
        return HttpResponseRedirect(changelist)
    form = ForwardForm(request.POST if request.method == "POST" else None)
    if request.method == "POST" and form.is_valid():
        sent = _send(chosen, form, request)
        if sent:
            messages.success(
                request,
                ngettext(
                    "%(count)d message forwarded to %(to)s.",
                    "%(count)d messages forwarded to %(to)s.",
                    sent,
                )
                % {"count": sent, "to": form.cleaned_data["to"]},
            )
        if sent == len(chosen):
            return HttpResponseRedirect(changelist)
    context = {
        **model_admin.admin_site.each_context(request),
        "title": _("Forward by email"),
        "opts": opts,
        "form": form,
        "chosen": chosen,
        "ids": ",".join(str(m.pk) for m in chosen),
    }
    return TemplateResponse(request, "admin/inbound_smtp/inboundmessage/forward.html", context)


def _send(chosen: list[InboundMessage], form: ForwardForm, request: HttpRequest) -> int:
    sent = 0
    for message in chosen:
        try:
            forward_email(
                message,
                to=form.cleaned_data["to"],
                note=form.cleaned_data["note"],
                user=request.user,
            ).send()
        except Exception:
            # The email backend failed (relay down, refused): said, never a server error.
            reference = new_queue_id()
            logger.exception("forwarding %s failed (ref %s)", message.queue_id, reference)
            form.add_error(
                None,
                _("%(queue_id)s was not sent: the email backend failed (ref %(ref)s).")
                % {"queue_id": message.queue_id, "ref": reference},
            )
        else:
            sent += 1
            logger.info("forwarded %s by email", message.queue_id, extra={"message_pk": message.pk})
    return sent


@admin.action(description=gettext_lazy("Forward by email…"), permissions=["forward"])
def forward_selected(
    modeladmin: Any, request: HttpRequest, queryset: QuerySet[InboundMessage]
) -> HttpResponseRedirect:
    """Admin action: the forward form for the selected messages (at most MAX_MESSAGES)."""
    pks = list(queryset.values_list("pk", flat=True)[: MAX_MESSAGES + 1])
    if len(pks) > MAX_MESSAGES:
        pks = pks[:MAX_MESSAGES]
        messages.warning(
            request,
            _("At most %(count)d messages are forwarded at once: the first %(count)d are.")
            % {"count": MAX_MESSAGES},
        )
    url = reverse("admin:inbound_smtp_inboundmessage_forward")
    return HttpResponseRedirect(f"{url}?ids={','.join(map(str, pks))}")
