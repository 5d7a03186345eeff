"""Tier 4: stopping the server while sessions are idle, transferring and committing."""

from __future__ import annotations

import gc
import smtplib
import socket
import sqlite3
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager

import pytest
from django.db import connection

from django_inbound_smtp.models import InboundMessage
from django_inbound_smtp.testing import ServerThread
from tests.helpers import GuardedSMTP, start_data

pytestmark = [pytest.mark.integration, pytest.mark.django_db(transaction=True)]

MESSAGE = b"Subject: in flight\r\n\r\nx\r\n"


@pytest.fixture(autouse=True)
def _collect_garbage_per_test() -> Iterator[None]:
    # These tests stop event loops with sessions in every state; collecting right away
    # pins any unclosed transport on the test that made it (warnings are errors),
    # instead of a later, unrelated spot where the collector happens to run.
    yield
    gc.collect()


@contextmanager
def write_lock_on_messages() -> Iterator[None]:
    """Hold a real database lock that makes the server's commit wait (no mock)."""
    if connection.vendor == "postgresql":
        import psycopg

        settings = connection.settings_dict
        with psycopg.connect(
            host=settings["HOST"],
            port=settings["PORT"],
            user=settings["USER"],
            dbname=settings["NAME"],
        ) as other:
            other.execute("LOCK TABLE inbound_smtp_inboundmessage IN EXCLUSIVE MODE")
            yield
            other.rollback()
    else:
        lite = sqlite3.connect(connection.settings_dict["NAME"], isolation_level=None)
        try:
            lite.execute("BEGIN IMMEDIATE")
            yield
            lite.execute("ROLLBACK")
        finally:
            lite.close()


def _wait_for(predicate, seconds: float = 10) -> None:
    deadline = time.monotonic() + seconds
    while not predicate():
        assert time.monotonic() < deadline, "condition not reached"
        time.sleep(0.02)


def test_stop_answers_idle_sessions_and_never_cuts_a_commit(make_mailbox) -> None:
    make_mailbox("user@our.test")
    server = ServerThread()
    address = server.start()
    idle = socket.create_connection((address.host, address.port), timeout=10)
    assert idle.recv(1024).startswith(b"220 ")
    replies: list[object] = []

    def send() -> None:
        with GuardedSMTP(address.host, address.port, timeout=30) as client:
            try:
                replies.append(client.sendmail("a@example.org", ["user@our.test"], MESSAGE))
            except smtplib.SMTPException as error:
                replies.append(error)

    stopper = threading.Thread(target=server.stop, kwargs={"grace": 2})
    with write_lock_on_messages():
        sender = threading.Thread(target=send)
        sender.start()
        _wait_for(lambda: any(p.phase == "commit" for p in server.server._connections))
        stopper.start()
        # The idle session is told at once; the listener no longer accepts.
        assert idle.recv(1024).startswith(b"421 4.3.2 mx.test Service shutting down")
        _wait_for(lambda: not _listening(server))
        time.sleep(0.3)  # the commit is still blocked: its session must stay open
        assert replies == []
    sender.join(30)
    stopper.join(30)
    idle.close()
    assert replies == [{}]  # the commit finished and its client got 250, not 421
    assert InboundMessage.objects.get().subject == "in flight"


def _listening(server: ServerThread) -> bool:
    # Asked of the server, not probed with connects: a connect racing the close would
    # be accepted into a loop that is about to stop.
    listener = server.server._server
    return listener is not None and listener.is_serving()


def test_new_transaction_while_draining_gets_421(make_mailbox) -> None:
    make_mailbox("user@our.test")
    server = ServerThread()
    address = server.start()
    client = GuardedSMTP(address.host, address.port, timeout=10)
    client.ehlo("c")
    server.server.handler.draining = True
    code, text = client.docmd("MAIL FROM:<a@example.org>")
    assert (code, text.decode()) == (
        421,
        "4.3.2 mx.test Service shutting down, closing transmission channel",
    )
    server.stop(grace=1)
    client.close()
    assert not InboundMessage.objects.exists()


def _start_transfer(address) -> socket.socket:
    sock = socket.create_connection((address.host, address.port), timeout=10)
    start_data(sock).close()  # nothing more arrives before our next write
    sock.sendall(b"Subject: mid-transfer\r\n\r\nfirst half\r\n")
    return sock


def _read_to_close(sock: socket.socket) -> bytes:
    with sock:
        data = b""
        while chunk := sock.recv(4096):
            data += chunk
        return data


def test_a_transfer_in_progress_may_finish_within_the_grace(make_mailbox) -> None:
    make_mailbox("user@our.test")
    server = ServerThread()
    address = server.start()
    sock = _start_transfer(address)
    stopper = threading.Thread(target=server.stop, kwargs={"grace": 5})
    stopper.start()
    _wait_for(lambda: not _listening(server))  # listener closed
    sock.sendall(b"second half\r\n.\r\n")
    replies = _read_to_close(sock)
    stopper.join(30)
    assert replies.startswith(b"250 2.0.0 Ok: queued as")
    assert replies.endswith(
        b"421 4.3.2 mx.test Service shutting down, closing transmission channel\r\n"
    )
    assert InboundMessage.objects.get().subject == "mid-transfer"


def test_a_transfer_still_running_after_the_grace_is_cut_and_not_stored(make_mailbox) -> None:
    make_mailbox("user@our.test")
    server = ServerThread()
    address = server.start()
    sock = _start_transfer(address)
    server.stop(grace=0.5)  # the client never finishes
    assert _read_to_close(sock) == (
        b"421 4.3.2 mx.test Service shutting down, closing transmission channel\r\n"
    )
    assert not InboundMessage.objects.exists()
