"""Behind a real Postfix: ``smtpd --lmtp`` as the LMTP transport of a private Postfix.

The Postfix is started here, apart from any system one (its own config, queue and log
folder, loopback ports; ``benchmarks/postfix.py``), and relays ``our.test`` with
``transport_maps = inline:{our.test=lmtp:inet:127.0.0.1:<our port>}``. Mail for two
recipients goes into its smtpd; our LMTP listener answers each recipient after DATA:
one mailbox is over its quota (``452 4.2.2``), the other takes the message (``250``).
Postfix delivers the one, keeps the other queued and retries only it; once the quota
is lifted, that one is delivered too, once, and nothing is stored twice. And with the
README's ``reject_unverified_recipient``, Postfix probes us at RCPT and refuses an
unknown user in its own dialogue.

Postfix is installed by ``make test`` (``benchmarks/install_postfix.sh``); without it
this test fails, never skips. It needs root, as Postfix's master does.
"""

from __future__ import annotations

import os
import re
import smtplib
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

from django_inbound_smtp.models import InboundMessage, InboundRecipient, Mailbox
from tests.helpers import postfix_module, subprocess_env
from tests.smtpd_process import Smtpd, logged_settings

pytestmark = [pytest.mark.integration, pytest.mark.slow]

# Big enough that the message (our Received: line and Postfix's included) does not fit
# in the quota, while nothing is stored yet: the refusal comes after DATA.
BODY = "Subject: through Postfix\r\nMessage-ID: <pf1@example.org>\r\n\r\n" + "x" * 400 + "\r\n"
QUOTA_BYTES = 200
TIMEOUT = 15.0


def _relay_config(postfix: ModuleType, lmtp_port: int, *, extra: str = "") -> Callable[[Path], str]:
    def config(folder: Path) -> str:
        common: str = postfix.common_main_cf(folder, hostname="mta.postfix.test")
        return (
            "# Written by tests/test_postfix_lmtp.py; removed afterwards.\n"
            + common
            + f"""\
mydestination =
relay_domains = our.test
transport_maps = inline:{{our.test=lmtp:inet:127.0.0.1:{lmtp_port}}}
lmtp_destination_recipient_limit = 50
# Retry deferred recipients within a second or two, not after minutes.
queue_run_delay = 1s
minimal_backoff_time = 1s
maximal_backoff_time = 1s
"""
            + extra
        )

    return config


# The README's advice: Postfix asks us at RCPT time (an address probe over LMTP: LHLO,
# MAIL FROM:<>, RCPT, no DATA) and refuses unknown users in its own dialogue.
VERIFY = """\
smtpd_relay_restrictions = permit_mynetworks, reject_unauth_destination
smtpd_recipient_restrictions = reject_unauth_destination, reject_unverified_recipient
unverified_recipient_reject_code = 550
address_verify_poll_delay = 1s
"""


@pytest.fixture
def lmtp_smtpd(transactional_db: None, tmp_path: Path) -> Iterator[Smtpd]:
    server = Smtpd(subprocess_env(**logged_settings(tmp_path)), "--lmtp")
    try:
        yield server
    finally:
        assert server.stop() == 0, server.text()


@contextmanager
def _running_postfix(lmtp_port: int, *, extra: str = "") -> Iterator[Any]:
    postfix = postfix_module("LMTP")
    # Its own folder, which the postfix user can enter (pytest's tmp_path is private).
    folder = Path(tempfile.mkdtemp(prefix="inbound-test-postfix-"))
    os.chmod(folder, 0o755)
    server = postfix.PostfixServer(folder, config=_relay_config(postfix, lmtp_port, extra=extra))
    try:
        server.start(timeout=TIMEOUT)
        yield server
    finally:
        server.stop()
        problems = server.log_problems()
        server.remove()
        assert not problems, problems


@pytest.fixture
def private_postfix(lmtp_smtpd: Smtpd) -> Iterator[Any]:
    with _running_postfix(lmtp_smtpd.port) as server:
        yield server


@pytest.fixture
def verifying_postfix(lmtp_smtpd: Smtpd) -> Iterator[Any]:
    with _running_postfix(lmtp_smtpd.port, extra=VERIFY) as server:
        yield server


def _wait_for(
    condition: Callable[[], bool], what: str, postfix: Any, smtpd: Smtpd, *, flush: bool = False
) -> None:
    """Wait for ``condition``; with ``flush``, ask Postfix every second to deliver its
    deferred mail now (``postqueue -f``), so a retry does not wait for the next queue
    scan (on a loaded machine qmgr can skip a message still locked by the delivery that
    deferred it, and then leave it until a later scan)."""
    deadline = time.monotonic() + TIMEOUT
    flushed_at = time.monotonic()
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(
                f"timed out waiting for {what}\n--- postfix\n{postfix.log_tail(40)}\n"
                f"--- smtpd\n{smtpd.text()}"
            )
        if flush and time.monotonic() - flushed_at >= 1.0:
            flushed = postfix.postqueue("-f")
            assert flushed.returncode == 0, flushed.stderr
            flushed_at = time.monotonic()
        time.sleep(0.05)


def _deliveries(log: str, address: str, status: str) -> list[str]:
    return re.findall(rf"to=<{re.escape(address)}>,.* status={status} \(([^\n]*)\)", log)


def test_postfix_delivers_to_both_and_retries_only_the_recipient_over_quota(
    lmtp_smtpd, private_postfix
) -> None:
    full = Mailbox.objects.create(address="full@our.test", quota_bytes=QUOTA_BYTES)
    roomy = Mailbox.objects.create(address="roomy@our.test")
    with smtplib.SMTP("127.0.0.1", private_postfix.port, timeout=10) as client:
        refused = client.sendmail("sender@example.org", ["full@our.test", "roomy@our.test"], BODY)
    assert refused == {}

    def log() -> str:
        return str(private_postfix.log_text())

    # One LMTP transaction for both: our reply for each recipient after DATA.
    _wait_for(
        lambda: (
            bool(_deliveries(log(), "roomy@our.test", "sent"))
            and bool(_deliveries(log(), "full@our.test", "deferred"))
        ),
        "the first delivery",
        private_postfix,
        lmtp_smtpd,
    )
    (sent,) = _deliveries(log(), "roomy@our.test", "sent")
    first = InboundMessage.objects.get()
    assert sent == f"250 2.0.0 Ok: queued as {first.queue_id}"
    (deferred,) = _deliveries(log(), "full@our.test", "deferred")[:1]
    assert "said: 452 4.2.2 <full@our.test>: Mailbox full, try again later" in deferred
    assert "(in reply to end of DATA command)" in deferred
    # Stored once, for the recipient that took it.
    assert [r.mailbox_id for r in first.recipients.all()] == [roomy.pk]
    # Postfix keeps the refused recipient queued and retries it, and only it.
    _wait_for(
        lambda: len(_deliveries(log(), "full@our.test", "deferred")) >= 2,
        "a retry of the recipient over quota",
        private_postfix,
        lmtp_smtpd,
        flush=True,
    )
    assert sum(private_postfix.queued().values()) == 1
    assert len(_deliveries(log(), "roomy@our.test", "sent")) == 1
    assert InboundMessage.objects.count() == 1

    # Room is made: the next retry (flushed now) delivers it, once.
    Mailbox.objects.filter(pk=full.pk).update(quota_bytes=None)
    flushed = private_postfix.postqueue("-f")
    assert flushed.returncode == 0, flushed.stderr
    _wait_for(
        lambda: bool(_deliveries(log(), "full@our.test", "sent")),
        "the delivery after the quota was lifted",
        private_postfix,
        lmtp_smtpd,
        flush=True,
    )
    _wait_for(
        lambda: sum(private_postfix.queued().values()) == 0,
        "an empty Postfix queue",
        private_postfix,
        lmtp_smtpd,
    )
    second = InboundMessage.objects.exclude(pk=first.pk).get()
    ((sent_full,),) = [_deliveries(log(), "full@our.test", "sent")]
    assert sent_full == f"250 2.0.0 Ok: queued as {second.queue_id}"
    assert [r.mailbox_id for r in second.recipients.all()] == [full.pk]
    # Each recipient's copy stored exactly once; no duplicate, nothing left over.
    assert InboundRecipient.objects.filter(mailbox=roomy).count() == 1
    assert InboundRecipient.objects.filter(mailbox=full).count() == 1
    assert not InboundMessage.objects.filter(status=InboundMessage.Status.DUPLICATE).exists()
    assert len(_deliveries(log(), "roomy@our.test", "sent")) == 1
    # The retry carried the same message (Postfix adds its own header fields).
    assert first.message_id == second.message_id == "<pf1@example.org>"
    body = b"\r\n\r\n" + b"x" * 400 + b"\r\n"
    assert first.raw_bytes.endswith(body)
    assert second.raw_bytes.endswith(body)


def test_postfix_verifies_recipients_with_us_and_refuses_an_unknown_one(
    lmtp_smtpd, verifying_postfix
) -> None:
    Mailbox.objects.create(address="known@our.test")
    with smtplib.SMTP("127.0.0.1", verifying_postfix.port, timeout=10) as client:
        client.ehlo("client.test")
        assert client.mail("sender@example.org")[0] == 250
        # The first probe may still be under way: Postfix then asks to retry later.
        deadline = time.monotonic() + TIMEOUT
        while (reply := client.rcpt("nobody@our.test"))[0] == 450:
            assert time.monotonic() < deadline, reply
            time.sleep(0.2)
        assert reply[0] == 550, reply
        # Postfix quotes our RCPT reply to its probe.
        assert (
            reply[1]
            .decode()
            .endswith(
                "said: 550 5.1.1 <nobody@our.test>: Recipient address rejected: User unknown "
                "(in reply to RCPT TO command)"
            )
        ), reply
        while (reply := client.rcpt("known@our.test"))[0] == 450:
            assert time.monotonic() < deadline, reply
            time.sleep(0.2)
        assert reply[0] == 250, reply
        assert client.data(BODY)[0] == 250
    _wait_for(
        lambda: sum(verifying_postfix.queued().values()) == 0,
        "the delivery to the known recipient",
        verifying_postfix,
        lmtp_smtpd,
    )
    # Probes store nothing (they end before DATA); the one message is for the known user.
    message = InboundMessage.objects.get()
    assert [r.address for r in message.recipients.all()] == ["known@our.test"]
