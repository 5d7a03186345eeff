"""In a real browser: a message put in through the admin's form is stored and processed."""

from __future__ import annotations

import asyncio

import pytest
from asgiref.sync import sync_to_async
from django.db import connection
from django.urls import reverse

from django_inbound_smtp.lifecycle import schedule
from django_inbound_smtp.models import InboundMessage, Mailbox
from tests import browser_mail
from tests.browser_kit import AdminBrowser
from tests.browser_mail import RECIPIENTS

pytestmark = [pytest.mark.browser, pytest.mark.asyncio(loop_scope="session")]

SUBJECT = "Put in from the browser"


def _stored() -> tuple[str, str | None, list[str]]:
    """Status, who put it in, envelope recipients."""
    try:
        message = InboundMessage.objects.select_related("injected_by").get(subject=SUBJECT)
        injected_by = message.injected_by.get_username() if message.injected_by else None
        return message.status, injected_by, [r.address for r in message.recipients.all()]
    finally:
        # sync_to_async runs this in asgiref's executor thread, which outlives the test:
        # a connection left open there keeps PostgreSQL from dropping the test database.
        connection.close()


async def test_injected_mail_is_processed(admin: AdminBrowser, mailboxes: list[Mailbox]) -> None:
    raw = browser_mail.plain(
        SUBJECT, sender="Alice <alice@example.test>", to=RECIPIENTS[0], body="Hello.\n"
    )
    page = await admin.open(reverse("admin:inbound_smtp_inboundmessage_changelist"))
    await page.get_by_role("link", name="Put a message in").click()
    await page.wait_for_load_state()
    await page.get_by_label("MAIL FROM").fill("alice@example.test")
    await page.get_by_label("RCPT TO").fill(RECIPIENTS[0])
    await page.get_by_label("Message file").set_input_files(
        files={"name": "hello.eml", "mimeType": "message/rfc822", "buffer": raw}
    )
    await admin.screenshot("inject-form")
    await page.get_by_role("button", name="Store and process").click()
    await page.wait_for_url("**/change/")

    # Processing runs in the live server's threads (this process): wait for it, then
    # read the status as staff see it, on the message page and in the list.
    assert await asyncio.to_thread(schedule.drain, 10)
    await page.reload()
    assert await page.locator(".fieldBox.field-status .readonly").inner_text() == "processed"
    page = await admin.open(reverse("admin:inbound_smtp_inboundmessage_changelist"))
    row = page.locator("#result_list tbody tr", has_text=SUBJECT)
    assert await row.locator("td.field-status").inner_text() == "processed"
    status, injected_by, recipients = await sync_to_async(_stored)()
    assert status == InboundMessage.Status.PROCESSED
    assert injected_by == "boss"
    assert recipients == [RECIPIENTS[0]]
