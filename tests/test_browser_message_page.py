"""In a real browser: the message page's tabs work from the keyboard, and the page follows
the admin's dark mode."""

from __future__ import annotations

import pytest
from django.urls import reverse
from playwright.async_api import Locator

from django_inbound_smtp.models import InboundMessage
from tests.browser_kit import AdminBrowser

pytestmark = [pytest.mark.browser, pytest.mark.asyncio(loop_scope="session")]

NEWSLETTER = "newsletter-2026-12@example.test"
TABS = ["html", "text", "headers", "source", "attachments", "checks", "envelope", "processing"]

# Relative luminance (WCAG) of an element's text colour or of the background it shows
# (its own, or the first ancestor's that is not transparent; the canvas is white).
LUMINANCE = r"""(el, property) => {
    let value = getComputedStyle(el)[property];
    if (property === 'backgroundColor') {
        let e = el;
        while (e && /^rgba\(.*, 0\)$/.test(getComputedStyle(e).backgroundColor)) {
            e = e.parentElement;
        }
        value = e ? getComputedStyle(e).backgroundColor : 'rgb(255, 255, 255)';
    }
    const [r, g, b] = value.match(/[\d.]+/g).slice(0, 3).map((c) => {
        c = c / 255;
        return c <= 0.03928 ? c / 12.92 : ((c + 0.055) / 1.055) ** 2.4;
    });
    return 0.2126 * r + 0.7152 * g + 0.0722 * b;
}"""


def _page_of(message: InboundMessage) -> str:
    return reverse("admin:inbound_smtp_inboundmessage_change", args=[message.pk])


async def _selected(admin: AdminBrowser) -> str:
    """The id of the selected tab; it must also be the focused one with the only visible
    panel."""
    page = admin.page
    selected = page.locator("#inbound-tablist [role=tab][aria-selected=true]")
    assert await selected.count() == 1
    tab_id = (await selected.get_attribute("id") or "").removeprefix("tab-")
    assert await page.evaluate("() => document.activeElement.id") == f"tab-{tab_id}"
    visible = [t for t in TABS if await page.locator(f"#panel-{t}").is_visible()]
    assert visible == [tab_id]
    return tab_id


async def test_the_tabs_work_from_the_keyboard(
    admin: AdminBrowser, mailroom: dict[str, InboundMessage]
) -> None:
    page = await admin.open(_page_of(mailroom[NEWSLETTER]))
    tab_ids = [
        (await tab.get_attribute("id") or "").removeprefix("tab-")
        for tab in await page.locator("#inbound-tablist [role=tab]").all()
    ]
    assert tab_ids == TABS
    # Only the selected tab is in the Tab order (a roving tabindex): the Tab key reaches
    # the strip once, the arrow keys move within it.
    tabindexes = [
        await tab.get_attribute("tabindex")
        for tab in await page.locator("#inbound-tablist [role=tab]").all()
    ]
    assert tabindexes == ["0"] + ["-1"] * (len(TABS) - 1)
    await page.locator("#tab-html").focus()
    assert await _selected(admin) == "html"
    await page.keyboard.press("ArrowRight")
    assert await _selected(admin) == "text"
    await page.keyboard.press("End")
    assert await _selected(admin) == "processing"
    await page.keyboard.press("ArrowRight")  # wraps around
    assert await _selected(admin) == "html"
    await page.keyboard.press("ArrowLeft")
    assert await _selected(admin) == "processing"
    await page.keyboard.press("Home")
    assert await _selected(admin) == "html"
    # The choice is in the address, so a reload keeps it.
    await page.keyboard.press("ArrowRight")
    await page.reload()
    assert await page.locator("#tab-text").get_attribute("aria-selected") == "true"
    assert await page.locator("#panel-text").is_visible()


async def _is_dark(element: Locator) -> bool:
    background: float = await element.evaluate(LUMINANCE, "backgroundColor")
    text: float = await element.evaluate(LUMINANCE, "color")
    return background < 0.1 and text > 0.4


async def test_the_message_page_follows_dark_mode(
    admin: AdminBrowser, mailroom: dict[str, InboundMessage]
) -> None:
    await admin.page.emulate_media(color_scheme="dark")
    page = await admin.open(_page_of(mailroom[NEWSLETTER]))
    assert await _is_dark(page.locator("body"))
    await page.locator("#tab-source").click()
    assert await _is_dark(page.locator("pre#message-source"))
    assert await _is_dark(page.locator("#tab-source"))
    await admin.screenshot("message-source-dark")
    await page.locator("#tab-headers").click()
    header_cell = page.locator("table#message-headers td").first
    assert await _is_dark(header_cell)

    # The same elements are light in light mode: the check above can tell them apart.
    await admin.page.emulate_media(color_scheme="light")
    assert not await _is_dark(header_cell)
    assert await header_cell.evaluate(LUMINANCE, "backgroundColor") > 0.5
