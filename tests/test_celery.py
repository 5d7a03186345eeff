"""Celery dispatch against a real Redis broker and a real worker process (no eager mode).

Each test starts its own ``redis-server`` on a free loopback port (so it can stop it)
and a ``celery worker`` subprocess on the test database. The mailbox handlers in
``tests/celery_handlers.py`` run in the worker and log to a file the test reads.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from celery import Celery
from django.test import override_settings

from django_inbound_smtp.lifecycle import schedule as dispatch
from django_inbound_smtp.models import InboundMessage, Mailbox
from django_inbound_smtp.testing import running_server
from tests import celery_app
from tests.helpers import GuardedSMTP, subprocess_env

pytestmark = [
    pytest.mark.integration,
    pytest.mark.slow,
    pytest.mark.django_db(transaction=True),
    pytest.mark.skipif(not Path("/usr/bin/redis-server").exists(), reason="needs redis-server"),
]
Status = InboundMessage.Status


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _wait(predicate: Callable[[], bool], *, seconds: float = 30, what: str = "") -> None:
    deadline = time.monotonic() + seconds
    while not predicate():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)


class RedisServer:
    """A throw-away redis-server on 127.0.0.1:<port> that keeps nothing on disk."""

    def __init__(self, folder: Path) -> None:
        self.port = _free_port()
        self.folder = folder
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def _answers(self) -> bool:
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=1) as sock:
                sock.sendall(b"PING\r\n")
                return sock.recv(16).startswith(b"+PONG")
        except OSError:
            return False

    def start(self) -> None:
        self.process = subprocess.Popen(
            [
                "redis-server",
                "--port",
                str(self.port),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
                "--dir",
                str(self.folder),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        _wait(self._answers, seconds=15, what="redis-server")

    def stop(self) -> None:
        if self.process is not None:
            self.process.terminate()
            self.process.wait(15)
            self.process = None


class Worker:
    """``celery -A tests.celery_app worker`` with one prefork child, output collected."""

    def __init__(self, env: dict[str, str]) -> None:
        self.env = env
        self.output: list[str] = []
        self.process: subprocess.Popen[str] | None = None

    def start(self) -> None:
        self.process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "celery",
                "-A",
                "tests.celery_app",
                "worker",
                "--pool=prefork",
                "--concurrency=1",
                "--loglevel=INFO",
                "--without-gossip",
                "--without-mingle",
                "--without-heartbeat",
                "-n",
                f"inbound-test-{os.getpid()}@localhost",
            ],
            env=self.env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        threading.Thread(target=self._collect, daemon=True).start()
        _wait(lambda: any(" ready." in line for line in self.output), what="worker ready")

    def _collect(self) -> None:
        assert self.process is not None
        assert self.process.stdout is not None
        for line in self.process.stdout:
            self.output.append(line)

    def children(self) -> list[int]:
        assert self.process is not None
        parent = str(self.process.pid)
        pids = []
        for stat in Path("/proc").glob("[0-9]*/stat"):
            try:
                fields = stat.read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if fields[1] == parent:
                pids.append(int(stat.parent.name))
        return pids

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(10)
        if self.process is not None and self.process.stdout is not None:
            self.process.stdout.close()


class Setup:
    def __init__(self, broker: RedisServer, log: Path) -> None:
        self.broker = broker
        self.log = log
        self.worker = Worker(
            subprocess_env(
                INBOUND_TEST_BROKER_URL=broker.url,
                INBOUND_TEST_HANDLER_LOG=str(log),
                INBOUND_TEST_LEASE="1",
            )
        )

    def events(self) -> list[str]:
        return self.log.read_text().splitlines() if self.log.exists() else []

    def release(self) -> None:
        Path(str(self.log) + ".release").touch()


@pytest.fixture
def setup(tmp_path: Path) -> Iterator[Setup]:
    broker = RedisServer(tmp_path)
    broker.start()
    current = Setup(broker, tmp_path / "handled.log")
    os.environ["INBOUND_TEST_HANDLER_LOG"] = str(current.log)
    # This process sends tasks through the test's broker (a fresh app: a connection
    # pool is bound to its broker URL).
    celery_app.sender = Celery("inbound-test-sender", broker=broker.url, set_as_current=False)
    settings = {
        "HOSTNAME": "mx.test",
        "DISPATCH": "celery",
        "CELERY_APP": "tests.celery_app.sender",
        "REDISPATCH_AFTER": 1,
        "PROCESSING_LEASE": 1,
        "SWEEP_INTERVAL": 0,
    }
    try:
        with override_settings(INBOUND_SMTP=settings):
            yield current
    finally:
        current.worker.stop()
        broker.stop()
        celery_app.sender.close()
        celery_app.sender = None
        os.environ.pop("INBOUND_TEST_HANDLER_LOG", None)


def _mailbox(handler: str) -> None:
    Mailbox.objects.create(address="user@our.test", handler=f"tests.celery_handlers.{handler}")


def _send(subject: str, *, message_id: str | None = None) -> None:
    with running_server() as server:
        with GuardedSMTP(server.host, server.port, timeout=30) as client:
            headers = f"Subject: {subject}\r\n"
            if message_id:
                headers += f"Message-ID: {message_id}\r\n"
            refused = client.sendmail("a@example.org", ["user@our.test"], f"{headers}\r\nx\r\n")
            assert refused == {}


def _status(subject: str) -> str:
    return InboundMessage.objects.filter(subject=subject).values_list("status", flat=True)[0]


def test_a_worker_processes_mail_within_seconds(setup: Setup) -> None:
    _mailbox("record")
    setup.worker.start()
    _send("hello")
    _wait(lambda: _status("hello") == Status.PROCESSED, what="processed")
    message = InboundMessage.objects.get()
    assert (message.attempts, message.claimed_by, message.error) == (1, "", "")
    assert setup.events() == ["done hello"]


def test_a_killed_worker_redelivers_and_the_message_is_processed_once(setup: Setup) -> None:
    _mailbox("slow")
    setup.worker.start()
    _send("killed")
    _wait(lambda: setup.events() == ["start killed"], what="handler started")
    (child,) = setup.worker.children()
    os.kill(child, signal.SIGKILL)  # the pool process dies mid-task
    # acks_late + reject_on_worker_lost: the task goes back to the queue and a new pool
    # process takes it; the dead process's lease is no longer renewed, so after it
    # expires (1 s here) the redelivered task's retry takes over the claim.
    _wait(lambda: setup.events() == ["start killed", "start killed"], what="takeover")
    setup.release()
    _wait(lambda: _status("killed") == Status.PROCESSED, what="processed")
    assert setup.events() == ["start killed", "start killed", "done killed"]
    assert InboundMessage.objects.get().attempts == 2


def test_mail_arriving_while_the_broker_is_down_is_accepted_and_processed_later(
    setup: Setup,
) -> None:
    _mailbox("record")
    setup.broker.stop()
    for n in range(3):
        _send(f"outage {n}")  # every one answered 250 (asserted in _send)
    assert dispatch.drain(30)  # the failed sends are over
    assert set(InboundMessage.objects.values_list("status", flat=True)) == {Status.RECEIVED}
    setup.broker.start()
    setup.worker.start()
    time.sleep(1.1)  # older than REDISPATCH_AFTER
    assert dispatch.sweep() == 3
    _wait(
        lambda: set(InboundMessage.objects.values_list("status", flat=True)) == {Status.PROCESSED},
        what="all processed",
    )
    assert sorted(setup.events()) == ["done outage 0", "done outage 1", "done outage 2"]


def test_a_failing_handler_marks_failed_then_reprocess_succeeds(setup: Setup) -> None:
    _mailbox("fail_until_released")
    setup.worker.start()
    _send("flaky")
    _wait(lambda: _status("flaky") == Status.FAILED, what="failed")
    message = InboundMessage.objects.get()
    assert "RuntimeError: handler not ready" in message.error
    setup.release()
    assert dispatch.reprocess([message.pk]) == 1
    _wait(lambda: _status("flaky") == Status.PROCESSED, what="processed")
    assert setup.events() == ["fail flaky", "done flaky"]


def test_a_duplicate_delivery_is_never_processed_again(setup: Setup) -> None:
    _mailbox("record")
    setup.worker.start()
    _send("twice", message_id="<twice@example.org>")
    _send("twice", message_id="<twice@example.org>")
    _wait(lambda: Status.PROCESSED in InboundMessage.objects.values_list("status", flat=True))
    time.sleep(1)  # a second task, if one had been sent, would have run by now
    statuses = sorted(InboundMessage.objects.values_list("status", flat=True))
    assert statuses == [Status.DUPLICATE, Status.PROCESSED]
    assert setup.events() == ["done twice"]
