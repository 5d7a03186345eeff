"""Tier 4: DATA streams into a spool file, memory stays flat, and storage faults are
answered 451/452 with nothing half-stored.

Disk-full faults are real: a 1 MiB tmpfs is mounted for the test (root only, as on
CI; elsewhere these tests are skipped with the reason).
"""

from __future__ import annotations

import os
import socket
import struct
import subprocess
import threading
import time
import tracemalloc
from collections.abc import Iterator
from pathlib import Path

import pytest
from django.db import connections
from django.test import override_settings

from django_inbound_smtp.models import InboundMessage, Mailbox
from django_inbound_smtp.store import files as delivery
from django_inbound_smtp.testing import running_server
from tests.helpers import GuardedSMTP, local_storages, start_data

pytestmark = pytest.mark.django_db(transaction=True)

FROM = "a@example.org"
TO = "user@our.test"


def _message(size: int, *, tag: str = "big") -> bytes:
    head = f"From: {FROM}\r\nTo: {TO}\r\nSubject: {tag}\r\nMessage-ID: <{tag}@x.test>\r\n\r\n"
    line = b"0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ-0123456789\r\n"
    return head.encode() + line * (size // len(line) + 1)


@pytest.fixture
def mailbox(db: None) -> Mailbox:
    return Mailbox.objects.create(address=TO)


@pytest.fixture
def tiny_disk(tmp_path: Path) -> Iterator[Path]:
    """A real 1 MiB file system (tmpfs), so ENOSPC is the kernel's, not a mock's."""
    mount_point = tmp_path / "tiny"
    mount_point.mkdir()
    result = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(mount_point)],
        capture_output=True,
        check=False,
    )
    if result.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here (needs root): {result.stderr.decode().strip()}")
    try:
        yield mount_point
    finally:
        subprocess.run(["umount", "-l", str(mount_point)], check=False)


def _send(server, message: bytes) -> tuple[int, bytes]:
    with GuardedSMTP(server.host, server.port, local_hostname="client.test", timeout=30) as client:
        client.ehlo()
        client.mail(FROM)
        client.rcpt(TO)
        return client.data(message)


def test_a_large_message_is_spooled_to_disk_while_it_arrives(mailbox, tmp_path) -> None:
    spool = tmp_path / "spool"
    settings = {"HOSTNAME": "mx.test", "SPOOL_DIR": str(spool), "SPOOL_MEMORY_LIMIT": 64 * 1024}
    with override_settings(INBOUND_SMTP=settings), running_server() as server:
        sock = socket.create_connection((server.host, server.port), timeout=10)
        stream = start_data(sock)
        content = _message(1024 * 1024)
        stream.write(content[:700_000])
        stream.flush()
        # Mid-transfer: the bytes so far are in a spool file, not in memory.
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            sizes = [f.stat().st_size for f in spool.glob("*.spool")]
            if sizes and max(sizes) >= 600_000:
                break
            time.sleep(0.02)
        assert max(sizes, default=0) >= 600_000, sizes
        stream.write(content[700_000:] + b".\r\n")
        stream.flush()
        reply = stream.readline()
        assert reply.startswith(b"250 2.0.0"), reply
        stream.close()  # it holds the socket open too
        sock.close()
    message = InboundMessage.objects.get()
    raw = message.raw_bytes
    assert raw.endswith(content)
    assert raw.startswith(b"Received: from c ([127.0.0.1])")
    assert message.size == len(raw)
    assert list(spool.glob("*.spool")) == []  # linked into storage, then the spool name removed


def test_memory_stays_flat_for_a_20_mib_message(mailbox, tmp_path) -> None:
    settings = {"HOSTNAME": "mx.test", "SPOOL_DIR": str(tmp_path / "spool")}
    content = _message(20 * 1024 * 1024)
    with override_settings(INBOUND_SMTP=settings), running_server() as server:
        tracemalloc.start()
        try:
            baseline = tracemalloc.get_traced_memory()[0]
            sock = socket.create_connection((server.host, server.port), timeout=30)
            stream = start_data(sock)
            tracemalloc.reset_peak()
            view = memoryview(content)
            for start in range(0, len(content), 1024 * 1024):
                stream.write(view[start : start + 1024 * 1024])
            stream.write(b".\r\n")
            stream.flush()
            reply = stream.readline()
            peak = tracemalloc.get_traced_memory()[1] - baseline
        finally:
            tracemalloc.stop()
        stream.close()  # it holds the socket open too
        sock.close()
    assert reply.startswith(b"250 2.0.0"), reply
    # Client and server share this process: the client's own buffers are counted too.
    # Holding the message (20 MiB, or aiosmtpd's ~2.2x) would be far above this.
    assert peak < 6 * 1024 * 1024, f"peak {peak / 2**20:.1f} MiB"
    assert InboundMessage.objects.get().raw_bytes.endswith(content)


def test_disk_full_while_spooling_is_452_and_the_session_goes_on(mailbox, tiny_disk) -> None:
    settings = {
        "HOSTNAME": "mx.test",
        "SPOOL_DIR": str(tiny_disk),
        "SPOOL_MEMORY_LIMIT": 64 * 1024,
        "MIN_FREE_SPACE": 0,
    }
    with override_settings(INBOUND_SMTP=settings), running_server() as server:
        with GuardedSMTP(server.host, server.port, local_hostname="c.test", timeout=30) as client:
            client.ehlo()
            client.mail(FROM)
            client.rcpt(TO)
            code, text = client.data(_message(3 * 1024 * 1024))
            assert (code, text[:5]) == (452, b"4.3.1"), text
            assert list(tiny_disk.iterdir()) == []  # the partial spool file is gone
            assert InboundMessage.objects.count() == 0
            client.mail(FROM)
            client.rcpt(TO)
            assert client.data(_message(10 * 1024, tag="small"))[0] == 250
    assert InboundMessage.objects.get().subject == "small"


def test_disk_full_in_storage_is_452_with_nothing_half_stored(mailbox, tiny_disk) -> None:
    filler = tiny_disk / "filler"
    filler.write_bytes(b"x" * (1024 * 1024 - 40 * 1024))
    storages = local_storages(tiny_disk)
    settings = {"HOSTNAME": "mx.test", "MIN_FREE_SPACE": 0}
    with override_settings(STORAGES=storages, INBOUND_SMTP=settings), running_server() as server:
        code, text = _send(server, _message(100 * 1024))
        assert (code, text[:5]) == (452, b"4.3.1"), text
        assert InboundMessage.objects.count() == 0
        assert not [p for p in tiny_disk.rglob("*") if p.is_file() and p != filler]
        filler.unlink()
        assert _send(server, _message(100 * 1024, tag="after"))[0] == 250
    assert InboundMessage.objects.get().subject == "after"


def test_mail_is_refused_with_452_when_free_space_is_below_the_minimum(mailbox, tiny_disk):
    settings = {"HOSTNAME": "mx.test", "SPOOL_DIR": str(tiny_disk), "MIN_FREE_SPACE": 2 * 2**20}
    with override_settings(INBOUND_SMTP=settings), running_server() as server:
        with GuardedSMTP(server.host, server.port, local_hostname="c.test", timeout=10) as client:
            client.ehlo()
            code, text = client.mail(FROM)
            assert (code, text[:5]) == (452, b"4.3.1"), text


def test_a_declared_size_larger_than_the_free_space_is_refused_at_mail(mailbox, tiny_disk):
    settings = {"HOSTNAME": "mx.test", "SPOOL_DIR": str(tiny_disk), "MIN_FREE_SPACE": 1}
    with override_settings(INBOUND_SMTP=settings), running_server() as server:
        with GuardedSMTP(server.host, server.port, local_hostname="c.test", timeout=10) as client:
            client.ehlo()
            assert client.mail(FROM, ["SIZE=5000000"])[0] == 452
            assert client.mail(FROM, ["SIZE=1000"])[0] == 250


def test_a_commit_that_fails_is_451_and_leaves_no_file(mailbox, tmp_path) -> None:
    # A real commit failure: the mailbox is deleted between RCPT and the end of DATA,
    # so the recipient row's foreign key (deferred to COMMIT by Django) fails there.
    storages = local_storages(tmp_path / "media")
    settings = {"HOSTNAME": "mx.test"}
    with override_settings(STORAGES=storages, INBOUND_SMTP=settings), running_server() as server:
        with GuardedSMTP(server.host, server.port, local_hostname="c.test", timeout=10) as client:
            client.ehlo()
            client.mail(FROM)
            assert client.rcpt(TO)[0] == 250
            deleter = threading.Thread(target=_delete_mailboxes)
            deleter.start()
            deleter.join()
            code, text = client.data(_message(1024))
            assert (code, text[:5]) == (451, b"4.3.0"), text
            assert InboundMessage.objects.count() == 0
            assert not [p for p in (tmp_path / "media").rglob("*.eml")]
            Mailbox.objects.create(address=TO)
            client.mail(FROM)
            assert client.rcpt(TO)[0] == 250
            assert client.data(_message(1024, tag="retry"))[0] == 250
    assert InboundMessage.objects.get().subject == "retry"


def _delete_mailboxes() -> None:
    # Raw SQL on a connection of its own, so the SET_NULL cascade Django would run
    # cannot help: only the stale id the session resolved at RCPT remains.
    try:
        with connections["default"].cursor() as cursor:
            cursor.execute("DELETE FROM inbound_smtp_mailbox")
    finally:
        connections.close_all()


def test_spool_directory_defaults_beside_the_raw_messages(tmp_path) -> None:
    storages = local_storages(tmp_path)
    with override_settings(STORAGES=storages, INBOUND_SMTP={}):
        assert delivery.spool_directory() == os.path.join(tmp_path, "inbound_smtp", "spool")
        assert delivery.message_folders()[1] == os.path.join(tmp_path, "inbound_smtp")
    with override_settings(STORAGES=storages, INBOUND_SMTP={"SPOOL_DIR": "/var/spool/x"}):
        assert delivery.spool_directory() == "/var/spool/x"


def test_a_remote_storage_gets_spooled_messages_streamed_in(mailbox, tmp_path) -> None:
    # InMemoryStorage has no local path, like S3: the spool file is streamed into it.
    storages = {"default": {"BACKEND": "django.core.files.storage.InMemoryStorage"}}
    settings = {
        "HOSTNAME": "mx.test",
        "SPOOL_DIR": str(tmp_path / "spool"),
        "SPOOL_MEMORY_LIMIT": 64 * 1024,
    }
    big, small = _message(512 * 1024, tag="big"), _message(1024, tag="small")
    with override_settings(STORAGES=storages, INBOUND_SMTP=settings), running_server() as server:
        assert _send(server, big)[0] == 250
        assert _send(server, small)[0] == 250
        stored = {m.subject: m.raw_bytes for m in InboundMessage.objects.all()}
    assert stored["big"].endswith(big)
    assert stored["small"].endswith(small)
    assert list((tmp_path / "spool").glob("*.spool")) == []


def test_a_spool_on_another_file_system_is_copied_into_storage(mailbox, tiny_disk, tmp_path):
    # A hard link cannot cross file systems (EXDEV): the spool file is copied instead.
    storages = local_storages(tmp_path / "media")
    settings = {
        "HOSTNAME": "mx.test",
        "SPOOL_DIR": str(tiny_disk),
        "SPOOL_MEMORY_LIMIT": 64 * 1024,
        "MIN_FREE_SPACE": 0,
    }
    content = _message(512 * 1024)
    with override_settings(STORAGES=storages, INBOUND_SMTP=settings), running_server() as server:
        assert _send(server, content)[0] == 250
        message = InboundMessage.objects.get()
        assert message.raw_bytes.endswith(content)
        assert (tmp_path / "media" / message.raw_file).stat().st_nlink == 1
    assert list(tiny_disk.iterdir()) == []


@pytest.mark.parametrize("size", [1024, 512 * 1024])
def test_a_client_hanging_up_after_the_final_dot_never_leaves_a_truncated_message(
    mailbox, tmp_path, size
) -> None:
    # The client sends everything and hangs up without waiting for the reply. Whether
    # the server reads the end of data before it sees the hang-up depends on timing
    # (a small message always arrives in one read): either the whole message is stored
    # (the delivery owns the spool, and finishes even though the session is gone) or
    # nothing is (no 250 was sent; the client retries). Never a part of it.
    settings = {"HOSTNAME": "mx.test", "SPOOL_DIR": str(tmp_path), "SPOOL_MEMORY_LIMIT": 64 * 1024}
    content = _message(size)
    with override_settings(INBOUND_SMTP=settings), running_server() as server:
        sock = socket.create_connection((server.host, server.port), timeout=10)
        stream = start_data(sock)
        stream.write(content + b".\r\n")
        stream.flush()
        sock.shutdown(socket.SHUT_RDWR)
        stream.close()
        sock.close()
    # running_server waits for commits in flight before it returns.
    stored = list(InboundMessage.objects.all())
    if size <= 64 * 1024:
        assert len(stored) == 1
    assert len(stored) <= 1
    for message in stored:
        assert message.raw_bytes.endswith(content)
        assert message.size == len(message.raw_bytes)
    assert list(tmp_path.glob("*.spool")) == []


def test_a_reset_during_a_spool_write_never_discards_under_the_writing_thread(
    mailbox, tmp_path, monkeypatch
) -> None:
    # Mocked fault: a slow disk write cannot be produced for real here, so the spool's
    # write step is held on an event while the client resets the connection. The
    # session is cancelled meanwhile; the spool must not be discarded (its file closed,
    # its descriptor reused by another file) until the thread's write has ended.
    from django_inbound_smtp.spool import Spool

    gate, events = threading.Event(), []
    real_flush, real_discard = Spool._flush, Spool._discard

    def held_flush(self: Spool) -> None:
        events.append("write starts")
        gate.wait(10)
        real_flush(self)
        events.append("write ends")

    def logged_discard(self: Spool) -> None:
        events.append("discard")
        real_discard(self)

    monkeypatch.setattr(Spool, "_flush", held_flush)
    monkeypatch.setattr(Spool, "_discard", logged_discard)
    settings = {"HOSTNAME": "mx.test", "SPOOL_DIR": str(tmp_path), "SPOOL_MEMORY_LIMIT": 64 * 1024}
    with override_settings(INBOUND_SMTP=settings), running_server() as server:
        sock = socket.create_connection((server.host, server.port), timeout=10)
        stream = start_data(sock)
        # Just past the memory limit: the first 64 KiB chunk goes to the held write, the
        # rest sits in the reader's buffer, and the transport keeps reading, so it sees
        # the reset at once and the session is cancelled mid-write.
        stream.write(_message(64 * 1024 + 500))
        stream.flush()
        _wait_for(lambda: "write starts" in events)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        stream.close()  # the file object holds the socket open until it is closed too
        sock.close()  # RST: the session is cancelled while the write is in progress
        time.sleep(0.5)
        assert "discard" not in events
        gate.set()
        _wait_for(lambda: "discard" in events)
    assert events.index("discard") > events.index("write ends")
    assert list(tmp_path.glob("*.spool")) == []
    assert InboundMessage.objects.count() == 0


def _wait_for(condition, timeout: float = 10) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.01)
