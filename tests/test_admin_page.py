"""Tier 2: the message page built for reading mail (tabs, inline images, remote
images, links) and the list layout. Messages go through the real pipeline
(``django_inbound_smtp.testing.deliver``); pages through Django's test client."""

from __future__ import annotations

import re
import struct
import time
import zlib
from email.message import EmailMessage
from html import unescape
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
from django.contrib.auth.models import Permission, User
from django.core import signing
from django.db import connection
from django.test import Client
from django.test.utils import CaptureQueriesContext
from django.urls import reverse

from django_inbound_smtp.admin._page import SOURCE_MAX_BYTES, group_tabs
from django_inbound_smtp.models import Attachment, InboundMessage, Mailbox
from django_inbound_smtp.testing import deliver, running_server
from tests.helpers import GuardedSMTP


def _png() -> bytes:
    """A real 1x1 PNG."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return (
            struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
        )

    header = struct.pack(">IIBBBBB", 1, 1, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(b"\x00\xff\x00\x00"))
        + chunk(b"IEND", b"")
    )


PNG = _png()
SVG = b'<svg xmlns="http://www.w3.org/2000/svg" onload="alert(1)"><script>alert(2)</script></svg>'

INLINE_HTML = (
    '<p>Logo: <img id="a" src="CID:logo@x.test"> again <img id="b" src="cid:%3Clogo@x.test%3E">'
    '<img id="c" src="cid:pic@x.test"><img id="d" src="cid:fake@x.test">'
    '<img id="e" src="cid:missing@x.test"></p>'
)
REMOTE_HTML = (
    '<table><tr><td background="http://t.example/bg.gif">'
    '<img src="https://tracker.example/p.gif" alt="pixel">'
    "<p style=\"background: url('https://t.example/s.png')\">styled</p>"
    '<img src="//t.example/relative.gif"></td></tr></table>'
)
LINK_HTML = (
    '<a id="out" href="https://example.org/path?a=1&amp;b=2">out</a>'
    '<a id="js" href="javascript:alert(1)">js</a>'
    '<a id="js2" href="JaVa&#x09;ScRiPt:alert(2)">js2</a>'
    '<a id="data" href="data:text/html,&lt;script&gt;alert(3)&lt;/script&gt;">data</a>'
    '<a id="rel" href="/admin/">relative</a>'
    '<a id="frag" href="#top" target="_top">top</a>'
    '<a id="mail" href="mailto:someone@example.org">mail</a>'
    '<base href="https://evil.example/"><meta http-equiv="refresh" content="0;url=https://x.test">'
)


def _html_mail(html: str, *, subject: str = "html") -> EmailMessage:
    message = EmailMessage()
    message["From"] = "Sender <sender@x.test>"
    message["To"] = "user@our.test"
    message["Subject"] = subject
    message.set_content("plain text part")
    message.add_alternative(html, subtype="html")
    return message


@pytest.fixture
def mailbox(db) -> Mailbox:
    return Mailbox.objects.create(address="user@our.test")


@pytest.fixture
def clerk(db) -> tuple[User, Client]:
    """Staff without the view permission on messages."""
    user = User.objects.create_user("clerk", "clerk@x.test", "pw", is_staff=True)
    client = Client()
    client.force_login(user)
    return user, client


@pytest.fixture
def inline_images(mailbox: Mailbox) -> InboundMessage:
    message = _html_mail(INLINE_HTML)
    html_part = message.get_body(preferencelist=("html",))
    assert isinstance(html_part, EmailMessage)
    html_part.add_related(PNG, "image", "png", cid="<logo@x.test>", filename="logo.png")
    html_part.add_related(SVG, "image", "svg+xml", cid="<pic@x.test>", filename="pic.svg")
    html_part.add_related(b"<html>not a png", "image", "png", cid="<fake@x.test>")
    return deliver(message, to=["user@our.test"])


def _page(client: Client, message: InboundMessage, query: str = "") -> str:
    url = reverse("admin:inbound_smtp_inboundmessage_change", args=[message.pk])
    response = client.get(f"{url}{query}")
    assert response.status_code == 200
    return response.content.decode()


def _frame(client: Client, message: InboundMessage, query: str = "") -> Any:
    url = reverse("admin:inbound_smtp_inboundmessage_html", args=[message.pk])
    response = client.get(f"{url}{query}")
    assert response.status_code == 200
    return response


def _img_src(html: str, element_id: str) -> str | None:
    tag = re.search(rf'<img [^>]*id="{element_id}"[^>]*>', html)
    assert tag is not None, element_id
    src = re.search(r' src="([^"]*)"', tag.group())
    return unescape(src.group(1)) if src else None


def test_cid_images_point_at_our_endpoint_which_serves_the_png(
    staff: Client, inline_images: InboundMessage
) -> None:
    logo = inline_images.attachments.get(content_id="logo@x.test")
    frame = _frame(staff, inline_images).content.decode()
    image_path = reverse("admin:inbound_smtp_attachment_image", args=[logo.pk])
    first, second = _img_src(frame, "a"), _img_src(frame, "b")
    assert first is not None
    assert first.startswith(f"{image_path}?t=")
    assert second is not None
    assert second.startswith(f"{image_path}?t=")
    # The frame is sandboxed, so the browser sends no session cookie: the signed URL
    # alone must be enough (an anonymous client here).
    image = Client().get(first)
    assert image.status_code == 200
    assert image["Content-Type"] == "image/png"
    assert image["X-Content-Type-Options"] == "nosniff"
    assert image["Content-Security-Policy"] == "default-src 'none'; sandbox"
    assert image.getvalue() == PNG
    # Staff on the page itself (thumbnails) use their session.
    thumbnail = staff.get(image_path)
    assert thumbnail.status_code == 200
    assert thumbnail.getvalue() == PNG


def test_svg_and_fake_images_are_never_served_inline(
    staff: Client, inline_images: InboundMessage
) -> None:
    frame = _frame(staff, inline_images).content.decode()
    assert _img_src(frame, "c") is None  # the SVG's cid: dropped
    assert _img_src(frame, "d") is not None  # declared PNG: linked, but ...
    assert _img_src(frame, "e") is None  # no such part
    for content_id in ("pic@x.test", "fake@x.test"):
        attachment = inline_images.attachments.get(content_id=content_id)
        url = reverse("admin:inbound_smtp_attachment_image", args=[attachment.pk])
        response = staff.get(url)
        assert response.status_code == 404, content_id  # ... its bytes are no PNG
    page = _page(staff, inline_images)
    assert 'data-inline-images="3"' in page  # a, b and d
    logo = inline_images.attachments.get(content_id="logo@x.test")
    svg = inline_images.attachments.get(content_id="pic@x.test")
    assert reverse("admin:inbound_smtp_attachment_image", args=[logo.pk]) in page  # thumbnail
    assert reverse("admin:inbound_smtp_attachment_image", args=[svg.pk]) not in page


def test_image_tokens_are_checked(
    staff: Client, inline_images: InboundMessage, clerk: tuple[User, Client], monkeypatch
) -> None:
    logo = inline_images.attachments.get(content_id="logo@x.test")
    svg = inline_images.attachments.get(content_id="pic@x.test")
    url = _img_src(_frame(staff, inline_images).content.decode(), "a")
    assert url is not None
    token = parse_qs(urlsplit(url).query)["t"][0]
    other = reverse("admin:inbound_smtp_attachment_image", args=[svg.pk])
    assert Client().get(f"{other}?t={token}").status_code == 403  # another attachment
    path = reverse("admin:inbound_smtp_attachment_image", args=[logo.pk])
    assert Client().get(f"{path}?t={token}x").status_code == 403  # tampered
    # A token made for staff without the view permission.
    user, client = clerk
    frame_for_clerk = signing.TimestampSigner(salt="django_inbound_smtp.admin.inline-image")
    assert (
        Client().get(f"{path}?t={frame_for_clerk.sign(f'{logo.pk}:{user.pk}')}").status_code == 403
    )
    # A token outlives its hour only by an hour's wait: move the signer's clock instead.
    monkeypatch.setattr(time, "time", lambda: 0.0)  # signing reads time.time()
    old = frame_for_clerk.sign(f"{logo.pk}:{User.objects.get(username='boss').pk}")
    monkeypatch.undo()
    assert Client().get(f"{path}?t={old}").status_code == 403
    # The user named by a valid token loses the right: refused from then on.
    User.objects.filter(username="boss").update(is_staff=False)
    assert Client().get(url).status_code == 403


def test_remote_images_are_counted_and_blocked_until_asked_for(
    staff: Client, mailbox: Mailbox
) -> None:
    message = deliver(_html_mail(REMOTE_HTML), to=["user@our.test"])
    page = _page(staff, message)
    assert 'data-remote-images-blocked="4"' in page
    assert "4 remote images blocked." in page
    assert 'id="load-remote-images"' in page
    assert "tracker.example" not in page  # the page itself names none of them
    blocked = _frame(staff, message)
    csp = blocked["Content-Security-Policy"]
    assert "img-src 'self' data:;" in csp
    assert "https:" not in csp
    assert "http:" not in csp
    html = blocked.content.decode()
    assert ' src="https://tracker.example/p.gif"' not in html
    assert 'data-blocked-src="https://tracker.example/p.gif"' in html
    assert 'data-blocked-background="http://t.example/bg.gif"' in html
    assert "url(about:invalid)" in html
    assert "t.example/s.png" not in html

    loaded_page = _page(staff, message, "?remote_images=1")
    assert 'data-remote-images-blocked="0"' in loaded_page
    assert 'id="block-remote-images"' in loaded_page
    frame_url = reverse("admin:inbound_smtp_inboundmessage_html", args=[message.pk])
    assert f'src="{frame_url}?remote_images=1"' in loaded_page
    loaded = _frame(staff, message, "?remote_images=1")
    csp = loaded["Content-Security-Policy"]
    assert "img-src 'self' data: https: http:;" in csp
    assert "script-src" not in csp
    assert "default-src 'none'" in csp
    assert "allow-scripts" not in csp
    assert "allow-same-origin" not in csp
    html = loaded.content.decode()
    assert ' src="https://tracker.example/p.gif"' in html
    assert "url('https://t.example/s.png')" in unescape(html)


def test_links_go_through_the_warning_page_in_a_new_tab(staff: Client, mailbox: Mailbox) -> None:
    message = deliver(_html_mail(LINK_HTML), to=["user@our.test"])
    page = _page(staff, message)
    assert 'sandbox="allow-popups allow-popups-to-escape-sandbox"' in page
    response = _frame(staff, message)
    csp = response["Content-Security-Policy"]
    assert csp.startswith("sandbox allow-popups allow-popups-to-escape-sandbox;")
    assert "base-uri 'none'" in csp
    assert "form-action 'none'" in csp
    html = response.content.decode()
    assert html.startswith('<base target="_blank">')  # a link missed still leaves the frame
    assert "evil.example" not in html
    assert "refresh" not in html
    out = re.search(r'<a id="out"[^>]*>', html)
    assert out is not None
    link = unescape(re.search(r'href="([^"]*)"', out.group()).group(1))  # type: ignore[union-attr]
    link_path = reverse("admin:inbound_smtp_inboundmessage_link", args=[message.pk])
    assert urlsplit(link).path == link_path
    assert parse_qs(urlsplit(link).query)["url"] == ["https://example.org/path?a=1&b=2"]
    assert 'target="_blank" rel="noopener noreferrer"' in out.group()
    for not_linkable in ("js", "js2", "data", "rel"):
        tag = re.search(rf'<a id="{not_linkable}"[^>]*>', html)
        assert tag is not None, not_linkable
        assert "href" not in tag.group(), not_linkable
    assert "javascript" not in html.lower()
    assert '<a id="frag" href="#top" target="_self">' in html
    assert "mailto%3Asomeone%40example.org" in html

    warning = staff.get(link)
    assert warning.status_code == 200  # shown, never a redirect
    content = warning.content.decode()
    assert "You are leaving the admin to go to:" in content
    assert 'id="external-link-continue" href="https://example.org/path?a=1&amp;b=2"' in content
    assert warning["Referrer-Policy"] == "no-referrer"


def test_warning_page_escapes_the_target_and_refuses_scripts(
    staff: Client, mailbox: Mailbox
) -> None:
    message = deliver(_html_mail("<p>x</p>"), to=["user@our.test"])
    link_path = reverse("admin:inbound_smtp_inboundmessage_link", args=[message.pk])
    hostile = 'https://x.example/"><script>alert(1)</script>'
    content = staff.get(link_path, {"url": hostile}).content.decode()
    assert "<script>alert(1)" not in content
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in content
    assert "x.example" in content
    refused = staff.get(link_path, {"url": "javascript:alert(1)"})
    assert refused.status_code == 200
    body = refused.content.decode()
    assert "external-link-continue" not in body
    assert "cannot be followed" in body
    punycode = staff.get(link_path, {"url": "https://pаypal.example/"}).content.decode()
    assert "xn--pypal-4ve.example" in punycode  # the Cyrillic "а" shows


HOSTILE = (
    b"From: =?utf-8?b?QWRtaW4gPGFkbWluQGJhbmsuY29tPg==?= <evil@x.test>\r\n"
    b"To: user@our.test\r\n"
    b"Subject: <script>alert(1)</script> invoice\r\n"
    b"X-Evil: <img src=x onerror=alert(2)>\r\n"
    b"X-Bidi: abc\xe2\x80\xaedef\r\n"
    b"Content-Type: text/plain; charset=utf-8\r\n\r\n"
    b"<script>alert(3)</script> body text\r\n"
)


def test_every_tab_is_present_and_escaped(staff: Client, mailbox: Mailbox) -> None:
    message = deliver(HOSTILE, to=["user@our.test"])
    InboundMessage.objects.filter(pk=message.pk).update(error="Traceback <b>boom</b>")
    page = _page(staff, message)
    for dangerous in ("<script>alert", "<img src=x", "<b>boom"):
        assert dangerous not in page
    assert 'role="tablist"' in page
    for tab in ("html", "text", "headers", "source", "attachments", "checks", "envelope"):
        assert f'<a role="tab" class="inbound-tab" id="tab-{tab}" href="#panel-{tab}"' in page
        assert f'<section role="tabpanel" class="inbound-panel" id="panel-{tab}"' in page
    assert (
        'id="tab-text" href="#panel-text" aria-controls="panel-text" aria-selected="true"' in page
    )
    text = page.split('id="panel-text"')[1].split("</section>")[0]
    assert "&lt;script&gt;alert(3)&lt;/script&gt; body text" in text
    headers = page.split('id="panel-headers"')[1].split("</section>")[0]
    assert "X-Evil: &lt;img src=x onerror=alert(2)&gt;" in headers  # as received
    assert '<th scope="row">X-Evil</th><td>&lt;img src=x onerror=alert(2)&gt;</td>' in headers
    assert "abc\\u202edef" in headers
    assert "\u202e" not in page
    source = page.split('id="panel-source"')[1].split("</section>")[0]
    assert re.search(
        r'<span class="line" id="L(\d+)"><span class="ln" aria-hidden="true">\1</span>'
        r"&lt;script&gt;alert\(3\)&lt;/script&gt; body text",
        source,
    )
    assert '<span class="line" id="L1"><span class="ln" aria-hidden="true">1</span>Received:' in (
        source
    )
    processing = page.split('id="panel-processing"')[1].split("</section>")[0]
    assert "Traceback &lt;b&gt;boom&lt;/b&gt;" in processing
    assert re.search(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d UTC", page)  # seconds
    assert 'id="message-no-html"' in page
    assert 'id="message-no-sender-checks"' in page  # checks are off in the test settings
    assert 'id="message-no-attachments"' in page


def test_source_is_cut_with_a_note_and_the_download(staff: Client, mailbox: Mailbox) -> None:
    body = b"".join(b"line %06d of a long message\r\n" % n for n in range(12000))
    message = deliver(
        b"From: a@x.test\r\nTo: user@our.test\r\nSubject: big\r\n\r\n" + body,
        to=["user@our.test"],
    )
    assert message.size > SOURCE_MAX_BYTES
    source = _page(staff, message).split('id="panel-source"')[1].split("</section>")[0]
    assert 'id="source-cut-notice"' in source
    assert reverse("admin:inbound_smtp_inboundmessage_raw", args=[message.pk]) in source
    assert "line 000100 of" in source
    assert "line 011999 of" not in source


def test_list_columns_fit_with_seconds_paperclip_and_sizes(
    staff: Client, inline_images: InboundMessage
) -> None:
    deliver(b"From: b@x.test\r\nTo: user@our.test\r\nSubject: bare\r\n\r\nhi\r\n")
    deliver(_html_mail("<p>x</p>", subject="with file"), to=["user@our.test"])
    attached = _html_mail("<p>y</p>", subject="attached")
    attached.add_attachment(b"%PDF-1.4 x", maintype="application", subtype="pdf", filename="a.pdf")
    with_file = deliver(attached, to=["user@our.test"])
    url = reverse("admin:inbound_smtp_inboundmessage_changelist")
    response = staff.get(url)
    content = response.content.decode()
    rows = {row.subject: row for row in response.context["cl"].result_list}
    assert rows["attached"].has_attachments is True
    assert rows["bare"].has_attachments is False
    assert rows["html"].has_attachments is False  # only inline images: no paperclip
    assert content.count('class="inbound-clip"') == 1
    cells = re.findall(r'<th class="field-received"><a href="[^"]*">(.*?)</a>', content)
    received = [re.sub(r"<[^>]*>", "", cell) for cell in cells]
    assert len(received) == 4
    assert all(re.fullmatch(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d", value) for value in received)
    assert f"{with_file.size}\xa0bytes" in content or "KB" in content
    assert 'class="inbound-cut" title="attached">attached</span>' in content
    assert "inbound_smtp/message.css" in content


def test_list_queries_do_not_grow_with_rows(staff: Client, mailbox: Mailbox) -> None:
    url = reverse("admin:inbound_smtp_inboundmessage_changelist")

    def queries() -> int:
        with CaptureQueriesContext(connection) as captured:
            assert staff.get(url).status_code == 200
        return len(captured)

    deliver(b"From: a@x.test\r\nTo: user@our.test\r\nSubject: 1\r\n\r\nx\r\n")
    few = queries()
    for n in range(6):
        message = _html_mail(f"<p>{n}</p>", subject=f"n{n}")
        message.add_attachment(b"x", maintype="application", subtype="octet-stream", filename="x")
        deliver(message, to=["user@our.test"])
    assert queries() == few


def test_mailbox_count_links_to_its_messages(staff: Client, mailbox: Mailbox) -> None:
    other = Mailbox.objects.create(address="other@our.test")
    deliver(b"From: a@x.test\r\nTo: user@our.test\r\nSubject: 1\r\n\r\nx\r\n")
    deliver(b"From: a@x.test\r\nTo: user@our.test\r\nSubject: 2\r\n\r\nx\r\n")
    deliver(b"From: a@x.test\r\nTo: other@our.test\r\nSubject: 3\r\n\r\nx\r\n")
    content = staff.get(reverse("admin:inbound_smtp_mailbox_changelist")).content.decode()
    links = dict(
        (count, unescape(href))
        for href, count in re.findall(
            r'<a href="([^"]*)" class="inbound-mailbox-messages">(\d+)</a>', content
        )
    )
    assert set(links) == {"2", "1"}
    assert links["2"].endswith(f"?recipients__mailbox__id__exact={mailbox.pk}")
    assert staff.get(links["2"]).context["cl"].result_count == 2
    assert links["1"].endswith(f"?recipients__mailbox__id__exact={other.pk}")
    assert staff.get(links["1"]).context["cl"].result_count == 1


def test_new_endpoints_need_staff_with_view_permission(
    inline_images: InboundMessage, clerk: tuple[User, Client]
) -> None:
    logo = inline_images.attachments.get(content_id="logo@x.test")
    urls = [
        reverse("admin:inbound_smtp_inboundmessage_html", args=[inline_images.pk]),
        reverse("admin:inbound_smtp_inboundmessage_link", args=[inline_images.pk])
        + "?url=https://example.org/",
        reverse("admin:inbound_smtp_attachment_image", args=[logo.pk]),
    ]
    user, client = clerk
    for url in urls:
        anonymous = Client().get(url)
        assert anonymous.status_code == 302, url
        assert "/login/" in anonymous["Location"]
        assert client.get(url).status_code == 403, url
    user.user_permissions.add(Permission.objects.get(codename="view_inboundmessage"))
    client.force_login(User.objects.get(pk=user.pk))
    for url in urls:
        response = client.get(url)
        assert response.status_code == 200, url
        assert response.getvalue()  # a file response is closed once consumed


class _Fieldset:
    def __init__(self, classes: str) -> None:
        self.classes = classes


class _Inline:
    def __init__(self, model_name: str, forms: int = 0) -> None:
        self.opts = type("Opts", (), {"opts": type("Meta", (), {"model_name": model_name})})
        self.formset = type("Formset", (), {"forms": [None] * forms})


def test_processing_attempts_inline_goes_in_the_processing_tab() -> None:
    # The processing-attempt inline (a model of its own) lands in "Processing history";
    # an inline no tab claims follows the tabs.
    summary_fieldset, envelope = _Fieldset(""), _Fieldset("inbound-tab-envelope")
    attempts, attachments, unknown = (
        _Inline("processingattempt"),
        _Inline("attachment", 3),
        _Inline("note"),
    )
    summary, tabs, others = group_tabs(
        [summary_fieldset, envelope], [attempts, attachments, unknown], active="text"
    )
    by_id = {tab.id: tab for tab in tabs}
    assert summary == [summary_fieldset]
    assert by_id["envelope"].fieldsets == [envelope]
    assert by_id["processing"].inlines == [attempts]
    assert by_id["attachments"].label == "Attachments (3)"
    assert others == [unknown]
    assert [tab.id for tab in tabs if tab.active] == ["text"]


def test_attachment_rows_have_human_sizes_and_downloads(
    staff: Client, inline_images: InboundMessage
) -> None:
    page = _page(staff, inline_images)
    panel = page.split('id="panel-attachments"')[1].split("</section>")[0]
    logo = Attachment.objects.get(message=inline_images, content_id="logo@x.test")
    assert f'<span title="{logo.size}">{logo.size}\xa0bytes</span>' in panel
    download = reverse("admin:inbound_smtp_attachment_download", args=[logo.pk])
    assert f'<a href="{download}" class="inbound-download" download>' in panel
    assert 'id="tab-attachments"' in page
    assert "Attachments (3)" in page


def test_page_renders_when_the_raw_file_is_gone(staff: Client, mailbox: Mailbox) -> None:
    message = deliver(_html_mail("<p>kept</p>"), to=["user@our.test"])
    message.storage.delete(message.raw_file)
    page = _page(staff, message)
    assert 'id="message-raw-missing"' in page
    assert "plain text part" in page  # the parsed parts are still there


@pytest.mark.integration
def test_inline_image_received_over_smtp_renders_from_our_endpoint(transactional_db: None) -> None:
    # The whole way: real SMTP on loopback, stored and processed by the server, then read
    # through the admin as the sandboxed frame's browser would (no session cookie).
    Mailbox.objects.create(address="user@our.test")
    staff = Client()
    staff.force_login(User.objects.create_superuser("boss", "boss@x.test", "pw"))
    sent = _html_mail('<p><img id="a" src="cid:logo@x.test"></p>', subject="over smtp")
    html_part = sent.get_body(preferencelist=("html",))
    assert isinstance(html_part, EmailMessage)
    html_part.add_related(PNG, "image", "png", cid="<logo@x.test>", filename="logo.png")
    with running_server() as server:
        client = GuardedSMTP(server.host, server.port, local_hostname="client.test", timeout=10)
        try:
            client.sendmail("sender@x.test", ["user@our.test"], sent.as_bytes())
        finally:
            client.quit()
    message = InboundMessage.objects.get(subject="over smtp")
    src = _img_src(_frame(staff, message).content.decode(), "a")
    assert src is not None
    image = Client().get(src)
    assert image.status_code == 200
    assert image["Content-Type"] == "image/png"
    assert image.getvalue() == PNG
