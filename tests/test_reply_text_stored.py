"""Tier 4: the new text of a reply is stored by the parse step, over real SMTP into the
real database, and receivers of ``message_received`` read it from the message; the
admin shows it escaped."""

from __future__ import annotations

from pathlib import Path

import pytest
from django.contrib.auth.models import User
from django.test import Client
from django.urls import reverse

from django_inbound_smtp.lifecycle import extract as extraction
from django_inbound_smtp.models import InboundMessage, Mailbox
from django_inbound_smtp.testing import deliver, running_server
from tests.helpers import GuardedSMTP, receiver_connected

pytestmark = pytest.mark.django_db(transaction=True)

CORPUS = Path(__file__).parent / "fixtures" / "replies"


@pytest.fixture(autouse=True)
def catch_all(db: None) -> Mailbox:
    return Mailbox.objects.create(address="*@our.test")


def _expected(name: str) -> str:
    return (CORPUS / f"{name}.expected.txt").read_text(encoding="utf-8").strip()


@pytest.mark.integration
def test_replies_sent_over_smtp_have_their_new_text_after_processing() -> None:
    names = ["gmail_web_de", "outlook_desktop_ja", "ios_mail_ru", "apple_mail_fr_html_only"]
    seen: dict[str, tuple[str, str]] = {}

    def receiver(sender, message, **kwargs):
        seen[message.message_id] = (message.reply_text, message.reply_html)

    with receiver_connected(receiver), running_server() as server:
        with GuardedSMTP(server.host, server.port, local_hostname="c.test", timeout=30) as client:
            client.ehlo()
            for name in names:
                client.mail("alice@example.org")
                client.rcpt("tickets@our.test")
                code, text = client.data((CORPUS / f"{name}.eml").read_bytes())
                assert code == 250, text

    stored = {m.message_id: m for m in InboundMessage.objects.all()}
    assert len(stored) == len(names)
    for name in names:
        message = stored[f"<{name}@example.org>"]
        assert message.status == InboundMessage.Status.PROCESSED
        assert message.reply_text == _expected(name), name
        # Receivers got the same values, in place, before the message was processed.
        assert seen[message.message_id] == (message.reply_text, message.reply_html)
    gmail = stored["<gmail_web_de@example.org>"]
    assert "gmail_quote" not in gmail.reply_html
    assert "Fixiereinheit" in gmail.reply_html
    assert "gmail_quote" in gmail.html  # the body itself is kept as sent
    html_only = stored["<apple_mail_fr_html_only@example.org>"]
    assert html_only.text == ""
    assert "Cordialement" in html_only.reply_text


def test_a_message_without_bodies_has_empty_reply_fields() -> None:
    message = deliver(b"Subject: nothing\r\nMessage-ID: <e@x>\r\n\r\n")
    assert (message.reply_text, message.reply_html) == ("", "")
    assert message.parsed_at is not None


def test_a_failing_extraction_leaves_the_reply_empty_not_the_message_failed(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    # A bug of ours in the rules cannot be produced on demand: raised here instead.
    def broken(text: str, *, subject: str = "") -> str:
        raise RuntimeError("bug")

    monkeypatch.setattr(extraction, "reply_text", broken)
    message = deliver((CORPUS / "gmail_web_en.eml").read_bytes(), to=["user@our.test"])
    message.refresh_from_db()
    assert message.status == InboundMessage.Status.PROCESSED
    assert message.text
    assert (message.reply_text, message.reply_html) == ("", "")
    assert "could not be extracted" in caplog.text


def test_the_admin_shows_the_reply_text_escaped(client: Client) -> None:
    raw = (
        b"Subject: Re: x\r\nMessage-ID: <adm@x>\r\nContent-Type: text/plain\r\n\r\n"
        b"<script>alert(1)</script> fine\r\n\r\n"
        b"On Mon, 1 Jun 2026 at 10:00, Bob <bob@example.com> wrote:\r\n> quoted line\r\n"
    )
    message = deliver(raw)
    client.force_login(User.objects.create_superuser("boss", "boss@x.test", "pw"))
    page = client.get(reverse("admin:inbound_smtp_inboundmessage_change", args=[message.pk]))
    content = page.content.decode()
    assert "&lt;script&gt;alert(1)&lt;/script&gt; fine</pre>" in content
    assert "<script>alert(1)" not in content
