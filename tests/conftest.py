"""Shared fixtures: mailbox factory, a real listener on a loopback port, SMTP helpers."""

from __future__ import annotations

import smtplib
from collections.abc import Callable, Iterator

import pytest

from django_inbound_smtp.models import Mailbox
from django_inbound_smtp.testing import RunningServer, running_server
from tests.helpers import GuardedSMTP


@pytest.fixture
def make_mailbox(db: None) -> Callable[..., Mailbox]:
    """Create a mailbox: ``make_mailbox("user@our.test")``."""

    def make(address: str, **fields: object) -> Mailbox:
        return Mailbox.objects.create(address=address, **fields)

    return make


@pytest.fixture
def smtp_server(transactional_db: None) -> Iterator[RunningServer]:
    """The real listener on 127.0.0.1:<ephemeral>, stopped (and drained) after the test."""
    with running_server() as server:
        yield server


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
        try:
            client.quit()
        except smtplib.SMTPServerDisconnected:
            pass
