"""Celery dispatch against a real Redis broker and a real worker process (no eager mode).

Each test starts its own ``redis-server`` on a free loopback port (so it can stop it)
and a ``celery worker`` subprocess on the test database. The mailbox handlers in
``tests/celery_handlers.py`` run in the worker and log to a file the test reads.
"""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from celery import Celery
from django.test import override_settings

from django_inbound_smtp.lifecycle import schedule as dispatch
from django_inbound_smtp.models import InboundMessage, Mailbox
from django_inbound_smtp.testing import running_server
from tests import celery_app
from tests.celery_processes import RedisServer, Worker, wait
from tests.helpers import GuardedSMTP, subprocess_env

pytestmark = [
    pytest.mark.integration,
    pytest.mark.slow,
    pytest.mark.django_db(transaction=True),
    pytest.mark.skipif(not Path("/usr/bin/redis-server").exists(), reason="needs redis-server"),
]
Status = InboundMessage.Status


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
    wait(lambda: _status("hello") == Status.PROCESSED, what="processed")
    message = InboundMessage.objects.get()
    assert (message.attempts, message.claimed_by, message.error) == (1, "", "")
    assert setup.events() == ["done hello"]


def test_a_killed_worker_redelivers_and_the_message_is_processed_once(setup: Setup) -> None:
    _mailbox("slow")
    setup.worker.start()
    _send("killed")
    wait(lambda: setup.events() == ["start killed"], what="handler started")
    (child,) = setup.worker.children()
    os.kill(child, signal.SIGKILL)  # the pool process dies mid-task
    # acks_late + reject_on_worker_lost: the task goes back to the queue and a new pool
    # process takes it; the dead process's lease is no longer renewed, so after it
    # expires (1 s here) the redelivered task's retry takes over the claim.
    wait(lambda: setup.events() == ["start killed", "start killed"], what="takeover")
    setup.release()
    wait(lambda: _status("killed") == Status.PROCESSED, what="processed")
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
    wait(
        lambda: set(InboundMessage.objects.values_list("status", flat=True)) == {Status.PROCESSED},
        what="all processed",
    )
    assert sorted(setup.events()) == ["done outage 0", "done outage 1", "done outage 2"]


def test_a_failing_handler_marks_failed_then_reprocess_succeeds(setup: Setup) -> None:
    _mailbox("fail_until_released")
    setup.worker.start()
    _send("flaky")
    wait(lambda: _status("flaky") == Status.FAILED, what="failed")
    message = InboundMessage.objects.get()
    assert "RuntimeError: handler not ready" in message.error
    setup.release()
    assert dispatch.reprocess([message.pk]) == 1
    wait(lambda: _status("flaky") == Status.PROCESSED, what="processed")
    assert setup.events() == ["fail flaky", "done flaky"]


def test_the_processing_history_names_the_celery_worker_of_each_attempt(setup: Setup) -> None:
    _mailbox("fail_until_released")
    setup.worker.start()
    _send("history")
    wait(lambda: _status("history") == Status.FAILED, what="failed")
    setup.release()
    message = InboundMessage.objects.get()
    assert dispatch.reprocess([message.pk]) == 1
    wait(lambda: _status("history") == Status.PROCESSED, what="processed")
    attempts = list(message.processing_attempts.all())
    assert [(a.number, a.outcome) for a in attempts] == [(2, "processed"), (1, "failed")]
    assert "RuntimeError: handler not ready" in attempts[1].error
    # celery:<the worker's node name>:<task id>:<execution>, one task per attempt.
    worker = f"celery:{setup.worker.name}@localhost:"
    assert all(a.worker.startswith(worker) for a in attempts), [a.worker for a in attempts]
    assert attempts[0].worker.split(":")[2] != attempts[1].worker.split(":")[2]


def test_a_duplicate_delivery_is_never_processed_again(setup: Setup) -> None:
    _mailbox("record")
    setup.worker.start()
    _send("twice", message_id="<twice@example.org>")
    _send("twice", message_id="<twice@example.org>")
    wait(lambda: Status.PROCESSED in InboundMessage.objects.values_list("status", flat=True))
    time.sleep(1)  # a second task, if one had been sent, would have run by now
    statuses = sorted(InboundMessage.objects.values_list("status", flat=True))
    assert statuses == [Status.DUPLICATE, Status.PROCESSED]
    assert setup.events() == ["done twice"]
