"""Tier 4: the real listener over loopback sockets, with smtplib and aiosmtplib clients."""

from __future__ import annotations

import re
import smtplib
import socket
import threading
from pathlib import Path

import aiosmtplib
import pytest
from django.core.files.storage import storages
from django.test import override_settings

from django_inbound_smtp import validators
from django_inbound_smtp.models import InboundMessage, InboundRecipient, Mailbox
from django_inbound_smtp.signals import message_received
from django_inbound_smtp.testing import RunningServer, running_server
from tests.helpers import GuardedSMTP, broken_storages, receiver_connected, start_data

pytestmark = pytest.mark.integration

SIMPLE = (
    b"From: Alice <a@example.org>\r\nSubject: hello\r\nMessage-ID: <m1@example.org>\r\n\r\nHi!\r\n"
)


def _reply(client: smtplib.SMTP, command: str) -> tuple[int, str]:
    code, text = client.docmd(command)
    return code, text.decode()


def test_accepts_mail_for_a_mailbox_and_stores_envelope(make_mailbox, smtp_client) -> None:
    mailbox = make_mailbox("user@our.test")
    smtp_client.mail("a@example.org")
    assert smtp_client.rcpt("user@our.test")[0] == 250
    code, text = smtp_client.data(SIMPLE)
    assert code == 250
    assert text.decode().startswith("2.0.0 Ok: queued as ")
    message = InboundMessage.objects.get()
    assert text.decode().endswith(message.queue_id)
    assert message.envelope_from == "a@example.org"
    assert message.peer_ip == "127.0.0.1"
    assert message.peer_port == smtp_client.sock.getsockname()[1]
    assert message.helo == "client.test"
    assert message.tls is False
    assert message.subject == "hello"
    assert message.message_id == "<m1@example.org>"
    assert message.from_header == "Alice <a@example.org>"
    assert message.size == len(message.raw_bytes)
    assert message.raw_bytes.startswith(b"Received: from client.test ([127.0.0.1])\r\n\tby mx.test")
    assert message.raw_bytes.endswith(SIMPLE)
    (recipient,) = message.recipients.all()
    assert (recipient.address, recipient.mailbox, recipient.tag) == ("user@our.test", mailbox, "")


def test_unknown_user_on_served_domain_is_550_5_1_1(make_mailbox, smtp_client) -> None:
    make_mailbox("user@our.test")
    smtp_client.mail("a@example.org")
    code, text = smtp_client.rcpt("nobody@our.test")
    assert (code, text.decode()) == (
        550,
        "5.1.1 <nobody@our.test>: Recipient address rejected: User unknown",
    )


def test_foreign_domain_is_relay_denied(make_mailbox, smtp_client) -> None:
    make_mailbox("user@our.test")
    smtp_client.mail("a@example.org")
    code, text = smtp_client.rcpt("victim@example.net")
    assert (code, text.decode()) == (550, "5.7.1 <victim@example.net>: Relay access denied")
    # Relay tricks aimed at a foreign domain through ours are refused the same way.
    for trick in ["<@our.test:victim@example.net>", '<"victim@example.net"@example.net>']:
        assert _reply(smtp_client, f"RCPT TO:{trick}")[0] == 550
    assert smtp_client.docmd("DATA")[0] == 503
    assert not InboundMessage.objects.exists()


def test_inactive_mailbox_and_disabled_domain_reject(make_mailbox, smtp_client) -> None:
    make_mailbox("user@our.test")
    make_mailbox("old@our.test", is_active=False)
    make_mailbox("only@gone.test", is_active=False)
    smtp_client.mail("a@example.org")
    assert smtp_client.rcpt("old@our.test")[1].decode().startswith("5.1.1")
    assert smtp_client.rcpt("only@gone.test")[1].decode().startswith("5.7.1")


def test_domain_and_local_part_match_case_insensitively(make_mailbox, smtp_client) -> None:
    make_mailbox("User@Our.Test")
    smtp_client.mail("a@example.org")
    assert smtp_client.rcpt("USER@OUR.TEST")[0] == 250
    smtp_client.data(SIMPLE)
    assert InboundRecipient.objects.get().address == "USER@OUR.TEST"


def test_plus_address_delivers_to_base_mailbox_and_keeps_tag(make_mailbox, smtp_client) -> None:
    mailbox = make_mailbox("user@our.test")
    smtp_client.mail("a@example.org")
    assert smtp_client.rcpt("user+Invoices@our.test")[0] == 250
    smtp_client.data(SIMPLE)
    recipient = InboundRecipient.objects.get()
    assert (recipient.address, recipient.mailbox, recipient.tag) == (
        "user+Invoices@our.test",
        mailbox,
        "Invoices",
    )


def test_exact_plus_mailbox_wins_over_base(make_mailbox, smtp_client) -> None:
    make_mailbox("user@our.test")
    exact = make_mailbox("user+list@our.test")
    smtp_client.mail("a@example.org")
    smtp_client.rcpt("user+list@our.test")
    smtp_client.data(SIMPLE)
    recipient = InboundRecipient.objects.get()
    assert (recipient.mailbox, recipient.tag) == (exact, "")


@override_settings(INBOUND_SMTP={"HOSTNAME": "mx.test", "PLUS_DELIMITER": ""})
def test_plus_addressing_can_be_turned_off(make_mailbox, smtp_client) -> None:
    make_mailbox("user@our.test")
    smtp_client.mail("a@example.org")
    assert smtp_client.rcpt("user+tag@our.test")[1].decode().startswith("5.1.1")


def test_catch_all_accepts_any_local_part_but_exact_wins(make_mailbox, smtp_client) -> None:
    catch_all = make_mailbox("*@our.test")
    exact = make_mailbox("boss@our.test")
    smtp_client.mail("a@example.org")
    assert smtp_client.rcpt("anything@our.test")[0] == 250
    assert smtp_client.rcpt("boss@our.test")[0] == 250
    assert smtp_client.rcpt("x@other.test")[0] == 550
    smtp_client.data(SIMPLE)
    by_address = {r.address: r.mailbox for r in InboundRecipient.objects.all()}
    assert by_address == {"anything@our.test": catch_all, "boss@our.test": exact}


def test_multiple_recipients_make_one_message_with_one_row_each(make_mailbox, smtp_client) -> None:
    make_mailbox("a@our.test")
    make_mailbox("b@our.test")
    make_mailbox("*@two.test")
    refused = smtp_client.sendmail(
        "sender@example.org",
        ["a@our.test", "b@our.test", "c@two.test", "nobody@example.net"],
        SIMPLE,
    )
    assert list(refused) == ["nobody@example.net"]
    message = InboundMessage.objects.get()
    assert [r.address for r in message.recipients.all()] == [
        "a@our.test",
        "b@our.test",
        "c@two.test",
    ]
    # With several recipients our Received: line names none of them.
    assert b"for <" not in message.raw_bytes.split(b"\r\n\r\n")[0]


def test_repeated_rcpt_is_one_recipient(make_mailbox, smtp_client) -> None:
    make_mailbox("a@our.test")
    smtp_client.mail("s@example.org")
    assert smtp_client.rcpt("a@our.test")[0] == 250
    assert smtp_client.rcpt("A@our.test")[0] == 250
    smtp_client.data(SIMPLE)
    assert InboundRecipient.objects.count() == 1


def test_bcc_recipient_is_stored_from_the_envelope(make_mailbox, smtp_client) -> None:
    make_mailbox("to@our.test")
    hidden = make_mailbox("hidden@our.test")
    body = b"To: to@our.test\r\nSubject: bcc\r\n\r\nx\r\n"
    smtp_client.sendmail("s@example.org", ["to@our.test", "hidden@our.test"], body)
    message = InboundMessage.objects.get()
    assert b"hidden@our.test" not in message.raw_bytes
    assert message.recipients.filter(mailbox=hidden, address="hidden@our.test").exists()


def test_null_sender_is_accepted_and_stored_empty(make_mailbox, smtp_client) -> None:
    make_mailbox("user@our.test")
    assert _reply(smtp_client, "MAIL FROM:<>")[0] == 250
    assert smtp_client.rcpt("user@our.test")[0] == 250
    assert smtp_client.data(SIMPLE)[0] == 250
    assert InboundMessage.objects.get().envelope_from == ""


def test_eight_bit_and_non_ascii_content_is_stored_byte_exact(make_mailbox, smtp_client) -> None:
    make_mailbox("user@our.test")
    body = (
        "Subject: =?utf-8?q?Gr=C3=BC=C3=9Fe?=\r\nContent-Type: text/plain; charset=utf-8\r\n"
        "Content-Transfer-Encoding: 8bit\r\n\r\nGrüße, 日本語, ümlaut\r\n"
    ).encode() + b"latin-1 \xe9\xe8 and invalid \xff\xfe bytes\r\n.leading dot line\r\n"
    smtp_client.mail("a@example.org", ["BODY=8BITMIME"])
    smtp_client.rcpt("user@our.test")
    # smtplib dot-stuffs ".leading" to "..leading"; the server must undo exactly that.
    assert smtp_client.data(body)[0] == 250
    message = InboundMessage.objects.get()
    assert message.raw_bytes.endswith(body)
    assert message.subject == "Grüße"


async def test_aiosmtplib_client_is_served(make_mailbox, smtp_server: RunningServer) -> None:
    from asgiref.sync import sync_to_async

    await sync_to_async(make_mailbox)("user@our.test")
    async with aiosmtplib.SMTP(hostname=smtp_server.host, port=smtp_server.port) as client:
        errors, reply = await client.sendmail("a@example.org", ["user@our.test"], SIMPLE)
    assert errors == {}
    assert "queued as" in reply
    stored = await InboundMessage.objects.aget()
    assert stored.subject == "hello"


def test_size_is_advertised_and_enforced(make_mailbox, smtp_server: RunningServer) -> None:
    make_mailbox("user@our.test")
    with override_settings(INBOUND_SMTP={"HOSTNAME": "mx.test", "MAX_MESSAGE_SIZE": 2000}):
        client = GuardedSMTP(smtp_server.host, smtp_server.port, timeout=10)
        client.ehlo("client.test")
        assert client.esmtp_features["size"] == "2000"
        assert "enhancedstatuscodes" in client.esmtp_features
        assert "auth" not in client.esmtp_features
        code, text = client.docmd("MAIL FROM:<a@example.org> SIZE=5000")
        assert (code, text.decode()) == (
            552,
            "5.3.4 Message size exceeds fixed maximum message size",
        )
        client.mail("a@example.org")
        client.rcpt("user@our.test")
        code, text = client.data(b"Subject: big\r\n\r\n" + (b"x" * 70 + b"\r\n") * 40)
        assert (code, text.decode()) == (
            552,
            "5.3.4 Message size exceeds fixed maximum message size",
        )
        # The session stays usable and a message within the limit is accepted.
        assert client.sendmail("a@example.org", ["user@our.test"], SIMPLE) == {}
        client.quit()
    assert InboundMessage.objects.get().subject == "hello"


def test_sender_ignoring_the_limit_is_cut_off(make_mailbox, smtp_server: RunningServer) -> None:
    make_mailbox("user@our.test")
    with override_settings(INBOUND_SMTP={"HOSTNAME": "mx.test", "MAX_MESSAGE_SIZE": 1000}):
        with socket.create_connection((smtp_server.host, smtp_server.port), timeout=10) as sock:
            stream = start_data(sock)
            stream.write(b"x" * 998 + b"\r\n")
            stream.write((b"y" * 998 + b"\r\n") * 3)
            stream.flush()
            # hostile-inputs #55: past twice the limit we stop draining and hang up.
            assert stream.readline() == (
                b"421 4.3.4 Error: too much mail data, closing connection\r\n"
            )
            assert stream.readline() == b""
    assert not InboundMessage.objects.exists()


def test_rcpt_cap_is_452_4_5_3(make_mailbox, smtp_server: RunningServer) -> None:
    make_mailbox("*@our.test")
    with override_settings(INBOUND_SMTP={"HOSTNAME": "mx.test", "MAX_RECIPIENTS": 3}):
        client = GuardedSMTP(smtp_server.host, smtp_server.port, timeout=10)
        client.ehlo("c")
        client.mail("a@example.org")
        codes = [client.rcpt(f"u{i}@our.test")[0] for i in range(5)]
        assert codes == [250, 250, 250, 452, 452]
        assert client.rcpt("u9@our.test")[1].decode().startswith("4.5.3")
        assert client.data(SIMPLE)[0] == 250
        client.quit()
    assert InboundRecipient.objects.count() == 3


@pytest.mark.parametrize(
    ("command", "reply"),
    [
        ("RCPT TO:<us\x00er@our.test>", "501 5.1.3"),
        ("RCPT TO:<" + "x" * 65 + "@our.test>", "501 5.1.3"),
        ("RCPT TO:<user@" + "d" * 250 + ".test>", "501 5.1.3"),
        ("RCPT TO:<u@evil.com@our.test>", "553 5.1.3"),
        ("RCPT TO:<user@our.test> NOTIFY=NEVER", "555 5.5.4"),
    ],
)
def test_bad_recipient_syntax_is_refused_before_lookup(
    make_mailbox, smtp_client, command: str, reply: str
) -> None:
    make_mailbox("user@our.test")
    smtp_client.mail("a@example.org")
    code, text = _reply(smtp_client, command)
    assert f"{code} {text}".startswith(reply)


def test_bad_sender_syntax_is_refused(smtp_client) -> None:
    code, text = _reply(smtp_client, "MAIL FROM:<" + "s" * 70 + "@example.org>")
    assert (code, text[:5]) == (501, "5.1.7")


def test_command_order_errors_carry_enhanced_codes(smtp_server: RunningServer) -> None:
    client = GuardedSMTP(smtp_server.host, smtp_server.port, timeout=10)
    assert client.docmd("MAIL FROM:<a@example.org>")[1].decode().startswith("5.5.1")  # no HELO
    client.ehlo("c")
    assert client.docmd("RCPT TO:<a@our.test>")[1].decode().startswith("5.5.1")
    assert client.docmd("DATA")[1].decode().startswith("5.5.1")
    assert client.docmd("FOO")[1].decode().startswith("5.5.1")
    client.quit()


def test_rset_discards_the_transaction(make_mailbox, smtp_client) -> None:
    make_mailbox("user@our.test")
    smtp_client.mail("a@example.org")
    smtp_client.rcpt("user@our.test")
    assert smtp_client.rset()[0] == 250
    assert smtp_client.docmd("DATA")[0] == 503
    assert smtp_client.noop()[0] == 250


def test_two_messages_on_one_connection(make_mailbox, smtp_client) -> None:
    make_mailbox("user@our.test")
    for n in range(2):
        smtp_client.sendmail("a@example.org", ["user@our.test"], b"Subject: %d\r\n\r\nx\r\n" % n)
    assert sorted(InboundMessage.objects.values_list("subject", flat=True)) == ["0", "1"]
    assert len(set(InboundMessage.objects.values_list("queue_id", flat=True))) == 2


def test_smuggled_end_of_data_stays_in_the_body(make_mailbox, smtp_server: RunningServer) -> None:
    make_mailbox("user@our.test")
    smuggled = (
        b"MAIL FROM:<evil@example.org>\r\nRCPT TO:<user@our.test>\r\nDATA\r\n"
        b"Subject: smuggled\r\n\r\nx\r\n.\r\n"
    )
    with socket.create_connection((smtp_server.host, smtp_server.port), timeout=10) as sock:
        stream = start_data(sock)
        # "\n.\r\n" is not an end of data (CVE-2023-51764 class): what follows it is body
        # text up to the real CRLF.CRLF, and no second transaction is run.
        stream.write(b"Subject: real\r\n\r\nhi\n.\r\n" + smuggled + b"QUIT\r\n")
        stream.flush()
        assert stream.readline().startswith(b"250 2.0.0 Ok: queued as")
        assert stream.readline().startswith(b"221")
    message = InboundMessage.objects.get()
    assert message.envelope_from == "a@example.org"
    assert b"MAIL FROM:<evil@example.org>" in message.raw_bytes


def test_pipelined_commands_after_data_are_answered_in_order(make_mailbox, smtp_server) -> None:
    make_mailbox("user@our.test")
    with socket.create_connection((smtp_server.host, smtp_server.port), timeout=10) as sock:
        stream = sock.makefile("rwb")
        stream.readline()
        stream.write(b"EHLO c\r\n")
        stream.flush()
        while stream.readline()[3:4] == b"-":
            pass
        stream.write(b"MAIL FROM:<a@example.org>\r\nRCPT TO:<user@our.test>\r\nDATA\r\n")
        stream.flush()
        assert [stream.readline()[:3] for _ in range(3)] == [b"250", b"250", b"354"]
        # End of data, the next transaction and QUIT arrive in one write.
        stream.write(
            b"Subject: one\r\n\r\n.\r\nMAIL FROM:<b@example.org>\r\nRCPT TO:<user@our.test>\r\n"
            b"DATA\r\n"
        )
        stream.flush()
        assert [stream.readline()[:3] for _ in range(4)] == [b"250", b"250", b"250", b"354"]
        stream.write(b"Subject: two\r\n\r\n.\r\nQUIT\r\n")
        stream.flush()
        assert [stream.readline()[:3] for _ in range(2)] == [b"250", b"221"]
    assert sorted(InboundMessage.objects.values_list("subject", flat=True)) == ["one", "two"]


def _rename_table(old: str, new: str) -> None:
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute(f"ALTER TABLE {old} RENAME TO {new}")


def test_database_failure_at_rcpt_is_451_and_next_attempt_works(make_mailbox, smtp_client) -> None:
    # A real fault, not a mock: the table the validator reads disappears.
    make_mailbox("user@our.test")
    smtp_client.mail("a@example.org")
    _rename_table("inbound_smtp_mailbox", "inbound_smtp_mailbox_away")
    try:
        code, text = smtp_client.rcpt("user@our.test")
    finally:
        _rename_table("inbound_smtp_mailbox_away", "inbound_smtp_mailbox")
    assert code == 451
    assert re.fullmatch(
        r"4\.3\.0 <user@our\.test>: Temporary lookup failure \(ref [0-9A-F]{16}\)", text.decode()
    )
    assert smtp_client.rcpt("user@our.test")[0] == 250


def test_database_failure_at_data_is_451_leaves_nothing_and_session_recovers(
    make_mailbox, smtp_client, settings
) -> None:
    make_mailbox("user@our.test")
    media = Path(storages["default"].path(""))
    files_before = set(media.rglob("*.eml"))
    smtp_client.mail("a@example.org")
    smtp_client.rcpt("user@our.test")
    # The message row can be inserted but the recipient rows cannot: the transaction
    # must roll back as a whole and the raw file must be removed.
    _rename_table("inbound_smtp_inboundrecipient", "inbound_smtp_inboundrecipient_away")
    try:
        code, text = smtp_client.data(SIMPLE)
    finally:
        _rename_table("inbound_smtp_inboundrecipient_away", "inbound_smtp_inboundrecipient")
    # The generic text and a reference, nothing of the exception (no table name).
    assert code == 451
    assert re.fullmatch(
        r"4\.3\.0 Error: temporary local problem, try again later \(ref [0-9A-F]{16}\)",
        text.decode(),
    )
    assert not InboundMessage.objects.exists()
    assert set(media.rglob("*.eml")) == files_before
    # The next transaction on the same connection works.
    assert smtp_client.sendmail("a@example.org", ["user@our.test"], SIMPLE) == {}
    assert InboundMessage.objects.count() == 1


def test_storage_failure_is_451_and_the_session_recovers(
    make_mailbox, smtp_client, tmp_path: Path
) -> None:
    # A real fault: the storage folder is a file, so writing under it fails.
    make_mailbox("user@our.test")
    failing = broken_storages(tmp_path)
    files_before = set(Path(storages["default"].path("")).rglob("*.eml"))
    with override_settings(
        STORAGES=failing, INBOUND_SMTP={"HOSTNAME": "mx.test", "STORAGE": "broken"}
    ):
        smtp_client.mail("a@example.org")
        smtp_client.rcpt("user@our.test")
        code, text = smtp_client.data(SIMPLE)
    assert code == 451
    assert text.decode().startswith("4.3.0 Error: temporary local problem")
    assert not InboundMessage.objects.exists()
    assert (tmp_path / "not-a-folder").read_text().startswith("a file")
    # Storage is back: the same connection delivers.
    assert smtp_client.sendmail("a@example.org", ["user@our.test"], SIMPLE) == {}
    assert InboundMessage.objects.count() == 1
    assert len(set(Path(storages["default"].path("")).rglob("*.eml")) - files_before) == 1


@pytest.mark.django_db(transaction=True)
def test_killed_database_connection_costs_one_451(make_mailbox) -> None:
    from django.db import connection, connections

    if connection.vendor != "postgresql":
        pytest.skip("terminating a server backend is a PostgreSQL fault")
    make_mailbox("user@our.test")
    # Persistent connections (what production sets): the database thread keeps its
    # connection between units of work, so killing it is a real fault to recover from.
    # One database thread, so the next lookup is sure to meet the killed connection.
    # The settings dict is shared by every thread's connection object.
    shared = connections["default"].settings_dict
    persistent = shared["CONN_MAX_AGE"]
    shared["CONN_MAX_AGE"] = None
    settings = {"HOSTNAME": "mx.test", "DATABASE_THREADS": 1}
    try:
        with override_settings(INBOUND_SMTP=settings), running_server() as server:
            client = GuardedSMTP(server.host, server.port, timeout=10)
            client.ehlo("client.test")
            client.mail("a@example.org")
            assert client.rcpt("user@our.test")[0] == 250
            with connection.cursor() as cursor:
                # Every other backend of the test database: the server's one database
                # thread holds one of them (other threads reconnect when they need to).
                cursor.execute(
                    "SELECT pg_terminate_backend(pid, 5000) FROM pg_stat_activity "
                    "WHERE datname = current_database() AND pid <> pg_backend_pid()"
                )
                assert cursor.fetchall()
            validators.clear_caches()  # as if the directory had expired: RCPT must read the DB
            assert client.rcpt("user+one@our.test")[0] == 451
            assert client.rcpt("user+two@our.test")[0] == 250  # reconnected
            client.quit()
    finally:
        shared["CONN_MAX_AGE"] = persistent


def test_message_received_is_sent_once_after_commit(make_mailbox, smtp_client) -> None:
    make_mailbox("user@our.test")
    seen: list[tuple[str, bool, list[str]]] = []
    done = threading.Event()

    def receiver(sender, message, recipients, mailboxes, envelope, **kwargs) -> None:
        # Runs in a processing thread with its own connection: it can only see the row
        # if the storing transaction has committed.
        committed = InboundMessage.objects.filter(pk=message.pk).exists()
        seen.append((message.queue_id, committed, [r.address for r in recipients]))
        assert sender is InboundMessage
        assert [m.address for m in mailboxes] == ["user@our.test"]
        assert envelope.mail_from == "a@example.org"
        done.set()

    with receiver_connected(receiver):
        smtp_client.sendmail("a@example.org", ["user@our.test"], SIMPLE)
        assert done.wait(10)
        from django_inbound_smtp.lifecycle import schedule as dispatch

        assert dispatch.drain(10)
    message = InboundMessage.objects.get()
    assert seen == [(message.queue_id, True, ["user@our.test"])]
    assert message.status == InboundMessage.Status.PROCESSED
    assert message.attempts == 1


def test_failing_receiver_never_changes_the_reply(make_mailbox, smtp_client) -> None:
    make_mailbox("user@our.test")

    def broken(**kwargs) -> None:
        raise RuntimeError("receiver bug with secret=hunter2")

    with receiver_connected(broken):
        refused = smtp_client.sendmail("a@example.org", ["user@our.test"], SIMPLE)
        from django_inbound_smtp.lifecycle import schedule as dispatch

        assert dispatch.drain(10)
    assert refused == {}
    message = InboundMessage.objects.get()
    assert message.status == InboundMessage.Status.FAILED
    assert "RuntimeError: receiver bug" in message.error


def test_no_signal_when_the_transaction_rolls_back(make_mailbox, smtp_client) -> None:
    make_mailbox("user@our.test")
    calls: list[object] = []
    message_received.connect(lambda **kw: calls.append(kw), weak=False, dispatch_uid="rollback")
    try:
        smtp_client.mail("a@example.org")
        smtp_client.rcpt("user@our.test")
        _rename_table("inbound_smtp_inboundrecipient", "inbound_smtp_inboundrecipient_away")
        try:
            assert smtp_client.data(SIMPLE)[0] == 451
        finally:
            _rename_table("inbound_smtp_inboundrecipient_away", "inbound_smtp_inboundrecipient")
        from django_inbound_smtp.lifecycle import schedule as dispatch

        assert dispatch.drain(10)
    finally:
        message_received.disconnect(dispatch_uid="rollback")
    assert calls == []


def test_mailbox_deleted_later_keeps_the_message(make_mailbox, smtp_client) -> None:
    make_mailbox("user@our.test")
    smtp_client.sendmail("a@example.org", ["user@our.test"], SIMPLE)
    Mailbox.objects.all().delete()
    recipient = InboundRecipient.objects.get()
    assert recipient.mailbox is None
    assert recipient.address == "user@our.test"


def test_plain_helo_session_is_served_as_smtp(make_mailbox, smtp_server: RunningServer) -> None:
    make_mailbox("user@our.test")
    client = GuardedSMTP(smtp_server.host, smtp_server.port, timeout=10)
    assert client.helo("old.client.test")[0] == 250
    assert client.sendmail("a@example.org", ["user@our.test"], SIMPLE) == {}
    client.quit()
    message = InboundMessage.objects.get()
    assert message.helo == "old.client.test"
    assert b"with SMTP id " in message.raw_bytes.split(b"\r\n\r\n")[0]


def test_ehlo_advertises_what_we_implement(smtp_client) -> None:
    features = smtp_client.esmtp_features
    assert {"size", "8bitmime", "smtputf8", "enhancedstatuscodes", "pipelining", "help"} <= set(
        features
    )
    # Not implemented, so never advertised (hostile-inputs #13, #21).
    assert not {"auth", "chunking", "starttls"} & set(features)


def test_a_hostile_helo_is_refused_and_must_be_replaced(make_mailbox, smtp_server) -> None:
    # hostile-inputs #69: never stored or shown raw; the client must send a usable name.
    make_mailbox("user@our.test")
    with GuardedSMTP(smtp_server.host, smtp_server.port, timeout=10) as client:
        for name in ("a\x00b", "<script>alert(1)</script>", "x" * 300, "a..b", "[1.2.3]"):
            code, text = client.docmd("EHLO", name)
            assert (code, text.decode()) == (501, "5.5.2 Syntactically invalid EHLO argument(s)")
        assert client.docmd("HELO", "<b>")[0] == 501
        assert client.docmd("MAIL FROM:<a@example.org>")[0] == 503  # no name yet
        assert client.ehlo("[192.0.2.1]")[0] == 250
        assert client.sendmail("a@example.org", ["user@our.test"], SIMPLE) == {}
    assert InboundMessage.objects.get().helo == "[192.0.2.1]"


def test_postmaster_is_always_accepted_for_served_domains(make_mailbox, smtp_client) -> None:
    # RFC 5321 §4.5.1: postmaster MUST be accepted, with or without a domain.
    make_mailbox("user@our.test")
    smtp_client.mail("a@example.org")
    assert _reply(smtp_client, "RCPT TO:<Postmaster>")[0] == 250
    assert smtp_client.rcpt("postmaster@our.test")[0] == 250
    assert smtp_client.rcpt("postmaster@elsewhere.test")[0] == 550  # still no relay
    assert smtp_client.data(SIMPLE)[0] == 250
    recipients = InboundMessage.objects.get().recipients.all()
    assert [(r.address, r.mailbox) for r in recipients] == [
        ("Postmaster", None),
        ("postmaster@our.test", None),
    ]


def test_command_length_limits_do_not_grow_with_repeated_ehlo(smtp_client) -> None:
    # hostile-inputs #51: aiosmtpd adds 36 bytes to MAIL's limit on every EHLO, in a
    # dict shared by all connections.
    for _ in range(20):
        smtp_client.ehlo("c")
    long_sender = "<" + "a" * 60 + "@" + "b" * 700 + ".test>"
    code, text = smtp_client.docmd(f"MAIL FROM:{long_sender}")
    assert (code, text.decode()) == (500, "5.5.2 Error: command line too long")


def _raw_session(server: RunningServer, *lines: bytes) -> list[bytes]:
    """Send each line and collect its (last) reply line."""
    with socket.create_connection((server.host, server.port), timeout=10) as sock:
        stream = sock.makefile("rwb")
        stream.readline()
        answers = []
        for line in lines:
            stream.write(line + b"\r\n")
            stream.flush()
            while (reply := stream.readline())[3:4] == b"-":
                pass
            answers.append(reply.rstrip(b"\r\n"))
        return answers


def test_internationalized_addresses_need_smtputf8(make_mailbox, smtp_server) -> None:
    make_mailbox("jösé@our.test")
    answers = _raw_session(
        smtp_server,
        b"EHLO c",
        b"MAIL FROM:<a@example.org>",
        "RCPT TO:<jösé@our.test>".encode(),
        b"RSET",
        b"MAIL FROM:<a@example.org> SMTPUTF8",
        "RCPT TO:<jösé@our.test>".encode(),
        b"RCPT TO:<j\xff\xfe@our.test>",
    )
    plain, utf8, bad = answers[2], answers[5], answers[6]
    assert plain == b"553 5.6.7 Error: non-ASCII address needs SMTPUTF8"
    assert utf8 == b"250 2.1.5 Ok"
    assert bad == b"501 5.5.2 Error: bad UTF-8 syntax"


def test_unicode_local_parts_match_canonically_but_not_by_look_alike(
    make_mailbox, smtp_server
) -> None:
    # hostile-inputs #44: NFC normalization, no NFKC folding onto another user.
    make_mailbox("josé@our.test")
    nfd, fullwidth = _raw_session(
        smtp_server,
        b"EHLO c",
        b"MAIL FROM:<a@example.org> SMTPUTF8",
        "RCPT TO:<jose\u0301@our.test>".encode(),
        "RCPT TO:<\uff4aosé@our.test>".encode(),
    )[2:]
    assert nfd == b"250 2.1.5 Ok"
    assert fullwidth.startswith(b"550 5.1.1")


@override_settings(INBOUND_SMTP={"HOSTNAME": "mx.test", "RCPT_ERROR_LIMIT": 3})
def test_directory_harvesting_is_cut_off(make_mailbox, smtp_server) -> None:
    make_mailbox("user@our.test")
    with socket.create_connection((smtp_server.host, smtp_server.port), timeout=10) as sock:
        stream = sock.makefile("rwb")
        stream.readline()
        for command in (b"EHLO c", b"MAIL FROM:<a@example.org>"):
            stream.write(command + b"\r\n")
            stream.flush()
            while stream.readline()[3:4] == b"-":
                pass
        replies_seen = []
        for n in range(3):
            stream.write(b"RCPT TO:<guess%d@our.test>\r\n" % n)
            stream.flush()
            replies_seen.append(stream.readline())
        assert [r[:9] for r in replies_seen[:2]] == [b"550 5.1.1"] * 2
        assert replies_seen[2] == b"421 4.7.0 mx.test Error: too many errors\r\n"
        assert stream.readline() == b""  # closed


@pytest.mark.parametrize(
    ("policy", "reply", "stored_body"),
    [
        ("normalize", b"250", b"Subject: bare\r\nBcc: hidden@x\r\n\r\na b\r\n"),
        ("keep", b"250", b"Subject: bare\nBcc: hidden@x\r\n\r\na\rb\r\n"),
        ("reject", b"550 5.5.2 Error: bare <LF> received", None),
    ],
)
def test_bare_newlines_follow_the_policy(
    make_mailbox, smtp_server, policy: str, reply: bytes, stored_body: bytes | None
) -> None:
    make_mailbox("user@our.test")
    with override_settings(INBOUND_SMTP={"HOSTNAME": "mx.test", "BARE_NEWLINES": policy}):
        with socket.create_connection((smtp_server.host, smtp_server.port), timeout=10) as sock:
            stream = start_data(sock)
            stream.write(b"Subject: bare\nBcc: hidden@x\r\n\r\na\rb\r\n.\r\n")
            stream.flush()
            assert stream.readline().startswith(reply)
            stream.write(b"MAIL FROM:<a@example.org>\r\n")  # the session goes on
            stream.flush()
            assert stream.readline().startswith(b"250")
    if stored_body is None:
        assert not InboundMessage.objects.exists()
        return
    message = InboundMessage.objects.get()
    assert message.raw_bytes.endswith(stored_body)
    assert message.bare_newlines is True


def test_client_control_bytes_are_never_echoed_in_replies(smtp_server) -> None:
    (reply,) = _raw_session(smtp_server, b"\x00FOO\rBAR")
    assert reply == b'500 5.5.1 Error: command "?FOO?BAR" not recognized'


def leaky_validator(address: str, *, context: object) -> None:
    raise RuntimeError("database password=hunter2 at db.internal")


@override_settings(
    INBOUND_SMTP={
        "HOSTNAME": "mx.test",
        "RECIPIENT_VALIDATORS": ["tests.test_smtp_server.leaky_validator"],
    }
)
def test_no_exception_text_ever_reaches_the_wire(smtp_client, caplog) -> None:
    smtp_client.mail("a@example.org")
    code, text = smtp_client.rcpt("user@our.test")
    reference = re.fullmatch(
        r"4\.3\.0 <user@our\.test>: Temporary lookup failure \(ref ([0-9A-F]{16})\)",
        text.decode(),
    )
    assert code == 451
    assert reference
    assert "hunter2" not in text.decode()
    # The traceback is in the log, under the same reference.
    logged = [r for r in caplog.records if reference.group(1) in r.getMessage()]
    assert logged
    assert logged[0].exc_info is not None


def test_the_command_line_limit_is_a_setting(smtp_server) -> None:
    # Read when a connection starts, like every per-session limit.
    with override_settings(INBOUND_SMTP={"HOSTNAME": "mx.test", "COMMAND_LINE_LIMIT": 700}):
        with GuardedSMTP(smtp_server.host, smtp_server.port, timeout=10) as client:
            client.ehlo("c")
            assert client.docmd("NOOP", "x" * 600)[0] == 250
            assert client.docmd("NOOP", "x" * 700)[0] == 500


@override_settings(INBOUND_SMTP={"HOSTNAME": "mx.test", "SMTPUTF8": False})
def test_smtputf8_can_be_turned_off(make_mailbox, smtp_server) -> None:
    make_mailbox("user@our.test")
    answers = _raw_session(
        smtp_server,
        b"EHLO c",
        b"MAIL FROM:<a@example.org> SMTPUTF8",
        "RCPT TO:<jö@our.test>".encode(),
    )
    assert b"SMTPUTF8" not in answers[0]
    assert answers[1].startswith(b"501")
