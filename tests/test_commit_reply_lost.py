"""Review: a COMMIT whose reply is lost (the connection drops after the server
committed) must never leave a committed row without its file.

A real fault: a TCP proxy between Django and PostgreSQL forwards the client's
COMMIT, lets the server commit it, then cuts both sockets before the reply."""

from __future__ import annotations

import contextlib
import socket
import threading
import time
from pathlib import Path

import pytest
from django.core.files.storage import storages
from django.db import connection

from django_inbound_smtp import store
from django_inbound_smtp.envelope import ResolvedRecipient
from django_inbound_smtp.models import InboundMessage, Mailbox
from django_inbound_smtp.spool import Spool
from tests.helpers import received_envelope

pytestmark = pytest.mark.django_db(transaction=True)

CONTENT = b"Subject: lost reply\r\nMessage-ID: <lost@x.test>\r\n\r\nbody\r\n"


class CommitCutter:
    """Proxy to PostgreSQL; when armed, the first COMMIT is delivered, then cut."""

    def __init__(self, host: str, port: int) -> None:
        self.target = (host, port)
        self.armed = threading.Event()
        self.cut = threading.Event()
        self.late = 0.0  # > 0: the COMMIT reaches the server this long after the cut
        self.pairs: dict[socket.socket, threading.Event] = {}
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            server = socket.create_connection(self.target)
            pair = threading.Event()
            threading.Thread(target=self._pump, args=(client, server, pair), daemon=True).start()
            threading.Thread(target=self._pump, args=(server, client, None), daemon=True).start()
            self.pairs[server] = pair

    def _pump(self, src: socket.socket, dst: socket.socket, mine) -> None:
        upstream = mine is not None
        try:
            while chunk := src.recv(65536):
                if not upstream and self.pairs.get(src) is not None and self.pairs[src].is_set():
                    return  # the reply to the COMMIT is never delivered
                if upstream and self.armed.is_set() and b"COMMIT\x00" in chunk:
                    self.armed.clear()
                    mine.set()
                    self.cut.set()
                    if self.late:  # the client sees the cut first; the commit happens later
                        src.shutdown(socket.SHUT_RDWR)
                        time.sleep(self.late)
                    dst.sendall(chunk)
                    time.sleep(0.3)  # the server commits; its reply never arrives
                    for s in (src, dst):
                        s.shutdown(socket.SHUT_RDWR)
                    return
                dst.sendall(chunk)
        except OSError:
            pass
        finally:
            for s in (src, dst):
                with contextlib.suppress(OSError):
                    s.shutdown(socket.SHUT_RDWR)
                s.close()


@pytest.fixture
def cutter():
    if connection.vendor != "postgresql":
        pytest.skip("needs PostgreSQL")
    settings = connection.settings_dict
    proxy = CommitCutter(settings["HOST"] or "127.0.0.1", int(settings["PORT"] or 5432))
    old = settings["PORT"]
    connection.close()
    settings["PORT"] = str(proxy.port)
    yield proxy
    connection.close()
    settings["PORT"] = old
    proxy.listener.close()


def test_single_message_commit_reply_lost(cutter: CommitCutter) -> None:
    mailbox = Mailbox.objects.get_or_create(address="user@our.test")[0]
    rcpt = (ResolvedRecipient(address="user@our.test", mailbox_id=mailbox.pk),)
    cutter.armed.set()
    try:
        answered = store.store_message(received_envelope("QLOST1", recipients=rcpt), CONTENT)
    except Exception as error:  # the client gets a 4xx and will retry
        answered = None
        print("4xx because of", repr(error))
    assert cutter.cut.is_set()
    row = InboundMessage.objects.get(queue_id="QLOST1")  # the COMMIT did happen
    assert answered in (None, row.pk)
    path = Path(storages["default"].path(row.raw_file))
    assert path.exists(), "a committed row points at a discarded file: the message is lost"


def test_single_message_commit_lands_after_the_cut(cutter: CommitCutter) -> None:
    # As with synchronous replication: the client loses the connection while the
    # server is still committing; a query on a new connection does not see the row yet.
    mailbox = Mailbox.objects.get_or_create(address="user@our.test")[0]
    rcpt = (ResolvedRecipient(address="user@our.test", mailbox_id=mailbox.pk),)
    cutter.late = 1.0
    cutter.armed.set()
    try:
        answered = store.store_message(received_envelope("QLATE1", recipients=rcpt), CONTENT)
    except Exception as error:
        answered = None
        print("4xx because of", repr(error))
    time.sleep(1.5)
    row = InboundMessage.objects.get(queue_id="QLATE1")
    assert answered in (None, row.pk)
    path = Path(storages["default"].path(row.raw_file))
    assert path.exists(), "a committed row points at a discarded file: the message is lost"


def _spool(n: int) -> Spool:
    spool = Spool(None, memory_limit=1 << 20, head_limit=1 << 16)
    spool.add(b"Subject: batch %d\r\n\r\nbody %d\r\n" % (n, n))
    spool.finish()
    return spool


@pytest.mark.parametrize("late", [0.0, 1.0])
def test_a_batch_whose_commit_reply_is_lost(cutter: CommitCutter, late: float) -> None:
    mailbox = Mailbox.objects.get_or_create(address="user@our.test")[0]
    rcpt = (ResolvedRecipient(address="user@our.test", mailbox_id=mailbox.pk),)
    batch = [(received_envelope(f"QB{n}", recipients=rcpt), _spool(n)) for n in range(3)]
    cutter.late = late
    cutter.armed.set()
    outcomes = store.store_batch(batch)
    time.sleep(late + 0.5)
    rows = {m.queue_id: m for m in InboundMessage.objects.all()}
    assert set(rows) == {"QB0", "QB1", "QB2"}  # the first COMMIT happened
    for (envelope, _), outcome in zip(batch, outcomes, strict=True):
        row = rows[envelope.queue_id]
        assert outcome == row.pk or isinstance(outcome, Exception)  # 250 or 4xx, never wrong
        assert Path(storages["default"].path(row.raw_file)).exists()
    print("outcomes", outcomes)
