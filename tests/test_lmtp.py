"""LMTP (RFC 2033) over loopback with a plain client: LHLO, refused HELO/EHLO, one reply
per recipient after DATA in RCPT order, and per-recipient refusals (quota, disabled)."""

from __future__ import annotations

import re
import smtplib
import socket
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest
from django.core.files.storage import storages
from django.core.management import CommandError, call_command
from django.test import override_settings

from django_inbound_smtp.models import InboundMessage, InboundRecipient, Mailbox
from django_inbound_smtp.testing import RunningServer, running_server
from tests.helpers import broken_storages, subprocess_env
from tests.lmtp_client import LmtpClient
from tests.observe import metrics_port, moved, scrape, scrape_until
from tests.smtpd_process import Smtpd, logged_settings

pytestmark = pytest.mark.integration

BODY = (
    b"From: Alice <a@example.org>\r\nSubject: lmtp\r\nMessage-ID: <l1@example.org>\r\n\r\n"
    + b"Hello over LMTP.\r\n" * 20
)


@pytest.fixture
def lmtp_server(transactional_db: None) -> Iterator[RunningServer]:
    with running_server(lmtp=True) as server:
        yield server


@pytest.fixture
def lmtp(lmtp_server: RunningServer) -> Iterator[LmtpClient]:
    client = LmtpClient(lmtp_server.host, lmtp_server.port, timeout=10)
    try:
        yield client
    finally:
        client.quit_if_open()


def _stored_for(address: str) -> list[InboundMessage]:
    return list(InboundMessage.objects.filter(recipients__address=address))


def test_lhlo_greets_with_pipelining_and_enhanced_status_codes(lmtp) -> None:
    code, text = lmtp.lhlo()
    lines = text.decode().splitlines()
    assert code == 250
    assert lines[0] == "mx.test"
    # RFC 2033 §5: an LMTP server must offer both.
    assert "PIPELINING" in lines
    assert "ENHANCEDSTATUSCODES" in lines
    assert not any(line.startswith("STARTTLS") for line in lines)


def test_the_greeting_says_lmtp(lmtp_server) -> None:
    with socket.create_connection((lmtp_server.host, lmtp_server.port), timeout=10) as raw:
        assert raw.recv(512) == b"220 mx.test LMTP\r\n"


def test_helo_and_ehlo_are_refused_and_mail_needs_lhlo(lmtp) -> None:
    # RFC 2033 §4.1: HELO and EHLO must not be accepted.
    for command in ("EHLO", "HELO"):
        code, text = lmtp.docmd(command, "mta.test")
        assert (code, text.decode()[:6]) == (500, "5.5.1 ")
        assert "LHLO" in text.decode()
    code, text = lmtp.docmd("MAIL", "FROM:<a@example.org>")
    assert (code, text.decode()) == (503, "5.5.1 Error: send LHLO first")


def test_one_reply_per_recipient_in_rcpt_order_and_one_stored_message(make_mailbox, lmtp) -> None:
    alice = make_mailbox("alice@our.test")
    bob = make_mailbox("bob@our.test")
    lmtp.lhlo()
    assert lmtp.mail("a@example.org")[0] == 250
    for address in ("bob@our.test", "alice@our.test", "postmaster@our.test"):
        assert lmtp.rcpt(address)[0] == 250
    replies = lmtp.data_each(BODY, recipients=3)
    message = InboundMessage.objects.get()
    assert replies == [(250, f"2.0.0 Ok: queued as {message.queue_id}")] * 3
    rows = list(message.recipients.order_by("pk"))
    assert [(r.address, r.mailbox_id) for r in rows] == [
        ("bob@our.test", bob.pk),
        ("alice@our.test", alice.pk),
        ("postmaster@our.test", None),
    ]
    assert b"with LMTP id " + message.queue_id.encode() in message.raw_bytes
    assert message.received_via == InboundMessage.ReceivedVia.LMTP
    assert message.raw_bytes.endswith(BODY)
    # Pipelined commands behind the data are answered after its replies, in order.
    assert lmtp.docmd("NOOP")[0] == 250


def test_a_repeated_rcpt_is_answered_twice_for_one_stored_recipient(make_mailbox, lmtp) -> None:
    make_mailbox("user@our.test")
    make_mailbox("full@our.test", quota_bytes=10)
    lmtp.lhlo()
    lmtp.mail("a@example.org")
    for address in ("user@our.test", "full@our.test", "USER@our.test", "full@our.test"):
        assert lmtp.rcpt(address)[0] == 250
    replies = lmtp.data_each(BODY, recipients=4)
    assert [code for code, _ in replies] == [250, 452, 250, 452]
    assert [r.address for r in InboundMessage.objects.get().recipients.all()] == ["user@our.test"]
    assert lmtp.docmd("NOOP")[0] == 250  # nothing more was sent


def test_mixed_replies_over_quota_recipient_gets_452_the_other_250(make_mailbox, lmtp) -> None:
    # The quota has room at RCPT (nothing stored yet) but not for this message's size,
    # known only after DATA: the one recipient is refused, temporarily, alone.
    full = make_mailbox("full@our.test", quota_bytes=100)
    roomy = make_mailbox("roomy@our.test")
    lmtp.lhlo()
    lmtp.mail("a@example.org")
    assert lmtp.rcpt("full@our.test")[0] == 250
    assert lmtp.rcpt("roomy@our.test")[0] == 250
    (first, second) = lmtp.data_each(BODY, recipients=2)
    assert first == (452, "4.2.2 <full@our.test>: Mailbox full, try again later")
    message = InboundMessage.objects.get()
    assert second == (250, f"2.0.0 Ok: queued as {message.queue_id}")
    # Stored once, for the recipient that took it; the refused one is not a recipient.
    assert [r.mailbox_id for r in message.recipients.all()] == [roomy.pk]
    assert not InboundRecipient.objects.filter(mailbox=full).exists()


def test_mailbox_disabled_between_rcpt_and_data_is_550_5_2_1_for_it_alone(
    make_mailbox, lmtp
) -> None:
    gone = make_mailbox("gone@our.test")
    stays = make_mailbox("stays@our.test")
    lmtp.lhlo()
    lmtp.mail("a@example.org")
    assert lmtp.rcpt("stays@our.test")[0] == 250
    assert lmtp.rcpt("gone@our.test")[0] == 250
    Mailbox.objects.filter(pk=gone.pk).update(is_active=False)  # behind the directory
    replies = lmtp.data_each(BODY, recipients=2)
    assert replies[0][0] == 250
    assert replies[1] == (550, "5.2.1 <gone@our.test>: Mailbox disabled, not accepting messages")
    assert [m.pk for m in _stored_for("stays@our.test")] == [InboundMessage.objects.get().pk]
    assert _stored_for("gone@our.test") == []
    assert stays.deliveries.count() == 1


def test_every_recipient_refused_after_data_stores_nothing(make_mailbox, lmtp) -> None:
    make_mailbox("one@our.test", quota_bytes=10)
    make_mailbox("two@our.test", quota_bytes=10)
    media = Path(storages["default"].path(""))
    files_before = set(media.rglob("*.eml"))
    lmtp.lhlo()
    lmtp.mail("a@example.org")
    lmtp.rcpt("one@our.test")
    lmtp.rcpt("two@our.test")
    assert [code for code, _ in lmtp.data_each(BODY, recipients=2)] == [452, 452]
    assert not InboundMessage.objects.exists()
    assert set(media.rglob("*.eml")) == files_before
    # The session goes on: the next transaction is answered normally.
    assert lmtp.mail("a@example.org")[0] == 250


def test_a_full_mailbox_is_refused_at_rcpt_on_lmtp_too(make_mailbox, lmtp) -> None:
    make_mailbox("full@our.test", quota_messages=0)
    make_mailbox("other@our.test")
    lmtp.lhlo()
    lmtp.mail("a@example.org")
    code, text = lmtp.rcpt("full@our.test")
    assert (code, text.decode()) == (452, "4.2.2 <full@our.test>: Mailbox full, try again later")
    assert lmtp.rcpt("other@our.test")[0] == 250
    # Only the accepted recipient is answered after DATA.
    assert [code for code, _ in lmtp.data_each(BODY, recipients=1)] == [250]


def test_a_message_too_big_gets_the_refusal_once_per_recipient(make_mailbox, lmtp_server) -> None:
    make_mailbox("one@our.test")
    make_mailbox("two@our.test")
    # Over the limit but under twice it: read to the end, then refused.
    with override_settings(INBOUND_SMTP={"HOSTNAME": "mx.test", "MAX_MESSAGE_SIZE": 300}):
        # The size limit is read when the connection opens.
        lmtp = LmtpClient(lmtp_server.host, lmtp_server.port, timeout=10)
        try:
            lmtp.lhlo()
            lmtp.mail("a@example.org")
            lmtp.rcpt("one@our.test")
            lmtp.rcpt("two@our.test")
            replies = lmtp.data_each(BODY, recipients=2)
            assert lmtp.docmd("NOOP")[0] == 250  # no third reply was left waiting
        finally:
            lmtp.close()
    assert [code for code, _ in replies] == [552, 552]
    assert replies[0] == replies[1]
    assert not InboundMessage.objects.exists()


def test_our_storage_fault_is_451_for_every_recipient(make_mailbox, lmtp, tmp_path) -> None:
    # A real fault: the storage folder is a file, so writing under it fails.
    make_mailbox("one@our.test")
    make_mailbox("two@our.test")
    with override_settings(
        STORAGES=broken_storages(tmp_path),
        INBOUND_SMTP={"HOSTNAME": "mx.test", "STORAGE": "broken"},
    ):
        lmtp.lhlo()
        lmtp.mail("a@example.org")
        lmtp.rcpt("one@our.test")
        lmtp.rcpt("two@our.test")
        replies = lmtp.data_each(BODY, recipients=2)
    assert [code for code, _ in replies] == [451, 451]
    for _, text in replies:
        assert text.startswith("4.3.0 Error: temporary local problem, try again later (ref ")
    assert not InboundMessage.objects.exists()


def test_lmtp_on_a_unix_socket(make_mailbox, transactional_db, tmp_path) -> None:
    path = str(tmp_path / "lmtp.sock")
    make_mailbox("user@our.test")
    with running_server(lmtp_socket=path):
        # Any local user may connect (Postfix's LMTP client runs as its own user).
        assert stat.S_IMODE(Path(path).stat().st_mode) == 0o666
        client = smtplib.LMTP(path, timeout=10)
        try:
            assert client.ehlo("mta.test")[0] == 250  # smtplib.LMTP sends LHLO
            assert client.sendmail("a@example.org", ["user@our.test"], BODY) == {}
        finally:
            client.close()
    message = InboundMessage.objects.get()
    assert message.peer_ip is None  # a UNIX socket has no client address
    assert not Path(path).exists()  # removed when the server stopped


def test_smtpd_lmtp_command_serves_tcp_and_unix_socket(transactional_db, tmp_path) -> None:
    Mailbox.objects.create(address="user@our.test")
    path = str(tmp_path / "lmtp.sock")
    server = Smtpd(subprocess_env(**logged_settings(tmp_path)), "--lmtp", "--lmtp-socket", path)
    try:
        assert server.wait_for(re.compile(r"^Inbound LMTP server listening on 127\.0\.0\.1:"))
        assert server.wait_for(re.compile(rf"^LMTP listening on UNIX socket {re.escape(path)}$"))
        tcp = LmtpClient("127.0.0.1", server.port, timeout=10)
        unix = smtplib.LMTP(path, timeout=10)
        try:
            assert tcp.docmd("EHLO", "mta.test")[0] == 500
            assert tcp.lhlo()[0] == 250
            assert unix.ehlo("mta.test")[0] == 250  # smtplib.LMTP sends LHLO
            for client in (tcp, unix):
                assert client.sendmail("a@example.org", ["user@our.test"], BODY) == {}
        finally:
            tcp.close()
            unix.close()
    finally:
        assert server.stop() == 0, server.text()
    assert InboundMessage.objects.count() == 2
    assert not Path(path).exists()


def test_lmtp_socket_is_refused_with_workers() -> None:
    with pytest.raises(CommandError, match="--lmtp-socket serves from one process"):
        call_command("smtpd", "--lmtp-socket", "/nonexistent/lmtp.sock", "--workers", "2")


@pytest.mark.slow
def test_smtpd_lmtp_with_workers_answers_lmtp_from_each(transactional_db, tmp_path) -> None:
    Mailbox.objects.create(address="user@our.test")
    server = Smtpd(subprocess_env(**logged_settings(tmp_path)), "--lmtp", "--workers", "2")
    try:
        assert server.wait_for(re.compile(r"^Inbound LMTP server listening on .* \(2 workers\)$"))
        for _ in range(4):  # new connections, spread over the workers by the kernel
            client = LmtpClient("127.0.0.1", server.port, timeout=10)
            try:
                assert client.docmd("EHLO", "mta.test")[0] == 500
                assert client.lhlo()[0] == 250
                assert client.sendmail("a@example.org", ["user@our.test"], BODY) == {}
            finally:
                client.close()
    finally:
        assert server.stop() == 0, server.text()
    assert (
        InboundMessage.objects.count()
        == 1 + InboundMessage.objects.filter(status="duplicate").count()
    )


def test_lmtp_replies_and_stored_messages_are_counted_in_the_metrics(
    transactional_db, tmp_path
) -> None:
    Mailbox.objects.create(address="full@our.test", quota_bytes=100)
    Mailbox.objects.create(address="roomy@our.test")
    env = subprocess_env(**logged_settings(tmp_path))
    server = Smtpd(env, "--lmtp", "--metrics", "127.0.0.1:0")
    try:
        port = metrics_port(server)
        before = scrape(port)
        client = LmtpClient("127.0.0.1", server.port, timeout=10)
        try:
            client.lhlo()
            client.mail("a@example.org")
            client.rcpt("full@our.test")
            client.rcpt("roomy@our.test")
            assert [code for code, _ in client.data_each(BODY, recipients=2)] == [452, 250]
        finally:
            client.close()
        after = scrape_until(
            port, lambda s: moved(before, s, "inbound_smtp_messages_stored_total") >= 1
        )
    finally:
        assert server.stop() == 0, server.text()
    message = InboundMessage.objects.get()
    # Each recipient's reply is a reply: one 452, and 250s for LHLO, MAIL, 2 RCPT, 1 DATA.
    assert moved(before, after, "inbound_smtp_replies_total", code="452") == 1
    assert moved(before, after, "inbound_smtp_replies_total", code="250") == 5
    assert moved(before, after, "inbound_smtp_messages_stored_total") == 1
    assert moved(before, after, "inbound_smtp_stored_bytes_total") == message.size
