"""Browser tests: headless Debian ``chromium`` driven by Playwright against a live server.

Loaded as a pytest plugin by ``tests/conftest.py``. The tests using it are marked
``browser``; run them alone with ``make test PYTEST_ARGS='-m browser'``.

Why the async API of Playwright, on a session-scoped event loop. Playwright's *sync*
API runs its own event loop in a greenlet of the test's thread and, between two calls,
leaves that loop registered as the thread's running loop (playwright's
``wait_for_future`` sets it back after every call). With one browser for the whole
session that registration outlives the browser test: Django's async-unsafe guard then
refuses every ORM call of the test thread (``SynchronousOnlyOperation``) and
pytest-asyncio refuses to start the loop of any async test that runs later. Working
around it takes ``DJANGO_ALLOW_ASYNC_UNSAFE`` (which switches the guard off for the
whole test process, so the tests proving that the SMTP layer never touches the ORM
from its loop could no longer fail) or poking private asyncio state. The async API
has neither problem: the browser lives on a pytest-asyncio loop of session scope that
runs only while a browser test runs, and is not running in between. The test thread
stays an ordinary synchronous thread for every other test, the guard stays on, and no
setting is relaxed. The live server runs in a thread of its own, as always, with no
event loop at all. Django work of a browser test happens in its synchronous fixtures
(before the test's coroutine starts) or through ``sync_to_async``.
"""

from __future__ import annotations

import os
import smtplib
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from email.parser import BytesHeaderParser
from email.utils import getaddresses
from pathlib import Path
from urllib.parse import urlsplit

import pytest
import pytest_asyncio
from django.conf import settings
from django.contrib.auth.models import User
from django.test import Client
from playwright.async_api import (
    Browser,
    BrowserContext,
    Dialog,
    Page,
    Route,
    ViewportSize,
    async_playwright,
)
from pytest_django.live_server_helper import LiveServer

from django_inbound_smtp.models import InboundMessage, Mailbox
from django_inbound_smtp.testing import running_server
from tests import browser_mail
from tests.browser_mail import RECIPIENTS

CHROMIUM = Path("/usr/bin/chromium")
VIEWPORT: ViewportSize = {"width": 1280, "height": 800}
#: Where screenshots go (gitignored); INBOUND_TEST_ARTIFACTS moves it.
ARTIFACTS = Path(
    os.environ.get("INBOUND_TEST_ARTIFACTS")
    or Path(__file__).resolve().parent.parent / "test-artifacts"
)


@pytest.fixture(scope="session")
def chromium() -> Path:
    """Debian's chromium; the browser tests skip without it (and fail in CI)."""
    if not CHROMIUM.exists():
        message = (
            f"{CHROMIUM} is missing: `make test` installs it (apt-get install chromium) "
            "when run as root"
        )
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    return CHROMIUM


@pytest_asyncio.fixture(scope="session", loop_scope="session")
async def browser(chromium: Path) -> AsyncIterator[Browser]:
    """One headless chromium for the whole session (each test gets a new context)."""
    async with async_playwright() as playwright:
        # Chromium's own (operating-system) sandbox cannot start as root: only then is
        # it switched off. What these tests check does not depend on it: the frame's
        # sandbox attribute and the Content-Security-Policy are enforced by the renderer.
        launched = await playwright.chromium.launch(
            executable_path=str(chromium),
            headless=True,
            chromium_sandbox=os.geteuid() != 0,
        )
        try:
            yield launched
        finally:
            await launched.close()


@dataclass
class Guard:
    """What a page did that it must not: dialogs, requests leaving the server's origin."""

    origin: str
    dialogs: list[str] = field(default_factory=list)
    #: Requests to another origin that the browser really sent (and we aborted).
    outside_requests: list[str] = field(default_factory=list)
    #: Checked again when the test ends, so no browser test can miss it; a test that
    #: provokes a dialog or an outside request on purpose turns this off.
    expect_clean: bool = True

    def is_outside(self, url: str) -> bool:
        parts = urlsplit(url)
        if parts.scheme in ("data", "blob", "about"):
            return False  # never leaves the browser
        return f"{parts.scheme}://{parts.netloc}" != self.origin

    def assert_clean(self) -> None:
        assert self.dialogs == [], f"a dialog fired: {self.dialogs}"
        assert self.outside_requests == [], f"requests left the origin: {self.outside_requests}"


@dataclass
class AdminBrowser:
    """A logged-in staff page at 1280x800, watched by ``guard``."""

    page: Page
    context: BrowserContext
    guard: Guard
    live_server: LiveServer

    def url(self, path: str) -> str:
        return self.live_server.url + path

    async def open(self, path: str) -> Page:
        """Go to ``path`` on the live server; the page must answer 200."""
        response = await self.page.goto(self.url(path), wait_until="load")
        assert response is not None
        assert response.status == 200, f"{path}: {response.status}"
        # Let late loads (meta refresh, lazy images) happen before anyone asserts.
        await self.page.wait_for_load_state("networkidle")
        return self.page

    async def screenshot(self, name: str, *, page: Page | None = None) -> Path:
        """Write ``test-artifacts/screenshots/<name>.png`` (the viewport, 1280x800)."""
        target = ARTIFACTS / "screenshots" / f"{name}.png"
        target.parent.mkdir(parents=True, exist_ok=True)
        await (page or self.page).screenshot(path=str(target))
        return target


@pytest.fixture
def staff_session(transactional_db: None) -> str:
    """A superuser's session, made server-side (no login form round trip)."""
    client = Client()
    client.force_login(User.objects.create_superuser("boss", "boss@our.test", "not-used"))
    return client.cookies[settings.SESSION_COOKIE_NAME].value


@pytest_asyncio.fixture(loop_scope="session")
async def admin(
    browser: Browser, live_server: LiveServer, staff_session: str
) -> AsyncIterator[AdminBrowser]:
    """A new browser context per test, logged in as staff; every request that would leave
    the live server's origin is recorded and aborted, every dialog recorded and dismissed.
    The test fails afterwards if either happened and the test did not expect it."""
    origin = live_server.url
    guard = Guard(origin=origin)
    context = await browser.new_context(viewport=VIEWPORT)
    # A local server answers in milliseconds; a missing element should fail the test
    # long before Playwright's default 30 s.
    context.set_default_timeout(10_000)
    await context.add_cookies(
        [{"name": settings.SESSION_COOKIE_NAME, "value": staff_session, "url": origin}]
    )

    async def on_dialog(dialog: Dialog) -> None:
        guard.dialogs.append(f"{dialog.type}: {dialog.message}")
        await dialog.dismiss()

    async def keep_inside(route: Route) -> None:
        # Only requests the page really sends reach this handler: a load that the page's
        # Content-Security-Policy refuses is still reported as a "request" (then failed,
        # "csp") but never gets here. So this is where "left the origin" is decided;
        # it is also aborted, so nothing reaches the network even when a test fails.
        if guard.is_outside(route.request.url):
            guard.outside_requests.append(route.request.url)
            await route.abort("blockedbyclient")
        else:
            await route.continue_()

    context.on("dialog", on_dialog)
    await context.route("**/*", keep_inside)
    page = await context.new_page()
    try:
        yield AdminBrowser(page=page, context=context, guard=guard, live_server=live_server)
    finally:
        await context.close()
    if guard.expect_clean:
        guard.assert_clean()


@pytest.fixture
def mailboxes(transactional_db: None) -> list[Mailbox]:
    return [Mailbox.objects.create(address=address) for address in RECIPIENTS]


@pytest.fixture
def mailroom(mailboxes: list[Mailbox]) -> dict[str, InboundMessage]:
    """The sample mailbox (``browser_mail.mailroom``), stored over SMTP and processed;
    by Message-ID without its angle brackets."""
    stored = deliver_over_smtp(browser_mail.mailroom())
    return {message.message_id.strip("<>"): message for message in stored}


def deliver_over_smtp(
    messages: Sequence[bytes], *, mail_from: str = "sender@example.test"
) -> list[InboundMessage]:
    """Send ``messages`` to the real listener over loopback SMTP, one transaction each,
    to the addresses of their ``To:`` header (as a mail client does), and return them as
    stored once processing has finished (the server's stop waits for processing in
    flight). The recipients' mailboxes must exist (``mailboxes`` fixture)."""
    queue_ids = []
    with running_server() as server:
        with smtplib.SMTP(server.host, server.port, local_hostname="client.test") as client:
            for raw in messages:
                headers = BytesHeaderParser().parsebytes(raw)
                recipients = [address for _name, address in getaddresses(headers.get_all("To", []))]
                assert recipients, "each message names its recipients in To:"
                client.ehlo_or_helo_if_needed()
                assert client.mail(mail_from)[0] == 250
                for address in recipients:
                    assert client.rcpt(address)[0] == 250, address
                code, reply = client.data(raw)
                assert code == 250, reply
                # "250 2.0.0 Ok: queued as <id>"
                queue_ids.append(reply.decode().rsplit(" ", 1)[-1])
    stored = {m.queue_id: m for m in InboundMessage.objects.filter(queue_id__in=queue_ids)}
    assert len(stored) == len(queue_ids)
    return [stored[queue_id] for queue_id in queue_ids]


__all__ = [
    "AdminBrowser",
    "Guard",
    "admin",
    "browser",
    "deliver_over_smtp",
    "mailboxes",
    "mailroom",
    "chromium",
    "staff_session",
]
