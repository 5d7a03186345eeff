"""Tests of the ticket comments, with the public test kit of django_inbound_smtp.

They need the example project's settings (the ``inbox`` app), so the repository's
suite runs them in a subprocess (``tests/test_example_inbox.py``). By hand, from the
repository root:

    DJANGO_SETTINGS_MODULE=example_project.settings EXAMPLE_DB_PATH=/tmp/example.sqlite3 \\
        .venv/bin/python -m pytest example_project/inbox/tests.py --ds=example_project.settings

``deliver()`` runs the recipient validators, the write path and the processing (the
``message_received`` receivers) in the test's thread and transaction, so plain
``django_db`` tests see everything it did.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator

import pytest
from django.contrib.auth import get_user_model
from django.core import mail
from django.core.management import call_command

from django_inbound_smtp.exceptions import Rejected
from django_inbound_smtp.lifecycle.process import Outcome, process_message
from django_inbound_smtp.lifecycle.schedule import reprocess
from django_inbound_smtp.models import InboundMessage, Mailbox, ReplyTrust
from django_inbound_smtp.testing import captured_messages, deliver
from inbox.models import Comment, Ticket
from inbox.notifications import notify_requester

pytestmark = pytest.mark.django_db

QUOTED_REPLY = (
    "It is out now, thanks.\r\n"
    "The toner was the problem.\r\n"
    "\r\n"
    "On Mon, 1 Jun 2026 at 10:00, Support <support@example.test> wrote:\r\n"
    "> Is the printer still on fire?\r\n"
    ">\r\n"
    "> Regards, Support\r\n"
)


def reply(
    to: str, body: str = QUOTED_REPLY, *, headers: str = "", sender: str = "alice@example.org"
) -> bytes:
    return (
        f"From: {sender}\r\n"
        f"To: {to}\r\n"
        "Subject: Re: Printer on fire\r\n"
        f"Message-ID: <reply-{abs(hash((to, body, headers)))}@example.org>\r\n"
        "Content-Type: text/plain; charset=utf-8\r\n" + headers + "\r\n" + body
    ).encode()


@pytest.fixture
def ticket() -> Ticket:
    return Ticket.objects.create(subject="Printer on fire")


@pytest.fixture
def inbox_log(caplog: pytest.LogCaptureFixture) -> Iterator[pytest.LogCaptureFixture]:
    # The example LOGGING does not propagate "inbox" to the root logger, where caplog
    # listens: attach its handler to "inbox" itself.
    logger = logging.getLogger("inbox")
    logger.addHandler(caplog.handler)
    try:
        yield caplog
    finally:
        logger.removeHandler(caplog.handler)


def test_reply_becomes_one_comment_without_the_quote(ticket: Ticket) -> None:
    address = ticket.reply_address
    assert address.startswith("reply+")
    assert address.endswith("@example.test")
    message = deliver(reply(address), mail_from="alice@example.org")
    comment = Comment.objects.get()
    assert comment.ticket == ticket
    assert comment.body == "It is out now, thanks.\nThe toner was the problem."
    assert comment.author_email == "alice@example.org"
    assert comment.source_message == message
    assert comment.trust == ReplyTrust.NO_USER  # the ticket's own address: anyone may reply
    message.refresh_from_db()
    assert message.status == InboundMessage.Status.PROCESSED
    assert message.recipients.get().route == "ticket replies"


def test_processing_the_message_again_adds_no_second_comment(ticket: Ticket) -> None:
    message = deliver(reply(ticket.reply_address), mail_from="alice@example.org")
    assert Comment.objects.count() == 1
    # At least once: the message is processed again (a crash, an admin action).
    assert reprocess([message.pk]) == 1
    assert process_message(message.pk, owner="t") is Outcome.PROCESSED
    assert Comment.objects.count() == 1
    message.refresh_from_db()
    assert message.status == InboundMessage.Status.PROCESSED
    assert message.attempts == 2


def test_a_forged_or_unsigned_ticket_address_is_refused_at_rcpt(ticket: Ticket) -> None:
    address = ticket.reply_address
    local, _, domain = address.partition("@")
    forged = local[:-1] + ("a" if local[-1] != "a" else "b") + "@" + domain
    for wrong in (forged, f"ticket+{ticket.pk}@example.test", "tickets@example.test"):
        with pytest.raises(Rejected) as refused:
            deliver(reply(wrong), mail_from="alice@example.org", to=[wrong])
        assert refused.value.reply.code == 550
    assert not Comment.objects.exists()


def test_the_signal_is_sent_once_and_the_recipient_names_the_ticket(ticket: Ticket) -> None:
    with captured_messages() as captured:
        message = deliver(reply(ticket.reply_address), mail_from="alice@example.org")
    assert [c.message.pk for c in captured] == [message.pk]
    (recipient,) = captured[0].kwargs["recipients"]
    assert recipient.address == ticket.reply_address
    assert recipient.reply_object == ticket


def test_one_message_to_two_tickets_comments_on_both(ticket: Ticket) -> None:
    other = Ticket.objects.create(subject="Coffee machine")
    to = [ticket.reply_address, other.reply_address, ticket.reply_address.upper()]
    deliver(reply(ticket.reply_address), mail_from="alice@example.org", to=to)
    assert sorted(Comment.objects.values_list("ticket_id", flat=True)) == [ticket.pk, other.pk]


def test_other_mail_adds_no_comment(ticket: Ticket) -> None:
    Mailbox.objects.create(address="demo@example.test")
    deliver(reply("demo@example.test"), mail_from="alice@example.org", to=["demo@example.test"])
    # A bounce (null sender): never a comment, and never answered.
    deliver(reply(ticket.reply_address), mail_from="", to=[ticket.reply_address])
    assert not Comment.objects.exists()
    assert set(InboundMessage.objects.values_list("status", flat=True)) == {"processed"}


def test_auto_replies_and_list_mail_never_become_comments(ticket: Ticket) -> None:
    """The route takes regular mail only: an out-of-office answer to a notification, and
    a mailing list that got the address, have a sender and new text, and still stay out."""
    address = ticket.reply_address
    vacation = reply(
        address,
        "I am out of the office until Monday.\r\n",
        headers="Auto-Submitted: auto-replied\r\n",
    )
    listed = reply(
        address, "Anyone seen this?\r\n", headers="List-Id: <users.lists.example.org>\r\n"
    )
    for raw in (vacation, listed):
        deliver(raw, mail_from="alice@example.org", to=[address])
    assert not Comment.objects.exists()
    kinds = set(InboundMessage.objects.values_list("kind", "recipients__route"))
    assert kinds == {("auto_reply", ""), ("list", "")}


def test_only_the_new_text_becomes_the_comment(ticket: Ticket) -> None:
    # An Outlook reply in German with a signature: the header block, the quoted mail
    # and the "-- " signature stay out of the comment (message.reply_text).
    body = (
        "Der Toner war leer, jetzt geht er wieder.\r\n\r\n"
        "-- \r\nAlice Example\r\nExample GmbH\r\n\r\n"
        "Von: Support <support@example.test>\r\n"
        "Gesendet: Montag, 1. Juni 2026 10:00\r\n"
        "An: Alice <alice@example.org>\r\n"
        "Betreff: Printer on fire\r\n\r\n"
        "Brennt der Drucker noch?\r\n"
    )
    message = deliver(reply(ticket.reply_address, body), mail_from="alice@example.org")

    assert Comment.objects.get().body == "Der Toner war leer, jetzt geht er wieder."
    assert message.reply_text == "Der Toner war leer, jetzt geht er wieder."


def test_a_reply_with_nothing_new_adds_no_comment(
    ticket: Ticket, inbox_log: pytest.LogCaptureFixture
) -> None:
    body = "On Mon, 1 Jun 2026 at 10:00, Support <support@example.test> wrote:\r\n> Fixed?\r\n"
    message = deliver(reply(ticket.reply_address, body), mail_from="alice@example.org")

    assert not Comment.objects.exists()
    assert f"{message.queue_id}: nothing but quoted text, no comment added" in inbox_log.text


def test_a_notification_carries_an_address_signed_for_the_requester(
    ticket: Ticket, inbox_log: pytest.LogCaptureFixture
) -> None:
    alice = get_user_model().objects.create_user("alice", email="alice@example.org")
    ticket.requester = alice
    ticket.save()
    notify_requester(ticket, "We replaced the toner.")
    (sent,) = mail.outbox
    assert sent.to == ["alice@example.org"]
    (address,) = sent.reply_to
    assert address.startswith("reply+")
    assert address != ticket.reply_address  # issued to Alice, not the ticket's own

    # Someone CC'd on the notification answers: not posted as Alice.
    mallory = "mallory@example.net"
    deliver(reply(address, sender=mallory), mail_from=mallory, to=[address])
    assert "not from the user it was sent to (sender_mismatch)" in inbox_log.text
    # Alice's address, but nothing vouches for it (these tests ask no DNS: no SPF, no
    # DKIM): not posted either, since anyone can write her address in From.
    deliver(reply(address, "Works now.\r\n"), mail_from="alice@example.org", to=[address])
    assert "not from the user it was sent to (not_authenticated)" in inbox_log.text
    assert not Comment.objects.exists()
    assert set(InboundMessage.objects.values_list("recipients__reply_trust", flat=True)) == {
        ReplyTrust.SENDER_MISMATCH,
        ReplyTrust.NOT_AUTHENTICATED,
    }


def test_inbound_route_explains_a_ticket_reply(ticket: Ticket, capsys) -> None:
    call_command("inbound_route", ticket.reply_address)
    out = capsys.readouterr().out
    assert "accepted at RCPT" in out
    assert "=> route ticket replies: handler inbox.comments.add_comment (callable)" in out
