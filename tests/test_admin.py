"""Tier 2: admin pages render, search and filter, and the raw download is safe."""

from __future__ import annotations

import pytest
from django.contrib.auth.models import Permission, User
from django.test import Client
from django.urls import reverse

from django_inbound_smtp import store
from django_inbound_smtp.envelope import ResolvedRecipient
from django_inbound_smtp.models import InboundMessage, Mailbox
from tests.helpers import received_envelope

HOSTILE = (
    b"From: =?utf-8?b?QWRtaW4gPGFkbWluQGJhbmsuY29tPg==?= <evil@x.test>\r\n"
    b"Subject: <script>alert(1)</script> invoice\r\n"
    b"Message-ID: <hostile@x.test>\r\n"
    b"X-Evil: <img src=x onerror=alert(2)>\r\n"
    b"Content-Type: text/plain; charset=utf-8\r\n\r\n"
    b"<script>alert(3)</script> body text\r\n"
)


def _store(
    raw: bytes, *, queue_id: str, to: tuple[str, ...], mailbox: Mailbox | None
) -> InboundMessage:
    envelope = received_envelope(
        queue_id,
        mail_from="sender@x.test",
        recipients=tuple(
            ResolvedRecipient(address=a, mailbox_id=mailbox.pk if mailbox else None) for a in to
        ),
        peer_host="192.0.2.7",
        peer_port=40000,
        helo="client.test",
    )
    return InboundMessage.objects.get(pk=store.store_message(envelope, raw))


@pytest.fixture
def stored(db) -> InboundMessage:
    mailbox = Mailbox.objects.create(address="user@our.test")
    _store(
        b"Subject: other\r\n\r\nx\r\n", queue_id="Q0OTHER", to=("user@our.test",), mailbox=mailbox
    )
    return _store(
        HOSTILE, queue_id="Q1HOSTILE", to=("user@our.test", "bcc@our.test"), mailbox=mailbox
    )


def test_message_list_search_and_filters(staff: Client, stored: InboundMessage) -> None:
    url = reverse("admin:inbound_smtp_inboundmessage_changelist")
    page = staff.get(url)
    assert page.status_code == 200
    content = page.content.decode()
    assert "sender@x.test" in content
    assert "user@our.test, bcc@our.test" in content
    assert "<script>alert(1)" not in content
    for query, expected in [
        ("q=invoice", 1),
        ("q=to:bcc@our.test", 1),
        ("q=hostile@x.test", 1),
        ("q=sender@x.test", 2),
        ("status__exact=received", 2),
    ]:
        result = staff.get(f"{url}?{query}")
        assert result.status_code == 200
        assert result.context["cl"].result_count == expected, query
    mailbox_filter = staff.get(f"{url}?recipients__mailbox__id__exact={Mailbox.objects.get().pk}")
    assert mailbox_filter.context["cl"].result_count == 2


def test_message_detail_is_read_only_and_escapes_everything(
    staff: Client, stored: InboundMessage
) -> None:
    page = staff.get(reverse("admin:inbound_smtp_inboundmessage_change", args=[stored.pk]))
    assert page.status_code == 200
    content = page.content.decode()
    for dangerous in ("<script>alert", "<img src=x", "onerror=alert(2)>"):
        assert dangerous not in content
    assert "&lt;script&gt;alert(3)&lt;/script&gt; body text" in content  # text body, escaped
    assert "X-Evil: &lt;img src=x onerror=alert(2)&gt;" in content  # all headers
    for envelope_value in ("192.0.2.7", "client.test", "Q1HOSTILE"):
        assert envelope_value in content
    assert 'name="_save"' not in content  # no change form
    assert staff.get(reverse("admin:inbound_smtp_inboundmessage_add")).status_code == 403


def test_raw_download_is_an_attachment_never_rendered(
    staff: Client, stored: InboundMessage
) -> None:
    response = staff.get(reverse("admin:inbound_smtp_inboundmessage_raw", args=[stored.pk]))
    assert response.status_code == 200
    assert response["Content-Disposition"] == 'attachment; filename="Q1HOSTILE.eml"'
    assert response["Content-Type"] == "message/rfc822"
    assert response["X-Content-Type-Options"] == "nosniff"
    assert response.getvalue() == stored.raw_bytes
    response.close()


def test_raw_download_needs_staff_with_view_permission(db, stored: InboundMessage) -> None:
    url = reverse("admin:inbound_smtp_inboundmessage_raw", args=[stored.pk])
    anonymous = Client().get(url)
    assert anonymous.status_code == 302
    assert "/login/" in anonymous["Location"]
    clerk = User.objects.create_user("clerk", password="pw", is_staff=True)
    client = Client()
    client.force_login(clerk)
    assert client.get(url).status_code == 403
    clerk.user_permissions.add(Permission.objects.get(codename="view_inboundmessage"))
    allowed = client.get(url)
    assert allowed.status_code == 200
    allowed.close()


def test_mailbox_admin_lists_counts_and_edits(staff: Client, stored: InboundMessage) -> None:
    page = staff.get(reverse("admin:inbound_smtp_mailbox_changelist"))
    assert page.status_code == 200
    (row,) = page.context["cl"].result_list
    assert row.message_count == 2
    added = staff.post(
        reverse("admin:inbound_smtp_mailbox_add"),
        {"address": " Sales@Our.Test ", "is_active": "on", "description": ""},
    )
    assert added.status_code == 302
    assert Mailbox.objects.get(address="sales@our.test").domain == "our.test"
    invalid = staff.post(
        reverse("admin:inbound_smtp_mailbox_add"), {"address": "nope", "is_active": "on"}
    )
    assert invalid.status_code == 200
    assert "Not a usable address" in invalid.content.decode()


def test_hostile_mime_structure_still_renders(staff: Client, db) -> None:
    # hostile-inputs #71: deep nesting made the stdlib parser raise RecursionError.
    nested = b"Subject: nested\r\n"
    for depth in range(3000):
        nested += b'Content-Type: multipart/mixed; boundary="b%d"\r\n\r\n--b%d\r\n' % (depth, depth)
    mailbox = Mailbox.objects.create(address="user@our.test")
    message = _store(nested, queue_id="QNESTED", to=("user@our.test",), mailbox=mailbox)
    page = staff.get(reverse("admin:inbound_smtp_inboundmessage_change", args=[message.pk]))
    assert page.status_code == 200
    assert "Cannot preview this message" in page.content.decode()


HTML_MAIL = (
    b"From: a@x.test\r\nTo: user@our.test\r\nSubject: html\r\nMIME-Version: 1.0\r\n"
    b"Content-Type: multipart/mixed; boundary=b\r\n\r\n"
    b"--b\r\nContent-Type: text/html; charset=utf-8\r\n\r\n"
    b"<p>hi</p><script>alert(4)</script><img src=https://tracker.example/p.gif>\r\n"
    b"--b\r\nContent-Type: text/html; name=evil.html\r\n"
    b"Content-Disposition: attachment; filename=evil.html\r\n\r\n"
    b"<script>alert(5)</script>\r\n"
    b"--b--\r\n"
)


@pytest.fixture
def parsed_html(db) -> InboundMessage:
    from django_inbound_smtp.testing import deliver

    Mailbox.objects.create(address="user@our.test")
    return deliver(HTML_MAIL)


def test_html_body_is_previewed_in_a_sandbox_that_fetches_nothing(
    staff: Client, parsed_html: InboundMessage
) -> None:
    page = staff.get(reverse("admin:inbound_smtp_inboundmessage_change", args=[parsed_html.pk]))
    content = page.content.decode()
    # Only escaped, in the Source tab.
    assert "<script>alert(4)" not in content
    assert "<img src=https://tracker.example" not in content
    frame_url = reverse("admin:inbound_smtp_inboundmessage_html", args=[parsed_html.pk])
    assert 'sandbox="allow-popups allow-popups-to-escape-sandbox"' in content
    assert f'src="{frame_url}"></iframe>' in content
    frame = staff.get(frame_url)
    assert frame.status_code == 200
    csp = frame["Content-Security-Policy"]
    assert csp.startswith("sandbox allow-popups allow-popups-to-escape-sandbox;")
    assert "allow-scripts" not in csp
    assert "allow-same-origin" not in csp
    assert "default-src 'none'" in csp
    assert "script-src" not in csp
    assert "https:" not in csp
    assert frame["X-Content-Type-Options"] == "nosniff"
    assert frame["X-Frame-Options"] == "SAMEORIGIN"  # framed by our own page only
    assert "frame-ancestors 'self'" in csp
    assert b"<script>alert(4)</script>" in frame.content  # inert inside the sandbox


def test_attachments_are_listed_and_downloaded_never_rendered(
    staff: Client, parsed_html: InboundMessage
) -> None:
    [attachment] = parsed_html.attachments.all()
    page = staff.get(reverse("admin:inbound_smtp_inboundmessage_change", args=[parsed_html.pk]))
    content = page.content.decode()
    url = reverse("admin:inbound_smtp_attachment_download", args=[attachment.pk])
    assert "evil.html" in content
    assert url in content
    assert attachment.sha256 in content
    response = staff.get(url)
    assert response["Content-Disposition"] == 'attachment; filename="evil.html"'
    assert response["Content-Type"] == "application/octet-stream"
    assert response["X-Content-Type-Options"] == "nosniff"
    assert response.getvalue() == b"<script>alert(5)</script>"
    response.close()


def test_downloads_need_the_view_permission(parsed_html: InboundMessage) -> None:
    user = User.objects.create_user("clerk", "clerk@x.test", "pw", is_staff=True)
    client = Client()
    client.force_login(user)
    [attachment] = parsed_html.attachments.all()
    urls = [
        reverse("admin:inbound_smtp_attachment_download", args=[attachment.pk]),
        reverse("admin:inbound_smtp_inboundmessage_html", args=[parsed_html.pk]),
    ]
    for url in urls:
        assert client.get(url).status_code == 403
    user.user_permissions.add(Permission.objects.get(codename="view_inboundmessage"))
    client.force_login(User.objects.get(pk=user.pk))
    for url in urls:
        response = client.get(url)
        assert response.status_code == 200
        assert b"<script>alert" in response.getvalue()  # consumed, so the client closes it


def test_messages_not_fully_parsed_can_be_filtered(staff: Client, parsed_html) -> None:
    InboundMessage.objects.filter(pk=parsed_html.pk).update(parse_error="more than 1000 parts")
    url = reverse("admin:inbound_smtp_inboundmessage_changelist")
    assert staff.get(f"{url}?parse_error__isempty=0").context["cl"].result_count == 1
    assert staff.get(f"{url}?parse_error__isempty=1").context["cl"].result_count == 0
    assert staff.get(f"{url}?q=filename:evil.html").context["cl"].result_count == 1
