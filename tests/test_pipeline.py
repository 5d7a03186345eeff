"""Tier 2: the store → lifecycle corridor. The envelope round trip, batched claims and
outcomes, the dispatchers, and taking over what a dead ``smtpd`` of this host left."""

from __future__ import annotations

import subprocess
import sys
import threading
from collections.abc import Sequence
from datetime import UTC, datetime

import django
import pytest
from django.core.checks import run_checks
from django.db import connection
from django.test import override_settings
from django.test.utils import CaptureQueriesContext

from django_inbound_smtp import store
from django_inbound_smtp.envelope import ReceivedEnvelope, ResolvedRecipient, address_key
from django_inbound_smtp.lifecycle import backends, owners, process, schedule
from django_inbound_smtp.models import InboundMessage, Mailbox
from tests.helpers import received_envelope, receiver_connected

RAW = b"From: a@x.test\r\nTo: user@our.test\r\nSubject: hi\r\n\r\nbody\r\n"


def _stored(queue_id: str, *, queued_by: str = "", **fields: object) -> int:
    return store.store_message(
        received_envelope(queue_id, **fields), RAW + queue_id.encode(), queued_by=queued_by
    )


@pytest.mark.django_db
def test_the_envelope_read_back_is_the_one_accepted() -> None:
    mailbox = Mailbox.objects.create(address="user@our.test")
    accepted = ReceivedEnvelope(
        queue_id="QROUND",
        mail_from="bounce+x@sender.test",
        recipients=(
            ResolvedRecipient(address="User+Tag@our.test", mailbox_id=mailbox.pk, tag="Tag"),
            ResolvedRecipient(address="postmaster"),
            ResolvedRecipient(address="user@our.test", mailbox_id=mailbox.pk),
        ),
        peer_host="2001:db8::1",
        peer_port=40000,
        helo="client.test",
        tls=True,
        esmtp=False,
        received_at=datetime(2026, 12, 6, 10, 0, 0, tzinfo=UTC),
        mail_options=("BODY=8BITMIME", "SMTPUTF8"),
        tls_version="TLSv1.3",
        tls_cipher="TLS_AES_256_GCM_SHA384",
        auth_user="someone",
        bare_newlines=True,
    )
    pk = store.store_message(accepted, RAW)
    message = InboundMessage.objects.get(pk=pk)
    seen: list[ReceivedEnvelope] = []

    def receiver(envelope: ReceivedEnvelope, **kwargs: object) -> None:
        seen.append(envelope)

    with receiver_connected(receiver):
        assert process.process_message(pk, owner="t") is process.Outcome.PROCESSED
    # Field by field, nothing rebuilt by guesswork (esmtp, mail_options, order, flags).
    assert seen == [accepted]
    assert message.mail_options == ["BODY=8BITMIME", "SMTPUTF8"]


def test_one_function_decides_address_equality() -> None:
    assert address_key(" User@Example.ORG ") == address_key("user@example.org")
    assert address_key("cafe\u0301@x.test") == address_key("caf\u00e9@x.test")  # NFC
    assert address_key("\uff55ser@x.test") != address_key("user@x.test")  # no NFKC


@pytest.mark.django_db(transaction=True)
def test_a_batch_is_claimed_parsed_and_recorded_in_a_few_statements() -> None:
    pks = [_stored(f"QB{i}") for i in range(20)]
    with CaptureQueriesContext(connection) as queries:
        outcomes = process.process_batch(pks, owner="batch")
    assert set(outcomes.values()) == {process.Outcome.PROCESSED}
    # Twenty messages: one claim UPDATE and one SELECT (plus one for all their
    # recipients), one parse-result UPDATE a message in one transaction (a plain UPDATE
    # costs less CPU to build than bulk_update's CASE per field, measured), one outcome
    # UPDATE. Not five statements and three commits a message, as before.
    sql = [q["sql"] for q in queries.captured_queries]
    claims = [q for q in sql if q.startswith("UPDATE") and "'processing'" in q.split("WHERE")[0]]
    outcomes_written = [q for q in sql if q.startswith("UPDATE") and "'processed'" in q]
    parse_writes = [q for q in sql if q.startswith("UPDATE") and '"parsed_at" =' in q]
    assert (len(claims), len(parse_writes), len(outcomes_written)) == (1, 20, 1)
    selects = [q for q in sql if q.startswith("SELECT")]
    assert len(selects) <= 2, selects  # the claimed rows, their recipients
    assert set(InboundMessage.objects.values_list("status", flat=True)) == {"processed"}
    assert all(m.parsed_at is not None for m in InboundMessage.objects.all())


@pytest.mark.django_db(transaction=True)
def test_a_batch_reports_busy_and_skipped_messages_apart() -> None:
    busy, done, fresh = (_stored(f"QS{i}") for i in range(3))
    assert process.claim(busy, owner="other-worker")
    assert process.process_message(done, owner="w") is process.Outcome.PROCESSED
    outcomes = process.process_batch([busy, done, fresh], owner="w")
    assert outcomes == {
        busy: process.Outcome.BUSY,
        done: process.Outcome.SKIPPED,
        fresh: process.Outcome.PROCESSED,
    }


@pytest.mark.django_db(transaction=True)
def test_the_inline_dispatcher_processes_in_batches_of_the_queue() -> None:
    pks = [_stored(f"QI{i}") for i in range(40)]
    with override_settings(INBOUND_SMTP={"DISPATCH": "inline"}):
        schedule.schedule(pks)
        assert schedule.drain(30)
    assert set(InboundMessage.objects.values_list("status", flat=True)) == {"processed"}


@pytest.mark.django_db(transaction=True)
def test_a_dotted_path_names_a_dispatcher_of_your_own() -> None:
    pk = _stored("QDOT")
    with override_settings(INBOUND_SMTP={"DISPATCH": "tests.test_pipeline.ListDispatcher"}):
        assert not [e for e in run_checks() if str(e.id).startswith("inbound_smtp.")]
        schedule.schedule([pk])
        assert ListDispatcher.seen == [pk]
    with override_settings(INBOUND_SMTP={"DISPATCH": "tests.test_pipeline.RAW"}):
        assert "inbound_smtp.E026" in {e.id for e in run_checks()}


class ListDispatcher(backends.Dispatcher):
    seen: list[int] = []

    def enqueue(self, pks: Sequence[int]) -> None:
        ListDispatcher.seen.extend(pks)


@pytest.mark.django_db(transaction=True)
@pytest.mark.skipif(django.VERSION < (6, 0), reason="django.tasks is Django 6.0+")
def test_django_tasks_process_a_batch_with_the_project_s_task_backend() -> None:
    pks = [_stored(f"QT{i}") for i in range(3)]
    tasks = {"default": {"BACKEND": "django.tasks.backends.immediate.ImmediateBackend"}}
    with override_settings(INBOUND_SMTP={"DISPATCH": "tasks"}, TASKS=tasks):
        assert not [e for e in run_checks() if str(e.id).startswith("inbound_smtp.")]
        schedule.schedule(pks)
        assert schedule.drain(30)
    assert set(InboundMessage.objects.values_list("status", flat=True)) == {"processed"}


@pytest.mark.skipif(django.VERSION >= (6, 0), reason="Django 6 has django.tasks")
def test_django_tasks_on_django_5_is_a_check_error() -> None:
    with override_settings(INBOUND_SMTP={"DISPATCH": "tasks"}):
        assert "inbound_smtp.E025" in {e.id for e in run_checks()}


def _dead_process_owner() -> str:
    # A real process of this host that has exited: its (pid, start time) names no one.
    child = subprocess.run(
        [
            sys.executable,
            "-c",
            "from django_inbound_smtp.lifecycle import owners; print(owners.process_owner())",
        ],
        capture_output=True,
        text=True,
        check=True,
    )
    return child.stdout.strip()


@pytest.mark.django_db(transaction=True)
def test_what_a_dead_smtpd_of_this_host_held_is_taken_over_at_once() -> None:
    dead = _dead_process_owner()
    assert owners.is_dead_local(dead)
    assert not owners.is_dead_local(owners.process_owner())  # this process is alive
    queued = _stored("QDEADQ", queued_by=dead)
    half_done = _stored("QDEADP")
    assert process.claim(half_done, owner=f"{dead}:1234:abcdef")
    # Another host's process is never presumed dead, however its pid looks here.
    elsewhere = _stored("QELSE", queued_by=dead.replace(owners.local_prefix(), "inline:far-away:"))
    mine = _stored("QMINE", queued_by=owners.process_owner())
    with schedule.recording() as recorder:
        assert schedule.sweep() == 2
    assert sorted(recorder.scheduled) == sorted([queued, half_done])
    statuses = dict(InboundMessage.objects.values_list("pk", "status"))
    assert statuses[half_done] == "received"  # released for a new claim
    assert statuses[elsewhere] == statuses[mine] == "received"
    assert InboundMessage.objects.get(pk=elsewhere).claimed_by.startswith("inline:far-away:")


def _connections_opened(units: int) -> int:
    # Units of work in a thread of their own (a fresh connection), as smtpd's ORM thread.
    from django.db.backends.signals import connection_created

    from django_inbound_smtp._db import close_thread_connections, unit_of_work

    opened: list[object] = []

    def count(sender: object, connection: object, **kwargs: object) -> None:
        opened.append(connection)

    def work() -> None:
        try:
            for _ in range(units):
                with unit_of_work():
                    Mailbox.objects.exists()
        finally:
            close_thread_connections()

    connection_created.connect(count)
    try:
        thread = threading.Thread(target=work)
        thread.start()
        thread.join(30)
    finally:
        connection_created.disconnect(count)
    return len(opened)


@pytest.mark.django_db(transaction=True)
def test_smtpd_keeps_its_database_connection_whatever_conn_max_age(monkeypatch) -> None:
    from django.db import connections

    from django_inbound_smtp import _db

    monkeypatch.setitem(connections.settings["default"], "CONN_MAX_AGE", 0)  # Django's default
    monkeypatch.setattr(_db, "_persistent", False)
    assert _connections_opened(3) == 3  # a request-style app: a connection per unit
    _db.keep_connections_open()  # what manage.py smtpd does
    assert _connections_opened(3) == 1


THREADS_SEEN: list[str] = []


def thread_recording_validator(address: str, *, context: object) -> ResolvedRecipient:
    THREADS_SEEN.append(threading.current_thread().name)
    return ResolvedRecipient(address=address)


@pytest.mark.django_db(transaction=True)
@override_settings(
    INBOUND_SMTP={
        "HOSTNAME": "mx.test",
        "DATABASE_THREADS": 3,
        "RECIPIENT_VALIDATORS": ["tests.test_pipeline.thread_recording_validator"],
    }
)
def test_database_work_runs_on_its_threads_which_stop_with_the_server() -> None:
    import smtplib

    from django_inbound_smtp.testing import running_server

    THREADS_SEEN.clear()
    with running_server() as server:
        for i in range(6):
            with smtplib.SMTP(server.host, server.port, timeout=10) as client:
                client.sendmail("a@x.test", [f"r{i}@any.test"], RAW)
    assert InboundMessage.objects.count() == 6
    assert THREADS_SEEN
    assert all(name.startswith("inbound-smtp-db") for name in THREADS_SEEN)
    # Stopped with the server, their connections closed (no thread is left to leak one).
    assert not [t for t in threading.enumerate() if t.name.startswith("inbound-smtp-db")]


def test_database_threads_default_to_one_on_sqlite_and_four_elsewhere() -> None:
    from django_inbound_smtp import _db

    expected = 1 if connection.vendor == "sqlite" else 4
    assert _db.database_threads() == expected
    with override_settings(INBOUND_SMTP={"DATABASE_THREADS": 2}):
        assert _db.database_threads() == 2
    with override_settings(INBOUND_SMTP={"DATABASE_THREADS": 0}):
        assert "inbound_smtp.E027" in {e.id for e in run_checks()}
