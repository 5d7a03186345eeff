"""In a real browser, the mail room as staff read it: characters, inline images, layout at
1280x800, and screenshots of the main pages (written to ``test-artifacts/screenshots``)."""

from __future__ import annotations

import pytest
from django.urls import reverse
from playwright.async_api import Page

from django_inbound_smtp.models import InboundMessage, Mailbox
from tests import browser_mail
from tests.browser_kit import AdminBrowser, deliver_over_smtp

pytestmark = [pytest.mark.browser, pytest.mark.asyncio(loop_scope="session")]

LIST = reverse("admin:inbound_smtp_inboundmessage_changelist")


def _page_of(message: InboundMessage) -> str:
    return reverse("admin:inbound_smtp_inboundmessage_change", args=[message.pk])


@pytest.fixture
def mailroom(mailboxes: list[Mailbox]) -> dict[str, InboundMessage]:
    """The sample mailbox, stored over SMTP and processed; by Message-ID."""
    stored = deliver_over_smtp(browser_mail.mailroom())
    return {message.message_id.strip("<>"): message for message in stored}


async def _no_horizontal_scroll(page: Page) -> None:
    widths = await page.evaluate(
        "() => [document.documentElement.scrollWidth, document.documentElement.clientWidth]"
    )
    assert widths[0] <= widths[1], f"the page scrolls sideways: {widths}"


@pytest.mark.xfail(reason="header decoding is not merged yet", strict=True)
async def test_the_latin1_subject_reads_correctly(
    admin: AdminBrowser, mailroom: dict[str, InboundMessage]
) -> None:
    subject = browser_mail.LATIN1_SUBJECT
    page = await admin.open(LIST)
    results = page.locator("#result_list")
    assert await results.get_by_text(subject, exact=True).count() == 1
    assert "\ufffd" not in await results.inner_text()

    page = await admin.open(_page_of(mailroom["latin1@example.test"]))
    assert subject in await page.title()
    assert "\ufffd" not in await page.locator("#content").inner_text()


@pytest.mark.xfail(reason="cid: images in the preview are not merged yet", strict=True)
async def test_the_inline_cid_image_renders(
    admin: AdminBrowser, mailroom: dict[str, InboundMessage]
) -> None:
    page = await admin.open(_page_of(mailroom["newsletter-2026-12@example.test"]))
    preview = page.frame_locator("iframe").first
    logo = preview.locator("img#logo")
    await logo.wait_for()
    natural = await logo.evaluate(
        "img => img.complete ? [img.naturalWidth, img.naturalHeight] : []"
    )
    assert natural == [120, 40], "the cid: image did not load"
    # Served by our own server, and nothing else was fetched from outside.
    assert admin.guard.outside_requests == []


@pytest.mark.xfail(reason="the 1280 px layout is not merged yet", strict=True)
async def test_nothing_is_cut_off_at_1280_px(
    admin: AdminBrowser, mailroom: dict[str, InboundMessage]
) -> None:
    assert admin.page.viewport_size == {"width": 1280, "height": 800}
    page = await admin.open(LIST)
    await _no_horizontal_scroll(page)
    # The results table fits its container (Django puts it in a box that scrolls).
    fit = await page.evaluate(
        """() => {
            const table = document.querySelector('#result_list');
            const box = table.closest('.results');
            return [box.scrollWidth, box.clientWidth,
                    table.getBoundingClientRect().right, window.innerWidth];
        }"""
    )
    box_width, box_visible, table_right, window_width = fit
    assert box_width <= box_visible, f"the results table scrolls in its box: {fit}"
    assert table_right <= window_width, f"the results table is cut off: {fit}"

    page = await admin.open(_page_of(mailroom["newsletter-2026-12@example.test"]))
    downloads = page.locator("a[href*='/attachment/']")
    assert await downloads.count() == 2
    for index in range(2):
        link = downloads.nth(index)
        await link.scroll_into_view_if_needed()
        box = await link.bounding_box()
        assert box is not None
        assert await link.is_visible()
        assert box["x"] >= 0, f"download link off-screen: {box}"
        assert box["x"] + box["width"] <= 1280, f"download link off-screen: {box}"
    await _no_horizontal_scroll(page)


async def test_screenshots_of_the_main_pages(
    admin: AdminBrowser, mailroom: dict[str, InboundMessage]
) -> None:
    page = await admin.open(LIST)
    assert await page.locator("#result_list tbody tr").count() == len(mailroom)
    await admin.screenshot("message-list")

    page = await admin.open(_page_of(mailroom["newsletter-2026-12@example.test"]))
    await page.frame_locator("iframe").first.locator("#newsletter-heading").wait_for()
    await admin.screenshot("message-page")
