"""Several hosts: two ``smtpd`` on one PostgreSQL, storing to S3, processed by Celery.

Everything real: two ``manage.py smtpd`` subprocesses (own hostnames, own spool
folders), S3 through django-storages against moto's standalone S3 server on loopback,
two ``celery worker`` processes on a ``redis-server`` broker, one PostgreSQL database.
On SQLite the test does not run: several hosts share one PostgreSQL (a SQLite file
belongs to one machine).
"""

from __future__ import annotations

import re
import socket
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import boto3
import pytest
from django.db import connection

from django_inbound_smtp.models import InboundMessage, Mailbox
from tests.celery_processes import RedisServer, Worker, wait
from tests.helpers import GuardedSMTP, subprocess_env
from tests.smtpd_process import ROOT, Smtpd, gone

pytestmark = [pytest.mark.integration, pytest.mark.slow]
Status = InboundMessage.Status
BUCKET = "inbound-mail"
CREDENTIALS = {"aws_access_key_id": "test", "aws_secret_access_key": "test"}

# Each host's settings: the test settings, raw messages on S3, its own spool folder,
# Celery dispatch, and a sweeper that re-dispatches after one second.
_HOST_SETTINGS = """\
import os

from tests.settings import *  # noqa: F403

STORAGES = {**STORAGES, "inbound": {  # noqa: F405
    "BACKEND": "storages.backends.s3.S3Storage",
    "OPTIONS": {
        "bucket_name": BUCKET,
        "endpoint_url": os.environ["INBOUND_TEST_S3_URL"],
        "access_key": "test",
        "secret_key": "test",
        "region_name": "us-east-1",
        "file_overwrite": False,
    },
}}
INBOUND_SMTP = {
    **INBOUND_SMTP,  # noqa: F405
    "STORAGE": "inbound",
    "SPOOL_DIR": os.environ.get("INBOUND_TEST_SPOOL_DIR"),
    "DISPATCH": "celery",
    "CELERY_APP": "tests.celery_app.app",
    "REDISPATCH_AFTER": 1,
    "SWEEP_INTERVAL": 1,
}
""".replace("BUCKET", repr(BUCKET))


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


class S3Server:
    """moto's standalone S3 server on 127.0.0.1:<port>, with our bucket."""

    def __init__(self) -> None:
        self.port = _free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.process = subprocess.Popen(
            [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(self.port)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        self.client = boto3.client(
            "s3", endpoint_url=self.url, region_name="us-east-1", **CREDENTIALS
        )
        wait(self._answers, seconds=30, what="moto S3 server")
        self.client.create_bucket(Bucket=BUCKET)

    def _answers(self) -> bool:
        try:
            socket.create_connection(("127.0.0.1", self.port), timeout=1).close()
        except OSError:
            return False
        return True

    def read(self, key: str) -> bytes:
        body = self.client.get_object(Bucket=BUCKET, Key=key)["Body"]
        return bytes(body.read())

    def keys(self) -> list[str]:
        pages = self.client.get_paginator("list_objects_v2").paginate(Bucket=BUCKET)
        return [item["Key"] for page in pages for item in page.get("Contents", [])]

    def stop(self) -> None:
        self.process.terminate()
        self.process.wait(15)


@dataclass
class Hosts:
    """What the hosts share, started once for this module: S3, the broker, two Celery
    workers; each test starts its own ``smtpd`` hosts."""

    folder: Path
    s3: S3Server
    broker: RedisServer
    workers: list[Worker] = field(default_factory=list)
    servers: dict[str, Smtpd] = field(default_factory=dict)

    @property
    def log(self) -> Path:
        return self.folder / "handled.log"

    def env(self, **extra: str) -> dict[str, str]:
        return subprocess_env(
            DJANGO_SETTINGS_MODULE="host_settings",
            PYTHONPATH=f"{ROOT}:{self.folder}",
            INBOUND_TEST_S3_URL=self.s3.url,
            INBOUND_TEST_HANDLER_LOG=str(self.log),
            # A killed worker's claim expires within the test.
            INBOUND_TEST_LEASE="2",
            **extra,
        )

    def start_smtpd(self, name: str, *, broker_url: str) -> Smtpd:
        spool = self.folder / f"spool-{name}"
        spool.mkdir(exist_ok=True)
        env = self.env(INBOUND_TEST_BROKER_URL=broker_url, INBOUND_TEST_SPOOL_DIR=str(spool))
        server = Smtpd(env, "--hostname", f"{name}.test")
        self.servers[name] = server
        return server

    def handled(self) -> Counter[str]:
        """How many times the handler finished, by queue id."""
        lines = self.log.read_text().splitlines() if self.log.exists() else []
        return Counter(line.split()[1] for line in lines if line.startswith("done "))

    def reset(self) -> None:
        for server in self.servers.values():
            server.kill()
        self.servers.clear()
        self.log.unlink(missing_ok=True)
        for key in self.s3.keys():
            self.s3.client.delete_object(Bucket=BUCKET, Key=key)


@pytest.fixture(scope="module")
def shared(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Hosts]:
    if connection.vendor != "postgresql":
        pytest.skip("several hosts share one PostgreSQL database (run make test-postgres)")
    folder = tmp_path_factory.mktemp("hosts")
    (folder / "host_settings.py").write_text(_HOST_SETTINGS)
    s3 = S3Server()
    broker = RedisServer(folder)
    broker.start()
    current = Hosts(folder=folder, s3=s3, broker=broker)
    try:
        current.workers = [
            Worker(current.env(INBOUND_TEST_BROKER_URL=broker.url), name=f"hosts-{index}")
            for index in range(2)
        ]
        for worker in current.workers:
            worker.launch()
        for worker in current.workers:
            worker.wait_ready()
        yield current
    finally:
        current.reset()
        for worker in current.workers:
            worker.terminate()
        for worker in current.workers:
            worker.stop()
        broker.stop()
        s3.stop()


@pytest.fixture
def hosts(shared: Hosts, transactional_db: None) -> Iterator[Hosts]:
    try:
        yield shared
    finally:
        shared.reset()


def _sent_bytes(subject: str, message_id: str) -> bytes:
    return (
        f"From: a@example.org\r\nSubject: {subject}\r\nMessage-ID: <{message_id}>\r\n\r\n"
        f"body of {subject}\r\n"
    ).encode()


def _deliver(port: int, content: bytes) -> None:
    with GuardedSMTP("127.0.0.1", port, local_hostname="client.test", timeout=30) as client:
        assert client.sendmail("a@example.org", ["user@our.test"], content) == {}


def _all_processed(subjects: set[str]) -> bool:
    done = InboundMessage.objects.filter(subject__in=subjects, status=Status.PROCESSED)
    return done.count() == len(subjects)


def test_the_same_message_sent_to_both_hosts_is_stored_once(hosts: Hosts) -> None:
    Mailbox.objects.create(address="user@our.test", handler="tests.celery_handlers.record_host")
    first = hosts.start_smtpd("mx1", broker_url=hosts.broker.url)
    second = hosts.start_smtpd("mx2", broker_url=hosts.broker.url)
    content = _sent_bytes("twice", "twice@example.org")
    _deliver(first.port, content)
    _deliver(second.port, content)

    wait(lambda: _all_processed({"twice"}), seconds=30, what="processing")
    original = InboundMessage.objects.get(status=Status.PROCESSED)
    copy = InboundMessage.objects.get(status=Status.DUPLICATE)
    assert copy.duplicate_of_id == original.pk
    assert copy.raw_file == original.raw_file  # one object in the bucket, shared
    assert hosts.s3.keys() == [original.raw_file]
    stored = hosts.s3.read(original.raw_file)
    assert stored.endswith(content)
    assert re.search(rb"by mx[12]\.test", stored)
    wait(lambda: hosts.handled() == Counter({original.queue_id: 1}), what="the handler log")
    time.sleep(1.5)  # a sweep later, still once: the duplicate is never processed
    assert hosts.handled() == Counter({original.queue_id: 1})


def test_a_host_killed_mid_load_loses_nothing_and_the_survivor_finishes_its_work(
    hosts: Hosts,
) -> None:
    """Host mx1 hands nothing to Celery (its broker address is a closed port): every
    message it stores waits for a sweeper. It is SIGKILLed mid-load. Every message
    either host acknowledged is in the bucket byte for byte and processed exactly once,
    mx1's by the sweeper of mx2; re-dispatches every second race the queued tasks, and
    the claims keep each handler call single across hosts and workers."""
    Mailbox.objects.create(address="user@our.test", handler="tests.celery_handlers.record_host")
    doomed = hosts.start_smtpd("mx1", broker_url=f"redis://127.0.0.1:{_free_port()}/0")
    survivor = hosts.start_smtpd("mx2", broker_url=hosts.broker.url)
    acked: dict[str, bytes] = {}
    lock = threading.Lock()
    killed = threading.Event()

    def send(port: int, prefix: str, count: int) -> None:
        for n in range(count):
            subject = f"{prefix}-{n}"
            content = _sent_bytes(subject, f"{subject}@example.org")
            try:
                _deliver(port, content)
            except (OSError, AssertionError):
                assert killed.is_set(), f"{subject} failed before the kill"
                return
            with lock:
                acked[subject] = content

    clients = [
        threading.Thread(target=send, args=(server.port, f"{name}-{lane}", 20))
        for name, server in (("mx1", doomed), ("mx2", survivor))
        for lane in range(2)
    ]
    for client in clients:
        client.start()
    wait(lambda: sum(s.startswith("mx1") for s in list(acked)) >= 10, what="mx1's first 10")
    killed.set()
    doomed.kill()
    assert gone(doomed.process.pid)
    for client in clients:
        client.join(60)
    from_doomed = {s for s in acked if s.startswith("mx1")}
    assert 10 <= len(from_doomed) < 40  # killed mid-load, after its tenth 250
    assert len(acked) - len(from_doomed) == 40  # the survivor took all of its own

    wait(lambda: _all_processed(set(acked)), seconds=60, what="every acked message processed")
    rows = {row.subject: row for row in InboundMessage.objects.filter(subject__in=set(acked))}
    assert set(rows) == set(acked)
    for subject, content in acked.items():
        stored = hosts.s3.read(rows[subject].raw_file)
        assert stored.endswith(content), subject
    handled = hosts.handled()
    processed_ids = set(
        InboundMessage.objects.filter(status=Status.PROCESSED).values_list("queue_id", flat=True)
    )
    # mx1 could send no task: its messages reached a worker through mx2's sweeper.
    assert set(handled) == processed_ids
    assert max(handled.values()) == 1, handled.most_common(3)
    assert not InboundMessage.objects.filter(
        status__in=[Status.RECEIVED, Status.PROCESSING]
    ).exists()
