"""In a real browser, the mail room as staff read it: characters, inline images, layout at
1280x800, and screenshots of the main pages (written to ``test-artifacts/screenshots``)."""

from __future__ import annotations

import pytest
from django.urls import reverse
from playwright.async_api import Page

from django_inbound_smtp.models import InboundMessage
from tests import browser_mail
from tests.browser_kit import AdminBrowser

pytestmark = [pytest.mark.browser, pytest.mark.asyncio(loop_scope="session")]

LIST = reverse("admin:inbound_smtp_inboundmessage_changelist")
# Hooks of the message page (documented at the top of its change_form.html).
PREVIEW = "iframe#message-html-preview"


def _page_of(message: InboundMessage) -> str:
    return reverse("admin:inbound_smtp_inboundmessage_change", args=[message.pk])


# The list's cells whose text is cut: every heading, and the cells of the columns whose
# heading starts with Received, Size or Status: an element, or one inside it, whose
# content is wider than its box and does not show what overflows (hidden, or an
# ellipsis). Form controls and images have no text to cut.
CLIPPED_CELLS = """() => {
    const clipped = (el) => [el, ...el.querySelectorAll(':not(input, img, svg, svg *)')].some(
        (e) => e.scrollWidth > e.clientWidth + 1 && getComputedStyle(e).overflowX !== 'visible');
    const heads = [...document.querySelectorAll('#result_list thead th')];
    const cut = heads.filter(clipped).map((th) => 'heading ' + th.innerText.trim());
    const whole = heads.map((th, i) => [th.innerText.trim().toLowerCase(), i])
        .filter(([text]) => /^(received|size|status)/.test(text));
    for (const row of document.querySelectorAll('#result_list tbody tr')) {
        for (const [text, i] of whole) {
            if (clipped(row.children[i])) cut.push(text + ': ' + row.children[i].innerText);
        }
    }
    return cut;
}"""


async def _no_horizontal_scroll(page: Page) -> None:
    widths = await page.evaluate(
        "() => [document.documentElement.scrollWidth, document.documentElement.clientWidth]"
    )
    assert widths[0] <= widths[1], f"the page scrolls sideways: {widths}"


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


async def test_the_inline_cid_image_renders(
    admin: AdminBrowser, mailroom: dict[str, InboundMessage]
) -> None:
    page = await admin.open(_page_of(mailroom["newsletter-2026-12@example.test"]))
    preview = page.frame_locator(PREVIEW)
    logo = preview.locator("img#logo")
    await logo.wait_for()
    natural = await logo.evaluate(
        "img => img.complete ? [img.naturalWidth, img.naturalHeight] : []"
    )
    assert natural == [120, 40], "the cid: image did not load"
    # Served by our own server, and nothing was fetched from outside.
    assert (await logo.evaluate("img => img.currentSrc")).startswith(admin.live_server.url + "/")
    assert admin.guard.outside_requests == []


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
    # No column heading is clipped, nor a received time, size or status: those are read
    # whole (long senders and subjects may end in an ellipsis).
    cut = await page.evaluate(CLIPPED_CELLS)
    assert cut == [], f"cut off: {cut}"

    page = await admin.open(_page_of(mailroom["newsletter-2026-12@example.test"]))
    await _no_horizontal_scroll(page)
    await page.locator("#tab-attachments").click()
    await _no_horizontal_scroll(page)
    downloads = page.locator("#panel-attachments a.inbound-download")
    assert await downloads.count() == 3  # the inline logo, the report and the chart
    for index in range(3):
        link = downloads.nth(index)
        await link.scroll_into_view_if_needed()
        box = await link.bounding_box()
        assert box is not None
        assert await link.is_visible()
        assert box["x"] >= 0, f"download link off-screen: {box}"
        assert box["x"] + box["width"] <= 1280, f"download link off-screen: {box}"


async def test_screenshots_of_the_main_pages(
    admin: AdminBrowser, mailroom: dict[str, InboundMessage]
) -> None:
    page = await admin.open(LIST)
    assert await page.locator("#result_list tbody tr").count() == len(mailroom)
    await admin.screenshot("message-list")

    page = await admin.open(_page_of(mailroom["newsletter-2026-12@example.test"]))
    assert await page.locator("#tab-html").get_attribute("aria-selected") == "true"
    await page.frame_locator(PREVIEW).locator("#newsletter-heading").wait_for()
    await admin.screenshot("message-html")
    for tab in ("headers", "source", "attachments"):
        await page.locator(f"#tab-{tab}").click()
        panel = page.locator(f"#panel-{tab}")
        assert await panel.is_visible()
        assert await page.locator("#panel-html").is_hidden()
        # The tabs at the top of the window: the screenshot shows the panel, not the
        # summary above it.
        await page.locator("#inbound-tablist").evaluate("el => el.scrollIntoView()")
        await page.evaluate("() => window.scrollBy(0, -24)")
        await admin.screenshot(f"message-{tab}")
    # What the tabs show is the message itself.
    assert "news@example.test" in await page.locator("table#message-headers").inner_text()
    assert "Message-ID: <newsletter-2026-12@example.test>" in (
        await page.locator("pre#message-source").inner_text()
    )
