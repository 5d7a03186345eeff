"""Tier 5: the Celery task ``django_inbound_smtp.tasks.prune`` run by a real worker
(a real ``redis-server`` broker), as Celery beat would send it."""

from __future__ import annotations

import time
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest
from celery import Celery
from django.core.files.storage import storages
from django.utils import timezone

from django_inbound_smtp.models import InboundMessage, Mailbox
from django_inbound_smtp.testing import deliver
from tests.celery_processes import RedisServer, Worker
from tests.helpers import subprocess_env
from tests.smtpd_process import logged_settings

pytestmark = [
    pytest.mark.integration,
    pytest.mark.slow,
    pytest.mark.django_db(transaction=True),
    pytest.mark.skipif(not Path("/usr/bin/redis-server").exists(), reason="needs redis-server"),
]

# The worker's settings: the test settings with a retention of 30 days for processed mail.
_RETENTION = 'INBOUND_SMTP = {**INBOUND_SMTP, "RETENTION": {"processed": 30}}\n'


@pytest.fixture
def broker(tmp_path: Path) -> Iterator[RedisServer]:
    server = RedisServer(tmp_path)
    server.start()
    try:
        yield server
    finally:
        server.stop()


def test_a_worker_runs_the_prune_task(broker: RedisServer, tmp_path: Path) -> None:
    Mailbox.objects.create(address="user@our.test")
    old = deliver(b"Subject: old\r\n\r\nx\r\n", to=["user@our.test"])
    new = deliver(b"Subject: new\r\n\r\nx\r\n", to=["user@our.test"])
    InboundMessage.objects.filter(pk=old.pk).update(
        processed_at=timezone.now() - timedelta(days=31)
    )
    worker = Worker(
        subprocess_env(INBOUND_TEST_BROKER_URL=broker.url, **logged_settings(tmp_path, _RETENTION))
    )
    storage = storages["default"]
    assert storage.exists(old.raw_file)
    sender = Celery("inbound-test-prune", broker=broker.url, set_as_current=False)
    try:
        worker.start()
        sender.send_task("django_inbound_smtp.tasks.prune")
        deadline = time.monotonic() + 30
        # The row goes at the commit, the file just after it.
        while InboundMessage.objects.filter(pk=old.pk).exists() or storage.exists(old.raw_file):
            assert time.monotonic() < deadline, "".join(worker.output)
            time.sleep(0.1)
    finally:
        worker.stop()
        sender.close()
    assert list(InboundMessage.objects.values_list("pk", flat=True)) == [new.pk]
    assert storage.exists(new.raw_file)
    assert any("django_inbound_smtp.tasks.prune" in line for line in worker.output)
