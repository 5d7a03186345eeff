"""Tier 5: what a killed ``smtpd`` left queued or half-processed is processed by the
restarted one within 10 seconds, with the default lease and sweep settings.

A real ``manage.py smtpd`` subprocess stores messages whose mailbox handler blocks
(``tests.celery_handlers.slow``, run inline), so some are claimed (``processing``)
and the rest wait in its queue (``received``) when it is SIGKILLed. Both kinds name
the dead process as their holder. Without the takeover of dead local holders, the
claims would wait for their 60-second lease and the queued ones for
``REDISPATCH_AFTER`` (300 s).
"""

from __future__ import annotations

import smtplib
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from django_inbound_smtp.conf import get_settings
from django_inbound_smtp.models import InboundMessage, Mailbox
from tests.helpers import subprocess_env
from tests.smtpd_process import Smtpd, logged_settings

MESSAGES = 12
TAKEOVER_BOUND = 10.0


def _statuses() -> dict[str, int]:
    counts: dict[str, int] = {}
    for status in InboundMessage.objects.values_list("status", flat=True):
        counts[status] = counts.get(status, 0) + 1
    return counts


def _wait(condition: Callable[[], bool], timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.05)
    return False


@pytest.mark.slow
def test_a_restarted_smtpd_processes_what_the_killed_one_left(
    transactional_db, tmp_path: Path
) -> None:
    settings = get_settings()
    assert settings.PROCESSING_LEASE >= 60  # the default: the lease alone would be too slow
    assert settings.REDISPATCH_AFTER >= 300
    log = tmp_path / "handlers.log"
    Mailbox.objects.create(address="*@our.test", handler="tests.celery_handlers.slow")
    env = subprocess_env(INBOUND_TEST_HANDLER_LOG=str(log), **logged_settings(tmp_path))

    server = Smtpd(env)
    try:
        with smtplib.SMTP("127.0.0.1", server.port, timeout=10) as client:
            for index in range(MESSAGES):
                message = f"Subject: m{index}\r\n\r\nbody {index}\r\n"
                assert client.sendmail("a@x.test", [f"user{index}@our.test"], message) == {}
        # Every message stored; processing has begun (a handler is blocked in it).
        assert _wait(lambda: log.exists() and "start" in log.read_text(), 10), server.text()
        assert _statuses().get("processing", 0) >= 1
    finally:
        server.kill()  # SIGKILL: no handler, no cleanup, claims and queue left behind
    left = _statuses()
    assert left.get("processed", 0) < MESSAGES, left
    holders = set(
        InboundMessage.objects.exclude(status="processed").values_list("claimed_by", flat=True)
    )
    assert all(h.startswith("inline:") and f":{server.process.pid}:" in h for h in holders), holders

    Path(f"{log}.release").touch()  # the restarted server's handlers finish at once
    restarted_at = time.monotonic()
    server = Smtpd(env)
    try:
        done = _wait(lambda: _statuses() == {"processed": MESSAGES}, TAKEOVER_BOUND)
        took = time.monotonic() - restarted_at
        assert done, (took, _statuses(), server.text())
    finally:
        assert server.stop() == 0
    # Each message was processed to the end once by the new server; the ones the dead
    # server had claimed count a second attempt.
    attempts = sorted(InboundMessage.objects.values_list("attempts", flat=True))
    assert set(attempts) <= {1, 2}
    assert 2 in attempts
    assert log.read_text().count("done ") == MESSAGES
