"""Tier 5: crash safety. SIGKILL ``manage.py smtpd`` in the middle of a load; every
message that got a ``250`` must be stored (hostile-inputs §4.3, §4.6, issue #99).

The server runs as a real subprocess against the test database. Eight client
connections send 1,000 unique messages, some larger than ``SPOOL_MEMORY_LIMIT`` so
both the in-memory and the spool-file paths are under load. Once 400 messages have
been acknowledged the server is killed with SIGKILL (no handler, no cleanup: what a
power cut or the OOM killer does). A new server is started and the clients retry
every message that got no ``250``, as a real MTA would. Then:

- every acknowledged queue id has a row, with the bytes the client sent, behind our
  ``Received:`` line, and the right recipients;
- a row nobody was told about exists only for a message whose ``250`` the kill cut
  off; its retry is recorded as a duplicate, never as a second original;
- the crash's leftovers (spool files, raw files without a row) are removed by the
  orphan sweeper, and nothing a row points at is.

With ``--workers 2`` the same load runs against two worker processes, and the one
holding the most connections is SIGKILLed: its parent starts another, and the clients
retry on the same server.

Nothing here depends on processing (parsing): only stored rows and files count.
"""

from __future__ import annotations

import base64
import os
import random
import re
import signal
import smtplib
import threading
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from django.db import connection
from django.db.models import Count

from django_inbound_smtp.conf import get_settings
from django_inbound_smtp.models import InboundMessage, Mailbox
from django_inbound_smtp.store.files import spool_directory
from django_inbound_smtp.store.orphans import remove_orphans
from tests.helpers import GuardedSMTP, subprocess_env
from tests.smtpd_process import Smtpd, logged_settings

pytestmark = [pytest.mark.integration, pytest.mark.slow]

MESSAGES = 1000
CONNECTIONS = 8
KILL_AFTER_ACKS = 400
# Above the default SPOOL_MEMORY_LIMIT (256 KiB): these spill to a spool file while
# they arrive and are hard-linked into storage, the others are written from memory.
LARGE_SIZE = 300 * 1024
LARGE_EVERY = 25
QUEUED = re.compile(rb"queued as ([0-9A-Za-z]+)")


@dataclass
class Outgoing:
    """One message of the load: its envelope and the exact bytes sent after DATA."""

    index: int
    message_id: str
    recipients: list[str]
    content: bytes
    # Queue ids of every 250 this message got (one per acknowledged attempt).
    acked: list[str] = field(default_factory=list)
    # Attempts whose final "." was sent (or may have been) but got no 250.
    unacked_attempts: int = 0


def _content(index: int, rng: random.Random) -> tuple[str, bytes]:
    """A unique message, CRLF-terminated, with no line starting with "." (so the bytes
    on the wire after dot-unstuffing are exactly these)."""
    message_id = f"<load-{index}-{rng.getrandbits(64):016x}@client.test>"
    size = LARGE_SIZE if index % LARGE_EVERY == 0 else rng.randint(200, 8000)
    # base64 text: never a leading ".", lines of 76 characters, unique per message.
    body = base64.encodebytes(rng.randbytes(size * 3 // 4)).replace(b"\n", b"\r\n")
    header = (
        f"Message-ID: {message_id}\r\n"
        f"From: Load <load@client.test>\r\n"
        f"To: user@our.test\r\n"
        f"Subject: load {index}\r\n"
        f"X-Load-Index: {index}\r\n"
        "\r\n"
    ).encode()
    return message_id, header + body


def _recipients(index: int) -> list[str]:
    # A mix of one and two recipients, plus-addressed ones too (all via the catch-all).
    if index % 3 == 0:
        return [f"a{index % 7}@our.test", f"b+tag{index}@our.test"]
    return [f"user{index % 5}@our.test"]


def _load() -> list[Outgoing]:
    rng = random.Random(99)  # the same load every run
    load = []
    for index in range(MESSAGES):
        message_id, content = _content(index, rng)
        load.append(Outgoing(index, message_id, _recipients(index), content))
    return load


class Progress:
    """Acknowledgements counted across the client threads; sets ``kill_point`` once
    ``kill_after`` messages got their 250 (the kill is chosen by count, not by time)."""

    def __init__(self, kill_after: int | None = None) -> None:
        self.kill_after = kill_after
        self.kill_point = threading.Event()
        self._lock = threading.Lock()
        self._acks = 0

    def acked(self) -> None:
        with self._lock:
            self._acks += 1
            if self.kill_after is not None and self._acks >= self.kill_after:
                self.kill_point.set()


def _send_all(port: int, messages: list[Outgoing], progress: Progress) -> None:
    """Send ``messages`` over one connection, recording each 250's queue id.

    Stops at the first connection error: every message after it is simply not sent
    (not acknowledged), as with a real client whose server went away."""
    try:
        client = GuardedSMTP("127.0.0.1", port, local_hostname="client.test", timeout=60)
    except OSError:
        return
    try:
        client.ehlo()
        for message in messages:
            client.mail("load@client.test")
            for rcpt in message.recipients:
                code, text = client.rcpt(rcpt)
                assert code == 250, (rcpt, code, text)
            message.unacked_attempts += 1  # until a 250 says otherwise
            code, text = client.data(message.content)
            if code != 250:
                # A 4xx (the kill cannot cause one, but a fault might): not ours.
                continue
            match = QUEUED.search(text)
            assert match, text
            message.unacked_attempts -= 1
            message.acked.append(match[1].decode())
            progress.acked()
    except (smtplib.SMTPException, OSError):
        pass  # the server was killed: the message in flight got no 250
    finally:
        client.close()


def _run_load(port: int, messages: list[Outgoing], progress: Progress) -> list[threading.Thread]:
    threads = [
        threading.Thread(
            target=_send_all, args=(port, messages[n::CONNECTIONS], progress), daemon=True
        )
        for n in range(CONNECTIONS)
    ]
    for thread in threads:
        thread.start()
    return threads


def _join(threads: list[threading.Thread]) -> None:
    for thread in threads:
        thread.join(120)
        assert not thread.is_alive(), "a client is stuck"


def _storage_files(root: Path) -> Iterator[Path]:
    return (path for path in root.rglob("*") if path.is_file())


@pytest.fixture
def isolated_storage(tmp_path: Path, settings) -> Path:
    """A storage folder of this test's own, in this process and in the servers'
    (other tests' leftovers in the shared scratch folder would look like orphans)."""
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    settings.STORAGES = {
        **settings.STORAGES,
        "default": {
            "BACKEND": "django.core.files.storage.FileSystemStorage",
            "OPTIONS": {"location": str(scratch / "media")},
        },
    }
    return scratch


def _busiest_worker(server: Smtpd) -> int:
    """The pid of the worker that acknowledged the most messages so far: it holds client
    connections (each client keeps its connection for all its messages)."""
    served = Counter(pid for _index, pid, line in server.worker_lines() if "accepted" in line)
    (pid, _count), *_ = served.most_common(1)
    assert pid in server.pids, (pid, server.pids)
    return pid


@pytest.mark.parametrize("workers", [1, 2], ids=["one-process", "workers-2"])
def test_sigkill_during_load_loses_no_acknowledged_message(
    transactional_db, isolated_storage: Path, tmp_path: Path, workers: int
) -> None:
    Mailbox.objects.create(address="*@our.test")
    # Logs on stdout: they say which worker acknowledged what.
    env = subprocess_env(INBOUND_TEST_SCRATCH=str(isolated_storage), **logged_settings(tmp_path))
    load = _load()
    # Both storage paths are under load: spooled to a file, and written from memory.
    spooled = [m for m in load if len(m.content) > get_settings().SPOOL_MEMORY_LIMIT]
    assert len(spooled) == MESSAGES // LARGE_EVERY

    # Phase 1: the load, killed once KILL_AFTER_ACKS messages are acknowledged: the
    # server, or with --workers 2 the worker holding the most connections.
    server = Smtpd(env, *(["--workers", str(workers)] if workers > 1 else []))
    try:
        progress = Progress(kill_after=KILL_AFTER_ACKS)
        threads = _run_load(server.port, load, progress)
        reached = progress.kill_point.wait(120)
        assert reached, f"never reached {KILL_AFTER_ACKS} acks: {server.text()}"
        if workers == 1:
            server.kill()
        else:
            victim = _busiest_worker(server)
            os.kill(victim, signal.SIGKILL)
        _join(threads)
        acked_before_kill = sum(len(m.acked) for m in load)
        cut_off = {m.index for m in load if m.unacked_attempts}
        assert KILL_AFTER_ACKS <= acked_before_kill < MESSAGES, acked_before_kill
        # At most one transaction in flight per connection when the server died.
        assert len(cut_off) <= CONNECTIONS

        # Phase 2: the clients retry everything that got no 250, on a fresh server; with
        # workers, on the same one, once the parent has replaced the killed worker.
        if workers == 1:
            server = Smtpd(env)
        else:
            assert server.wait_for(re.compile(r"^worker \d+ restarted")), server.text()
            assert f"(pid {victim}) exited with status -9" in server.text()
        retry = [m for m in load if not m.acked]
        _join(_run_load(server.port, retry, Progress()))
        returncode = server.stop()
    finally:
        server.kill()
    assert returncode == 0, server.text()
    assert "Inbound SMTP server stopped." in server.text()
    assert all(len(m.acked) == 1 for m in load), [m.index for m in load if len(m.acked) != 1]

    # The crash's leftovers: spool files of transfers in flight, raw files written but
    # never committed. Backdate everything past the sweeper's grace, then sweep.
    media = isolated_storage / "media"
    two_hours_ago = time.time() - 2 * 3600
    for path in _storage_files(media):
        os.utime(path, (two_hours_ago, two_hours_ago))
    removed = remove_orphans(force=True)
    referenced = set(InboundMessage.objects.values_list("raw_file", flat=True))
    assert not referenced & set(removed)  # storage names; spool files are absolute paths
    assert not list(Path(spool_directory()).glob("*.spool"))
    stored = {str(p.relative_to(media)) for p in _storage_files(media) if p.suffix == ".eml"}
    assert stored == referenced, stored ^ referenced

    # Every acknowledged message is stored, byte for byte, for the right recipients.
    rows = {
        row.queue_id: row
        for row in InboundMessage.objects.select_related("duplicate_of").prefetch_related(
            "recipients"
        )
    }
    acked = {qid: m for m in load for qid in m.acked}
    missing = sorted(set(acked) - set(rows))
    assert not missing, f"acknowledged but not stored: {missing}"
    for queue_id, message in acked.items():
        row = rows[queue_id]
        original = row.duplicate_of or row
        raw = row.raw_bytes
        assert raw.startswith(b"Received: from client.test ([127.0.0.1])")
        assert f" id {original.queue_id}".encode() in raw[: len(raw) - len(message.content)]
        assert raw.endswith(message.content), queue_id
        assert len(raw) == row.size
        assert sorted(r.address for r in row.recipients.all()) == sorted(message.recipients)

    # A row nobody got a 250 for: only the kill's victims, whose retry (same bytes,
    # same envelope) was then recorded as its duplicate, never as a second original.
    unacknowledged = {qid: row for qid, row in rows.items() if qid not in acked}
    by_message_id = {m.message_id.strip("<>"): m for m in load}
    for queue_id, row in unacknowledged.items():
        message = by_message_id[row.message_id.strip("<>")]
        assert message.index in cut_off, queue_id
        assert row.duplicate_of is None
        assert rows[message.acked[0]].duplicate_of == row
        assert row.raw_bytes.endswith(message.content)
    assert len(acked) <= len(rows) <= len(acked) + len(cut_off)
    assert not (
        InboundMessage.objects.filter(duplicate_of__isnull=True)
        .values("message_id")
        .annotate(n=Count("pk"))
        .filter(n__gt=1)
    )
    assert InboundMessage.objects.filter(duplicate_of__isnull=True).count() == MESSAGES
    if connection.vendor == "sqlite":
        # Several processes wrote the file at once (--workers), and one was killed.
        with connection.cursor() as cursor:
            cursor.execute("PRAGMA integrity_check")
            assert cursor.fetchall() == [("ok",)]
