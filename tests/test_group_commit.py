"""Tier 4: group commit. Messages finishing DATA together are stored in one transaction;
each still gets the reply it would have had alone.

To make a group deterministic, a second database connection takes a write lock
(PostgreSQL: a table lock; SQLite: ``BEGIN IMMEDIATE``), so a first "blocker" message
waits for it inside the ORM thread while the others finish DATA and queue up; when
the lock is released the blocker commits alone and the others form one group. Real
sockets, real databases, real faults: nothing is mocked.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from django.db import connection, connections
from django.test import override_settings

from django_inbound_smtp.models import InboundMessage, Mailbox
from django_inbound_smtp.testing import RunningServer, running_server
from tests.helpers import GuardedSMTP, local_storages, received_envelope
from tests.test_streaming import tiny_disk  # noqa: F401 - the real ENOSPC fixture

pytestmark = pytest.mark.django_db(transaction=True)

FROM = "a@example.org"
GROUP_LOGGER = "django_inbound_smtp.store"


def _message(tag: str, *, size: int = 1024) -> bytes:
    head = f"From: {FROM}\r\nSubject: {tag}\r\nMessage-ID: <{tag}@x.test>\r\n\r\n".encode()
    line = b"0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ-0123456789\r\n"
    return head + line * (size // len(line) + 1)


@contextmanager
def _writes_held() -> Iterator[Callable[[], None]]:
    """Hold the database's write lock from a connection of our own; yields ``release``."""
    holder = connections.create_connection("default")
    cursor = holder.cursor()
    if holder.vendor == "postgresql":
        cursor.execute("BEGIN")
        # Blocks INSERTs into the message table, not the dedupe SELECT.
        cursor.execute("LOCK TABLE inbound_smtp_inboundmessage IN SHARE ROW EXCLUSIVE MODE")
    else:
        cursor.execute("BEGIN IMMEDIATE")  # the one writer lock of a SQLite database
    released = False

    def release() -> None:
        nonlocal released
        if not released:
            released = True
            cursor.execute("ROLLBACK")

    try:
        yield release
    finally:
        release()
        holder.close()


class _Session:
    """One client connection that stops after RCPT and sends DATA when told to."""

    def __init__(self, server: RunningServer, rcpt: str, content: bytes) -> None:
        self.client = GuardedSMTP(server.host, server.port, local_hostname="c.test", timeout=60)
        self.client.ehlo()
        assert self.client.mail(FROM)[0] == 250
        assert self.client.rcpt(rcpt)[0] == 250
        self.content = content
        self.reply: tuple[int, bytes] | None = None
        self.thread = threading.Thread(target=self._data)

    def _data(self) -> None:
        self.reply = self.client.data(self.content)

    def send(self) -> None:
        self.thread.start()

    def finish(self) -> tuple[int, bytes]:
        self.thread.join(60)
        self.client.quit()
        assert self.reply is not None
        return self.reply


def _in_one_group(server: RunningServer, sessions: list[_Session]) -> list[tuple[int, bytes]]:
    """Send a blocker, then ``sessions`` together while writes are held; their replies."""
    blocker = _Session(server, "user0@our.test", _message("blocker"))
    with _writes_held() as release:
        blocker.send()
        time.sleep(0.5)  # the blocker is waiting for the lock in the ORM thread
        for session in sessions:
            session.send()
        time.sleep(1.5)  # every DATA has ended and is queued behind the blocker
        release()
    assert blocker.finish()[0] == 250
    return [session.finish() for session in sessions]


def _groups(caplog: pytest.LogCaptureFixture) -> list[int]:
    return [r.group for r in caplog.records if r.name == GROUP_LOGGER and hasattr(r, "group")]


@pytest.fixture
def mailboxes(db: None) -> list[Mailbox]:
    return [Mailbox.objects.create(address=f"user{i}@our.test") for i in range(12)]


@pytest.fixture
def media(tmp_path: Path) -> Iterator[Path]:
    storages = local_storages(tmp_path / "media")
    # One database thread, so one group is in flight at a time: what these tests look
    # at is how the waiting messages form the next group.
    settings = {"HOSTNAME": "mx.test", "DATABASE_THREADS": 1}
    with override_settings(STORAGES=storages, INBOUND_SMTP=settings):
        yield tmp_path / "media"


def test_messages_finishing_together_share_one_transaction(mailboxes, media, caplog) -> None:
    caplog.set_level(logging.DEBUG, logger=GROUP_LOGGER)
    with running_server() as server:
        sessions = [
            _Session(server, f"user{i}@our.test", _message(f"m{i}", size=500 + 97 * i))
            for i in range(1, 11)
        ]
        replies = _in_one_group(server, sessions)
    assert [code for code, _ in replies] == [250] * 10
    assert _groups(caplog) == [1, 10]  # the blocker alone, then the ten in one transaction
    for i, session in enumerate(sessions, start=1):
        stored = InboundMessage.objects.get(subject=f"m{i}")
        assert stored.status != InboundMessage.Status.DUPLICATE
        raw = stored.raw_bytes
        assert raw.startswith(b"Received: ")
        assert raw.endswith(session.content)  # byte-exact after our trace line
        assert [r.address for r in stored.recipients.all()] == [f"user{i}@our.test"]
        assert stored.recipients.get().mailbox_id == mailboxes[i].pk
    assert len(list(media.rglob("*.eml"))) == 11
    if connection.vendor == "postgresql":
        # Rows written by one transaction carry its id: one for the blocker, one for the ten
        # (recipient rows: processing updates message rows, which gives them a new xmin).
        with connection.cursor() as cursor:
            cursor.execute("SELECT COUNT(DISTINCT xmin::text) FROM inbound_smtp_inboundrecipient")
            assert cursor.fetchone()[0] == 2


def test_identical_messages_in_one_group_are_one_original_and_a_duplicate(
    mailboxes, media, caplog
) -> None:
    caplog.set_level(logging.DEBUG, logger=GROUP_LOGGER)
    with running_server() as server:
        same = [_Session(server, "user1@our.test", _message("same")) for _ in range(2)]
        other = _Session(server, "user2@our.test", _message("other"))
        replies = _in_one_group(server, [*same, other])
    assert [code for code, _ in replies] == [250, 250, 250]
    assert _groups(caplog) == [1, 3]  # the blocker alone, then the three together
    rows = InboundMessage.objects.filter(subject="same").order_by("pk")
    original, duplicate = rows
    assert original.status != InboundMessage.Status.DUPLICATE
    assert duplicate.status == InboundMessage.Status.DUPLICATE
    assert duplicate.duplicate_of_id == original.pk
    assert duplicate.raw_file == original.raw_file  # no second file
    assert len(list(media.rglob("*.eml"))) == 3  # blocker, same, other


def test_a_message_failing_at_commit_is_451_and_the_rest_of_its_group_250(
    mailboxes, media, caplog
) -> None:
    # A real commit failure: user2's mailbox is deleted between RCPT and the end of
    # DATA, so its recipient row's foreign key (deferred to COMMIT) fails the group's
    # transaction; the group is then stored message by message.
    caplog.set_level(logging.DEBUG, logger=GROUP_LOGGER)
    with running_server() as server:
        sessions = [_Session(server, f"user{i}@our.test", _message(f"m{i}")) for i in (1, 2, 3)]
        deleter = threading.Thread(target=_delete_mailbox, args=("user2@our.test",))
        deleter.start()
        deleter.join()
        replies = _in_one_group(server, sessions)
    assert [code for code, _ in replies] == [250, 451, 250]
    assert replies[1][1].startswith(b"4.3.0")
    assert any("batch of 3 failed" in r.getMessage() for r in caplog.records)
    assert sorted(InboundMessage.objects.values_list("subject", flat=True)) == [
        "blocker",
        "m1",
        "m3",
    ]
    stored = set(InboundMessage.objects.values_list("raw_file", flat=True))
    on_disk = {str(p.relative_to(media)) for p in media.rglob("*.eml")}
    assert on_disk == stored  # m2 left no file; the others are each a single file


def _delete_mailbox(address: str) -> None:
    # Raw SQL on a connection of its own, so no SET_NULL cascade of Django's helps.
    try:
        with connections["default"].cursor() as cursor:
            cursor.execute("DELETE FROM inbound_smtp_mailbox WHERE address = %s", [address])
    finally:
        connections.close_all()


def test_a_full_disk_fails_only_the_message_that_does_not_fit(mailboxes, tiny_disk) -> None:  # noqa: F811
    filler = tiny_disk / "filler"
    filler.write_bytes(b"x" * (1024 * 1024 - 100 * 1024))  # about 100 KiB left
    storages = local_storages(tiny_disk)
    settings = {"HOSTNAME": "mx.test", "MIN_FREE_SPACE": 0}
    with override_settings(STORAGES=storages, INBOUND_SMTP=settings), running_server() as server:
        sessions = [
            _Session(server, "user1@our.test", _message("small1", size=4000)),
            _Session(server, "user2@our.test", _message("big", size=200 * 1024)),
            _Session(server, "user3@our.test", _message("small2", size=4000)),
        ]
        replies = _in_one_group(server, sessions)
    assert [code for code, _ in replies] == [250, 452, 250]
    assert replies[1][1].startswith(b"4.3.1")
    subjects = sorted(InboundMessage.objects.values_list("subject", flat=True))
    assert subjects == ["blocker", "small1", "small2"]
    files = {p.name for p in tiny_disk.rglob("*.eml")}
    assert files == {f"{m.queue_id}.eml" for m in InboundMessage.objects.all()}


def test_a_group_stores_each_message_s_sender_checks() -> None:
    # The verdicts of the sender checks are stored with their message in the group's
    # one transaction, like its recipients.

    from django_inbound_smtp import store
    from django_inbound_smtp.envelope import ResolvedRecipient
    from django_inbound_smtp.models import SenderCheck
    from django_inbound_smtp.parsing import MAX_HEADER_BLOCK
    from django_inbound_smtp.spool import Spool

    mailbox = Mailbox.objects.create(address="user@our.test")
    batch = []
    for tag, verified in (("one", True), ("two", False)):
        spool = Spool(None, memory_limit=1 << 20, head_limit=MAX_HEADER_BLOCK, prefix=b"")
        spool.add(_message(tag))
        spool.finish()
        envelope = received_envelope(
            f"Q{tag.upper()}",
            mail_from=FROM,
            recipients=(ResolvedRecipient(address="user@our.test", mailbox_id=mailbox.pk),),
            sender_checks={
                "sender_verified": verified,
                "spf_result": "pass" if verified else "fail",
            },
        )
        batch.append((envelope, spool))
    outcomes = store.store_batch(batch)
    assert all(isinstance(pk, int) for pk in outcomes), outcomes
    checks = {c.message.queue_id: c for c in SenderCheck.objects.select_related("message")}
    assert (checks["QONE"].sender_verified, checks["QONE"].spf_result) == (True, "pass")
    assert (checks["QTWO"].sender_verified, checks["QTWO"].spf_result) == (False, "fail")
