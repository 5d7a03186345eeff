"""A real bounce: a private Postfix cannot deliver, and its DSN comes back to us.

The app's outgoing relay is a private Postfix (``benchmarks/postfix.py``: its own
config, queue and log folder, loopback only). It sends ``remote.test`` and ``app.test``
to our real listener (``transport_maps`` to ``smtp:[127.0.0.1]:<our port>``, no DNS),
which plays both parts:

1. the remote MX: it refuses ``gone@remote.test`` at RCPT (``550 5.1.1 ... User
   unknown``: only ``known@remote.test`` is a mailbox), so Postfix gives up at once;
2. the app's MX: Postfix's bounce daemon sends its RFC 3464 DSN, from the null
   sender, to ``notify@app.test``, which we store and process.

The stored DSN must be ``kind = "bounce"`` with one ``BounceRecipient`` (failed,
5.1.1, the diagnostic naming the refusal, the returned Message-ID), and
``message_bounced`` must fire once naming the failed address.
``tests/fixtures/bounces/postfix.eml`` is a DSN this test captured (our ``Received:``
line removed): set ``INBOUND_WRITE_POSTFIX_FIXTURE=1`` to write it again.

Postfix is installed by ``make test`` (``benchmarks/install_postfix.sh``); without it
this test fails, never skips. It needs root, as Postfix's master does. Exim, the other
MTA the corpus has a real-shaped sample of, cannot be installed beside Postfix on
Debian (both are a ``mail-transport-agent``; installing one removes the other), so the
Exim samples are written from Exim's documented output instead.
"""

from __future__ import annotations

import os
import smtplib
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from django_inbound_smtp.models import BounceRecipient, InboundMessage, Mailbox
from django_inbound_smtp.parsing.mime import parse_message
from django_inbound_smtp.signals import message_bounced
from django_inbound_smtp.testing import running_server
from tests.helpers import postfix_module

pytestmark = [pytest.mark.integration, pytest.mark.slow]

FIXTURE = Path(__file__).parent / "fixtures" / "bounces" / "postfix.eml"
OUR_HOST = "mx.app.test"
TIMEOUT = 15.0
ORIGINAL = (
    "From: notify@app.test\r\nTo: gone@remote.test\r\nSubject: Your weekly summary\r\n"
    "Message-ID: <summary-1@app.test>\r\n\r\nHello.\r\n"
)


@pytest.fixture
def relay_postfix(transactional_db: None) -> Iterator[tuple[Any, Any]]:
    """Our listener, and a private Postfix relaying both test domains to it."""
    postfix = postfix_module("bounce")
    Mailbox.objects.create(address="notify@app.test")
    Mailbox.objects.create(address="known@remote.test")
    with running_server(hostname=OUR_HOST) as server:

        def config(folder: Path) -> str:
            ours = f"smtp:[127.0.0.1]:{server.port}"
            common: str = postfix.common_main_cf(folder, hostname="mta.postfix.test")
            return (
                "# Written by tests/test_postfix_bounce.py; removed afterwards.\n"
                + common
                + f"""\
mydestination =
transport_maps = inline:{{remote.test={ours}, app.test={ours}}}
smtp_helo_name = mta.postfix.test
"""
            )

        folder = Path(tempfile.mkdtemp(prefix="inbound-test-postfix-"))
        os.chmod(folder, 0o755)  # the postfix user enters it; pytest's tmp_path is private
        relay = postfix.PostfixServer(folder, config=config)
        try:
            relay.start(timeout=TIMEOUT)
            yield relay, server
        finally:
            relay.stop()
            problems = relay.log_problems()
            relay.remove()
            assert not problems, problems


def _wait_for_bounce(relay: Any) -> InboundMessage:
    deadline = time.monotonic() + TIMEOUT
    while True:
        found = InboundMessage.objects.filter(
            kind=InboundMessage.Kind.BOUNCE, status=InboundMessage.Status.PROCESSED
        ).first()
        if found is not None:
            return found
        if time.monotonic() > deadline:
            raise AssertionError(f"no bounce processed\n{relay.log_tail(40)}")
        time.sleep(0.05)


def test_a_real_postfix_bounce_is_stored_as_a_bounce_with_its_recipient(relay_postfix) -> None:
    relay, _server = relay_postfix
    fired: list[dict[str, Any]] = []

    def on_bounce(sender: type, **kwargs: Any) -> None:
        fired.append({"sender": sender, **kwargs})

    message_bounced.connect(on_bounce, weak=False)
    try:
        with smtplib.SMTP("127.0.0.1", relay.port, timeout=10) as client:
            refused = client.sendmail("notify@app.test", ["gone@remote.test"], ORIGINAL)
        assert refused == {}  # Postfix queued it; the refusal comes on delivery
        bounce = _wait_for_bounce(relay)
    finally:
        message_bounced.disconnect(on_bounce)

    # Postfix's bounce, as delivered to us: from the null sender, a DSN.
    assert bounce.envelope_from == ""
    assert [r.address for r in bounce.recipients.all()] == ["notify@app.test"]
    assert bounce.kind_reason == "RFC 3464 delivery status notification"
    assert "Undelivered Mail Returned to Sender" in bounce.subject
    (row,) = BounceRecipient.objects.filter(message=bounce)
    assert (row.final_recipient, row.original_recipient) == ("gone@remote.test",) * 2
    assert (row.action, row.status) == ("failed", "5.1.1")
    assert row.diagnostic_code == (
        "smtp; 550 5.1.1 <gone@remote.test>: Recipient address rejected: User unknown"
    )
    assert row.remote_mta == "127.0.0.1"
    assert row.original_message_id == "<summary-1@app.test>"
    # Once, naming the failed address, after the bounce was committed.
    assert len(fired) == 1
    (call,) = fired
    assert call["sender"] is InboundMessage
    assert call["message"].pk == bounce.pk
    assert call["failed"] == ["gone@remote.test"]
    assert [r.pk for r in call["recipients"]] == [row.pk]
    assert call["original_message_id"] == "<summary-1@app.test>"

    raw = bounce.raw_bytes
    ours, _sep, rest = raw.partition(b"\r\nReceived: ")
    assert b"(django-inbound-smtp)" in ours
    captured = b"Received: " + rest
    if os.environ.get("INBOUND_WRITE_POSTFIX_FIXTURE") == "1":
        FIXTURE.write_bytes(captured.replace(b"\r\n", b"\n"))
    # The corpus's sample reads the same as the bounce Postfix made just now.
    fixture = parse_message(FIXTURE.read_bytes().replace(b"\n", b"\r\n"))
    live = parse_message(captured)
    assert [p.content_type for p in fixture.attachments] == [
        p.content_type for p in live.attachments
    ]
    assert fixture.subject == live.subject
