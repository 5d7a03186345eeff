"""Tier 2: a project that narrows the message admin's queryset per user narrows every
view of a message with it (raw, preview, images, attachments, links, forward, export,
inject result), not only the list and the change page Django builds.

The narrowing is what a project writes: ``get_queryset`` overridden on the registered
admin (here, per test, on the instance), hiding messages whose subject is "hidden".
"""

from __future__ import annotations

from email.message import EmailMessage
from typing import Any

import pytest
from django.contrib import admin
from django.contrib.auth.models import User
from django.core.files.uploadedfile import SimpleUploadedFile
from django.test import Client
from django.urls import reverse

from django_inbound_smtp.admin._images import sign_image
from django_inbound_smtp.lifecycle import schedule
from django_inbound_smtp.models import InboundMessage, Mailbox
from django_inbound_smtp.testing import deliver
from tests.test_admin_page import PNG

HIDDEN = "hidden"


@pytest.fixture
def narrowed(monkeypatch: pytest.MonkeyPatch) -> None:
    model_admin = admin.site._registry[InboundMessage]
    original = model_admin.get_queryset

    def get_queryset(request: Any) -> Any:
        return original(request).exclude(subject=HIDDEN)

    monkeypatch.setattr(model_admin, "get_queryset", get_queryset)


@pytest.fixture
def boss(db: None) -> User:
    return User.objects.create_superuser("boss", "boss@x.test", "pw")


@pytest.fixture
def staff(boss: User) -> Client:
    client = Client()
    client.force_login(boss)
    return client


def _mail(subject: str) -> InboundMessage:
    message = EmailMessage()
    message["From"] = "sender@x.test"
    message["To"] = "user@our.test"
    message["Subject"] = subject
    message.set_content("plain")
    message.add_alternative('<p><img src="cid:logo@x.test"></p>', subtype="html")
    html = message.get_body(preferencelist=("html",))
    assert isinstance(html, EmailMessage)
    html.add_related(PNG, "image", "png", cid="<logo@x.test>", filename="logo.png")
    message.add_attachment(b"secret data", "application", "octet-stream", filename="a.bin")
    return deliver(message, to=["user@our.test"])


@pytest.fixture
def hidden(db: None) -> InboundMessage:
    Mailbox.objects.create(address="user@our.test")
    _mail("shown")  # one the user does see, so the views are not empty for everyone
    return _mail(HIDDEN)


def _urls(message: InboundMessage) -> list[str]:
    [image] = message.attachments.filter(content_id="logo@x.test")
    [download] = message.attachments.filter(filename="a.bin")
    return [
        reverse("admin:inbound_smtp_inboundmessage_raw", args=[message.pk]),
        reverse("admin:inbound_smtp_inboundmessage_html", args=[message.pk]),
        reverse("admin:inbound_smtp_inboundmessage_link", args=[message.pk])
        + "?url=https://example.org/",
        reverse("admin:inbound_smtp_attachment_download", args=[download.pk]),
        reverse("admin:inbound_smtp_attachment_image", args=[image.pk]),
    ]


def test_every_message_view_goes_through_the_admin_queryset(
    staff: Client, hidden: InboundMessage, narrowed: None
) -> None:
    change = reverse("admin:inbound_smtp_inboundmessage_change", args=[hidden.pk])
    assert staff.get(change).status_code == 302  # Django's own view: "does not exist"
    for url in _urls(hidden):
        assert staff.get(url).status_code == 404, url


def test_the_views_still_serve_a_message_in_the_queryset(
    staff: Client, hidden: InboundMessage
) -> None:
    for url in _urls(hidden):
        response = staff.get(url)
        assert response.status_code == 200, url
        assert response.getvalue()  # consumed, so the client closes it


def test_an_image_token_is_checked_against_its_users_queryset(
    boss: User, hidden: InboundMessage, narrowed: None
) -> None:
    # A token signed while the message was visible (or leaked from another user's frame).
    [image] = hidden.attachments.filter(content_id="logo@x.test")
    url = reverse("admin:inbound_smtp_attachment_image", args=[image.pk])
    assert Client().get(f"{url}?t={sign_image(image.pk, boss.pk)}").status_code == 404


def test_forward_cannot_send_a_message_outside_the_queryset(
    staff: Client, hidden: InboundMessage, narrowed: None, mailoutbox: list[Any]
) -> None:
    url = reverse("admin:inbound_smtp_inboundmessage_forward")
    page = staff.get(f"{url}?ids={hidden.pk}")
    assert page.status_code == 302  # "No message to forward."
    staff.post(url, {"ids": str(hidden.pk), "to": "dev@example.net"})
    assert mailoutbox == []


def test_export_leaves_out_a_message_outside_the_queryset(
    staff: Client, hidden: InboundMessage, narrowed: None
) -> None:
    shown = InboundMessage.objects.get(subject="shown")
    response = staff.post(
        reverse("admin:inbound_smtp_inboundmessage_changelist"),
        {"action": "export_mbox", "_selected_action": [shown.pk, hidden.pk]},
    )
    data = b"".join(response.streaming_content)  # type: ignore[attr-defined]
    assert b"Subject: shown" in data
    assert b"Subject: hidden" not in data


@pytest.mark.django_db(transaction=True)
def test_an_injected_message_outside_the_queryset_is_not_shown(
    transactional_db: None, narrowed: None
) -> None:
    Mailbox.objects.create(address="user@our.test")
    client = Client()
    client.force_login(User.objects.create_superuser("boss", "boss@x.test", "pw"))
    source = b"From: a@example.org\r\nSubject: hidden\r\n\r\nbody\r\n"
    upload = SimpleUploadedFile("m.eml", source, content_type="message/rfc822")
    response = client.post(
        reverse("admin:inbound_smtp_inboundmessage_inject"),
        {"mail_from": "a@example.org", "rcpt_to": "user@our.test", "eml": upload},
    )
    schedule.drain()
    [stored] = InboundMessage.objects.all()
    assert response.status_code == 302
    assert response["Location"] == reverse("admin:inbound_smtp_inboundmessage_changelist")
    shown = [str(m) for m in response.wsgi_request._messages]  # type: ignore[attr-defined]
    assert shown == ["Stored; processing is scheduled. It is not among the messages you see."]
    assert stored.queue_id not in shown[0]
