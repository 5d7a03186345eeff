"""Tier 5: ``smtpd --metrics``: Prometheus metrics, ``/healthz`` and ``/readyz``.

Everything real: ``manage.py smtpd`` as a subprocess on the test database, mail over
SMTP on loopback, ``/metrics`` scraped over HTTP and parsed with prometheus-client's
parser; faults made for real (a folder replaced by a file, a database that refuses
connections).
"""

from __future__ import annotations

import os
import pwd
import re
import shutil
import signal
from datetime import timedelta
from pathlib import Path

import pytest
from django.db import connection
from django.utils import timezone

from django_inbound_smtp.models import InboundMessage, Mailbox, SenderCheck
from tests.helpers import GuardedSMTP, subprocess_env
from tests.observe import (
    get,
    get_json,
    metrics_port,
    moved,
    scrape,
    scrape_until,
    value,
    wait_for,
)
from tests.smtpd_process import Smtpd, logged_settings, project_owned_by
from tests.smtpd_process import own_folder as own_folder  # a fixture

pytestmark = [pytest.mark.integration, pytest.mark.slow]

BODY = b"Subject: counted\r\nMessage-ID: <counted@example.org>\r\n\r\nhello\r\n"

# The queue gauges read on every scrape (no cache), no sweeper (a stuck message stays
# stuck), a spool folder of the test's own, and two sender checks that record verdicts
# (DNS at the closed loopback port of the test settings: they never leave the machine).
SETTINGS = """
INBOUND_SMTP = {{
    **INBOUND_SMTP,
    "METRICS_CACHE": 0,
    "SWEEP_INTERVAL": 0,
    "DISPATCH": "inline",
    "SPOOL_DIR": {spool!r},
    "SENDER_CHECKS": {{**INBOUND_SMTP["SENDER_CHECKS"], **{checks!r}}},
}}
"""
# Each costs a DNS timeout (1 s) per transaction: only where verdicts are counted.
VERDICTS = {"IPREV": "tag", "SENDER_DOMAIN": "tag"}


def _start(
    tmp_path: Path, *args: str, checks: dict[str, str] | None = None
) -> tuple[Smtpd, int, Path]:
    spool = tmp_path / "spool"
    extra = SETTINGS.format(spool=str(spool), checks=checks or {})
    env = subprocess_env(**logged_settings(tmp_path, extra))
    server = Smtpd(env, "--metrics", "127.0.0.1:0", *args)
    return server, metrics_port(server), spool


def _one_accepted_one_refused(port: int) -> None:
    with GuardedSMTP("127.0.0.1", port, timeout=30) as client:
        client.ehlo("client.test")
        assert client.mail("a@example.org")[0] == 250
        assert client.rcpt("user@our.test")[0] == 250
        assert client.data(BODY)[0] == 250
    with GuardedSMTP("127.0.0.1", port, timeout=30) as client:
        client.ehlo("client.test")
        assert client.mail("b@example.org")[0] == 250
        assert client.rcpt("nobody@our.test")[0] == 550


def test_metrics_move_by_exactly_what_the_sessions_did(transactional_db, tmp_path) -> None:
    Mailbox.objects.create(address="user@our.test")
    server, port, _spool = _start(tmp_path, checks=VERDICTS)
    try:
        before = scrape(port)
        _one_accepted_one_refused(server.port)
        assert wait_for(lambda: InboundMessage.objects.filter(status="processed").exists())
        # A message stuck for an hour, put there behind the server's back: nothing
        # schedules it (no sweeper), so it waits, as a stuck queue would.
        InboundMessage.objects.create(
            queue_id="STUCK0000000001",
            size=10,
            raw_file="nowhere.eml",
            received_at=timezone.now() - timedelta(hours=1),
        )
        after = scrape_until(
            port,
            lambda s: (
                moved(before, s, "inbound_smtp_processed_total", outcome="processed") >= 1
                and value(s, "inbound_smtp_sessions_current") == 0
            ),
        )
        message = InboundMessage.objects.exclude(queue_id="STUCK0000000001").get()

        assert moved(before, after, "inbound_smtp_sessions_total") == 2
        assert value(after, "inbound_smtp_sessions_current") == 0
        # Per reply, not per line: the multi-line EHLO answer is one 250.
        replies = {"220": 2, "250": 6, "354": 1, "550": 1, "221": 2}
        for code, count in replies.items():
            assert moved(before, after, "inbound_smtp_replies_total", code=code) == count, code
        every_code = {labels for (name, labels) in after if name == "inbound_smtp_replies_total"}
        assert sum(
            after[("inbound_smtp_replies_total", labels)]
            - before.get(("inbound_smtp_replies_total", labels), 0)
            for labels in every_code
        ) == sum(replies.values())

        assert moved(before, after, "inbound_smtp_messages_stored_total") == 1
        assert moved(before, after, "inbound_smtp_stored_bytes_total") == message.size
        assert moved(before, after, "inbound_smtp_store_duration_seconds_count") == 1
        assert moved(before, after, "inbound_smtp_store_duration_seconds_sum") > 0
        assert moved(before, after, "inbound_smtp_processed_total", outcome="processed") == 1
        assert moved(before, after, "inbound_smtp_processed_total", outcome="failed") == 0
        assert moved(before, after, "inbound_smtp_processing_latency_seconds_count") == 1
        assert moved(before, after, "inbound_smtp_processing_batch_duration_seconds_count") == 1

        # Sender checks: both transactions passed MAIL, so each check gave two verdicts;
        # the stored message's verdict is among them.
        stored = SenderCheck.objects.get(message=message)
        for check, result in (
            ("iprev", stored.iprev_result),
            ("sender_domain", stored.sender_domain_result),
        ):
            family = "inbound_smtp_sender_check_verdicts_total"
            results = {dict(labels)["result"] for (name, labels) in after if name == family}
            total = sum(moved(before, after, family, check=check, result=r) for r in results)
            assert total == 2, check
            assert moved(before, after, family, check=check, result=result) >= 1

        # The queue gauges are the database's numbers.
        for status, _label in InboundMessage.Status.choices:
            count = InboundMessage.objects.filter(status=status).count()
            assert value(after, "inbound_smtp_messages", status=status) == count, status
        assert value(after, "inbound_smtp_messages", status="received") == 1
        assert value(after, "inbound_smtp_database_up") == 1
        age = value(after, "inbound_smtp_oldest_unprocessed_age_seconds")
        assert 3600 <= age < 3700
        newest = value(after, "inbound_smtp_last_received_timestamp_seconds")
        assert newest == pytest.approx(message.received_at.timestamp(), abs=0.01)
        assert server.stop() == 0
    finally:
        server.kill()
    assert "Traceback" not in server.text()


def test_health_endpoints_and_a_real_storage_fault(transactional_db, tmp_path) -> None:
    server, port, spool = _start(tmp_path)
    try:
        status, body = get_json(port, "/healthz")
        assert (status, body["status"]) == (200, "ok")

        status, body = get_json(port, "/readyz")
        assert status == 200, body
        assert body["status"] == "ready"
        assert set(body["checks"]) == {"smtp", "database", "storage", "disk_space"}
        assert all(check["ok"] for check in body["checks"].values()), body

        # The spool folder is gone and a file sits where it was: nothing can be received.
        shutil.rmtree(spool, ignore_errors=True)
        spool.write_text("not a folder")
        assert wait_for(lambda: get(port, "/readyz")[0] == 503, timeout=10)
        status, body = get_json(port, "/readyz")
        assert status == 503
        assert body["status"] == "not ready"
        assert body["checks"]["storage"]["ok"] is False
        assert str(spool) in body["checks"]["storage"]["detail"]
        assert body["checks"]["database"]["ok"] is True
        # Liveness is unaffected: the loop answers.
        assert get(port, "/healthz")[0] == 200

        spool.unlink()
        assert wait_for(lambda: get(port, "/readyz")[0] == 200, timeout=10)
        assert get(port, "/nothing")[0] == 404
        assert server.stop() == 0
    finally:
        server.kill()
    assert "Traceback" not in server.text()


def test_readyz_says_503_while_the_database_refuses_connections(transactional_db, tmp_path) -> None:
    if connection.vendor != "postgresql":
        pytest.skip("SQLite is a file, not a server that can refuse connections")
    import psycopg

    params = connection.settings_dict
    name = params["NAME"]
    # From the maintenance database: a database cannot refuse its own session.
    admin = psycopg.connect(
        dbname="postgres",
        host=params["HOST"],
        port=params["PORT"],
        user=params["USER"],
        autocommit=True,
    )
    server, port, _spool = _start(tmp_path)
    try:
        assert get(port, "/readyz")[0] == 200
        # No new connection to the test database from now on (superusers included),
        # and the server's open ones are cut; the test's own is left alone.
        with connection.cursor() as cursor:
            cursor.execute("SELECT pg_backend_pid()")
            (ours,) = cursor.fetchone()
        admin.execute(f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS false')
        try:
            admin.execute(
                "SELECT pg_terminate_backend(pid, 5000) FROM pg_stat_activity "
                "WHERE datname = %s AND pid <> %s",
                (name, ours),
            )
            assert wait_for(lambda: get(port, "/readyz")[0] == 503, timeout=15)
            status, body = get_json(port, "/readyz")
            assert status == 503
            assert body["checks"]["database"]["ok"] is False
            assert body["checks"]["database"]["detail"]
            assert body["checks"]["storage"]["ok"] is True
            assert value(scrape(port), "inbound_smtp_database_up") == 0
        finally:
            admin.execute(f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS true')
        assert wait_for(lambda: get(port, "/readyz")[0] == 200, timeout=15)
        assert value(scrape(port), "inbound_smtp_database_up") == 1
        assert server.stop() == 0
    finally:
        server.kill()
        admin.close()


ACCEPTED = re.compile(r"^accepted ([0-9A-F]+) ")


def test_workers_metrics_are_the_sum_of_every_worker(transactional_db, tmp_path) -> None:
    Mailbox.objects.create(address="user@our.test")
    server, port, _spool = _start(tmp_path, "--workers", "2")
    try:
        assert server.process.pid not in server.pids
        status, body = get_json(port, "/readyz")
        assert status == 200, body
        assert body["checks"]["smtp"]["detail"] == "2 of 2 workers serving"
        before = scrape(port)

        def send(count: int) -> None:
            for n in range(count):  # a connection each: the kernel spreads connections
                with GuardedSMTP("127.0.0.1", server.port, timeout=30) as client:
                    body = f"Subject: {n}\r\n\r\nmessage {n}\r\n".encode()
                    assert client.sendmail("a@example.org", ["user@our.test"], body) == {}

        send(12)
        assert wait_for(lambda: InboundMessage.objects.filter(status="processed").count() == 12)
        after = scrape_until(
            port,
            lambda s: (
                moved(before, s, "inbound_smtp_processed_total", outcome="processed") >= 12
                and value(s, "inbound_smtp_sessions_current") == 0
            ),
        )
        served = {pid for _index, pid, line in server.worker_lines() if ACCEPTED.match(line)}
        assert served == set(server.pids), server.text()  # both workers counted, summed
        assert moved(before, after, "inbound_smtp_sessions_total") == 12
        assert moved(before, after, "inbound_smtp_messages_stored_total") == 12
        assert moved(before, after, "inbound_smtp_store_duration_seconds_count") == 12
        assert moved(before, after, "inbound_smtp_processed_total", outcome="processed") == 12
        assert value(after, "inbound_smtp_messages", status="processed") == 12

        # A worker dies: its counts stay in the totals (they never go down), and the
        # replacement's add to them.
        os.kill(server.pids[0], signal.SIGKILL)
        assert server.wait_for(re.compile(r"worker 1 restarted"), timeout=30), server.text()
        assert wait_for(lambda: get(port, "/readyz")[0] == 200, timeout=15)
        send(2)
        final = scrape_until(
            port,
            lambda s: (
                moved(before, s, "inbound_smtp_messages_stored_total") >= 14
                and value(s, "inbound_smtp_sessions_current") == 0
            ),
        )
        assert moved(before, final, "inbound_smtp_messages_stored_total") == 14
        assert moved(before, final, "inbound_smtp_sessions_total") == 14
        assert value(final, "inbound_smtp_sessions_current") == 0
        assert server.stop() == 0
    finally:
        server.kill()
    assert "Traceback" not in server.text()


@pytest.mark.skipif(os.geteuid() != 0, reason="dropping privileges needs a root test run")
def test_workers_count_after_dropping_privileges(tmp_path, certs, own_folder) -> None:
    """``--user nobody --workers 2 --metrics``: the workers write their metrics as
    ``nobody`` into the folder the root parent made for them, and the parent sums."""
    env = project_owned_by(
        pwd.getpwnam("nobody"),
        own_folder,
        settings_folder=tmp_path,
        certfile=certs.certfile,
        keyfile=certs.keyfile,
        extra='INBOUND_SMTP["METRICS_CACHE"] = 0\n',
    )
    server = Smtpd(env, "--user", "nobody", "--workers", "2", "--metrics", "127.0.0.1:0")
    try:
        port = metrics_port(server)
        before = scrape(port)
        for n in range(4):
            with GuardedSMTP("127.0.0.1", server.port, timeout=30) as client:
                body = f"Subject: {n}\r\n\r\nx\r\n".encode()
                assert client.sendmail("a@example.org", ["user@our.test"], body) == {}
        after = scrape_until(
            port, lambda s: moved(before, s, "inbound_smtp_messages_stored_total") >= 4
        )
        assert moved(before, after, "inbound_smtp_messages_stored_total") == 4
        assert moved(before, after, "inbound_smtp_sessions_total") == 4
        assert (
            value(after, "inbound_smtp_messages", status="received")
            + value(after, "inbound_smtp_messages", status="processed")
            + value(after, "inbound_smtp_messages", status="processing")
            == 4
        )
        assert get(port, "/readyz")[0] == 200
        assert server.stop() == 0
    finally:
        server.kill()
    assert "Traceback" not in server.text()


@pytest.mark.skipif(os.geteuid() != 0, reason="dropping privileges needs a root test run")
def test_readyz_of_the_root_parent_leaves_no_folder_the_workers_cannot_write(
    tmp_path, certs, own_folder
) -> None:
    """With ``--user``, the parent of ``--workers`` stays root and answers /readyz. Asked
    before the first message, its storage probe must not create the message folders
    (they would be root's, and every message after it a 451): nothing it leaves behind
    may be root's."""
    nobody = pwd.getpwnam("nobody")
    media = own_folder / "media"
    env = project_owned_by(
        nobody, own_folder, settings_folder=tmp_path, certfile=certs.certfile, keyfile=certs.keyfile
    )
    server = Smtpd(env, "--user", "nobody", "--workers", "2", "--metrics", "127.0.0.1:0")
    try:
        port = metrics_port(server)
        assert not (media / "inbound_smtp").exists()  # created with the first message
        assert get(port, "/readyz")[0] == 200
        assert {path.stat().st_uid for path in media.rglob("*")} <= {nobody.pw_uid}
        with GuardedSMTP("127.0.0.1", server.port, timeout=30) as client:
            assert (
                client.sendmail("a@example.org", ["user@our.test"], b"Subject: x\r\n\r\nx\r\n")
                == {}
            )
        assert server.stop() == 0
    finally:
        server.kill()
    assert "Traceback" not in server.text()
