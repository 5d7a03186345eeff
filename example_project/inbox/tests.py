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

from django_inbound_smtp.exceptions import Rejected
from django_inbound_smtp.lifecycle.process import Outcome, process_message
from django_inbound_smtp.lifecycle.schedule import reprocess
from django_inbound_smtp.models import InboundMessage, Mailbox
from django_inbound_smtp.testing import captured_messages, deliver
from inbox.models import TICKET_MAILBOX, Comment, Ticket

pytestmark = pytest.mark.django_db

QUOTED_REPLY = (
    "It is out now, thanks.\r\n"
    "The toner was the problem.\r\n"
    "\r\n"
    "On Mon, 1 Jun 2026 at 10:00, Support <ticket@example.test> wrote:\r\n"
    "> Is the printer still on fire?\r\n"
    ">\r\n"
    "> Regards, Support\r\n"
)


def reply(ticket_id: int | str, body: str = QUOTED_REPLY) -> bytes:
    return (
        "From: Alice <alice@example.org>\r\n"
        f"To: ticket+{ticket_id}@example.test\r\n"
        "Subject: Re: Printer on fire\r\n"
        f"Message-ID: <reply-{ticket_id}@example.org>\r\n"
        "Content-Type: text/plain; charset=utf-8\r\n"
        "\r\n" + body
    ).encode()


@pytest.fixture
def ticket() -> Ticket:
    Mailbox.objects.create(address=TICKET_MAILBOX)
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
    message = deliver(reply(ticket.pk), mail_from="alice@example.org")

    comment = Comment.objects.get()
    assert comment.ticket == ticket
    assert comment.body == "It is out now, thanks.\nThe toner was the problem."
    assert comment.author_email == "alice@example.org"
    assert comment.source_message == message
    message.refresh_from_db()
    assert message.status == InboundMessage.Status.PROCESSED


def test_processing_the_message_again_adds_no_second_comment(ticket: Ticket) -> None:
    message = deliver(reply(ticket.pk), mail_from="alice@example.org")
    assert Comment.objects.count() == 1

    # At least once: the message is processed again (a crash, an admin action).
    assert reprocess([message.pk]) == 1
    assert process_message(message.pk, owner="t") is Outcome.PROCESSED

    assert Comment.objects.count() == 1
    message.refresh_from_db()
    assert message.status == InboundMessage.Status.PROCESSED
    assert message.attempts == 2


def test_unknown_ticket_adds_nothing_and_the_message_is_processed(
    ticket: Ticket, inbox_log: pytest.LogCaptureFixture
) -> None:
    missing = ticket.pk + 1000
    message = deliver(reply(missing), mail_from="alice@example.org")

    assert not Comment.objects.exists()
    message.refresh_from_db()
    assert message.status == InboundMessage.Status.PROCESSED
    assert message.error == ""
    assert [(r.levelno, r.getMessage()) for r in inbox_log.records if "ticket" in r.msg] == [
        (logging.WARNING, f"{message.queue_id}: no ticket #{missing}, no comment added")
    ]


def test_the_signal_is_sent_once_with_the_ticket_recipient(ticket: Ticket) -> None:
    with captured_messages() as captured:
        message = deliver(reply(ticket.pk), mail_from="alice@example.org")

    assert [c.message.pk for c in captured] == [message.pk]
    (recipient,) = captured[0].kwargs["recipients"]
    assert recipient.address == f"ticket+{ticket.pk}@example.test"
    assert recipient.tag == str(ticket.pk)
    assert recipient.mailbox.address == TICKET_MAILBOX


def test_one_message_to_two_tickets_comments_on_both(ticket: Ticket) -> None:
    other = Ticket.objects.create(subject="Coffee machine")
    to = [ticket.reply_address, other.reply_address, ticket.reply_address.upper()]

    deliver(reply(ticket.pk), mail_from="alice@example.org", to=to)

    assert sorted(Comment.objects.values_list("ticket_id", flat=True)) == [ticket.pk, other.pk]


def test_other_mail_adds_no_comment(ticket: Ticket) -> None:
    Mailbox.objects.create(address="demo@example.test")
    deliver(reply(ticket.pk), mail_from="alice@example.org", to=["demo@example.test"])
    # A tag that is not a ticket id.
    deliver(reply("abc"), mail_from="alice@example.org", to=["ticket+abc@example.test"])
    # A bounce (null sender): never a comment, and never answered.
    deliver(reply(ticket.pk), mail_from="", to=[ticket.reply_address])

    assert not Comment.objects.exists()
    assert set(InboundMessage.objects.values_list("status", flat=True)) == {"processed"}


def test_mail_for_an_unknown_address_is_refused(ticket: Ticket) -> None:
    with pytest.raises(Rejected):
        deliver(reply(ticket.pk), mail_from="alice@example.org", to=["tickets@example.test"])


def test_only_the_new_text_becomes_the_comment(ticket: Ticket) -> None:
    # An Outlook reply in German with a signature: the header block, the quoted mail
    # and the "-- " signature stay out of the comment (message.reply_text).
    body = (
        "Der Toner war leer, jetzt geht er wieder.\r\n\r\n"
        "-- \r\nAlice Example\r\nExample GmbH\r\n\r\n"
        "Von: Support <ticket@example.test>\r\n"
        "Gesendet: Montag, 1. Juni 2026 10:00\r\n"
        "An: Alice <alice@example.org>\r\n"
        "Betreff: Printer on fire\r\n\r\n"
        "Brennt der Drucker noch?\r\n"
    )
    message = deliver(reply(ticket.pk, body), mail_from="alice@example.org")

    assert Comment.objects.get().body == "Der Toner war leer, jetzt geht er wieder."
    assert message.reply_text == "Der Toner war leer, jetzt geht er wieder."


def test_a_reply_with_nothing_new_adds_no_comment(
    ticket: Ticket, inbox_log: pytest.LogCaptureFixture
) -> None:
    body = "On Mon, 1 Jun 2026 at 10:00, Support <ticket@example.test> wrote:\r\n> Fixed?\r\n"
    message = deliver(reply(ticket.pk, body), mail_from="alice@example.org")

    assert not Comment.objects.exists()
    assert f"{message.queue_id}: nothing but quoted text, no comment added" in inbox_log.text
