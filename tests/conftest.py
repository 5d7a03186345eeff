"""Shared fixtures: mailbox factory, a real listener on a loopback port, SMTP helpers."""

from __future__ import annotations

import gc
import smtplib
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
import trustme
from django.contrib.auth.models import User
from django.core.signals import setting_changed
from django.dispatch import receiver
from django.test import Client

from django_inbound_smtp import validators
from django_inbound_smtp.models import Mailbox
from tests.dnsserver import DnsServer
from tests.helpers import Certs, GuardedSMTP

if TYPE_CHECKING:
    from django_inbound_smtp.testing import RunningServer

# The public fixture, loaded the way the README tells users to (so it is tested too).
# Nothing here imports django_inbound_smtp.testing first: pytest must load it itself.
# tests.browser_kit: the browser fixtures (headless chromium against a live server).
pytest_plugins = ["django_inbound_smtp.testing", "tests.browser_kit"]


@pytest.fixture
def make_mailbox(db: None) -> Callable[..., Mailbox]:
    """Create a mailbox: ``make_mailbox("user@our.test")``."""

    def make(address: str, **fields: object) -> Mailbox:
        return Mailbox.objects.create(address=address, **fields)

    return make


@pytest.fixture
def staff(db: None) -> Client:
    """A test client logged in as the superuser "boss"."""
    client = Client()
    client.force_login(User.objects.create_superuser("boss", "boss@x.test", "pw"))
    return client


@pytest.fixture
def smtp_server(inbound_smtp_server: RunningServer) -> RunningServer:
    """The real listener on 127.0.0.1:<ephemeral>, stopped (and drained) after the test."""
    return inbound_smtp_server


@pytest.fixture
def smtp_client(smtp_server: RunningServer) -> Iterator[smtplib.SMTP]:
    """An ``smtplib`` client connected to ``smtp_server`` that has sent EHLO."""
    client = GuardedSMTP(
        smtp_server.host, smtp_server.port, local_hostname="client.test", timeout=10
    )
    client.ehlo()
    try:
        yield client
    finally:
        client.quit_if_open()


@pytest.fixture
def certs(tmp_path: Path) -> Certs:
    """A trustme CA and a certificate for mx.test / 127.0.0.1 written to PEM files."""
    made = Certs(trustme.CA(), tmp_path / "cert.pem", tmp_path / "key.pem")
    made.issue()
    return made


@pytest.fixture
def dns_server() -> Iterator[DnsServer]:
    """A real DNS server on 127.0.0.1 (UDP and TCP, ephemeral port); load zones per test."""
    server = DnsServer()
    try:
        yield server
    finally:
        server.stop()


@receiver(setting_changed)
def _sender_checks_stay_off_the_network(*, setting: str, value: object, **kwargs: object) -> None:
    """Tests replace INBOUND_SMTP wholesale (override_settings(INBOUND_SMTP={...})). A
    dict without SENDER_CHECKS would turn the checks on in tag mode (the product's
    default) and DNS to the machine's resolver: tests must never ask real DNS. So a
    replacement that does not name them keeps the test settings' choice: checks off,
    DNS at a closed loopback port. A test that wants the checks sets both."""
    if setting != "INBOUND_SMTP" or not isinstance(value, dict):
        return
    from tests import settings as test_settings

    for key in ("SENDER_CHECKS", "DNS"):
        value.setdefault(key, test_settings.INBOUND_SMTP[key])


@pytest.fixture(autouse=True)
def _no_answers_from_an_earlier_test() -> Iterator[None]:
    """Each test starts with an empty recipient directory: the database is flushed or
    rolled back between tests behind the ORM's back (no signal tells the directory)."""
    validators.clear_caches()
    yield
    validators.clear_caches()


@pytest.fixture(autouse=True)
def _leaks_surface_in_the_test_that_made_them() -> Iterator[None]:
    """Collect garbage after each test, so a socket or file a test forgot to close warns
    (and fails, warnings being errors) in that test, not in whichever test the garbage
    collector happens to run next (which differs between Python versions)."""
    yield
    gc.collect()
