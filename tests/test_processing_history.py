"""Tier 4: every processing attempt is kept (time, worker, outcome, tracebacks), written
with the outcome, and shown in the admin in one query."""

from __future__ import annotations

from io import StringIO

import pytest
from django.contrib.auth.models import User
from django.core.management import call_command
from django.db import connection
from django.test import Client
from django.test.utils import CaptureQueriesContext
from django.urls import reverse

from django_inbound_smtp.lifecycle import owners
from django_inbound_smtp.lifecycle import process as processing
from django_inbound_smtp.lifecycle import schedule as dispatch
from django_inbound_smtp.models import InboundMessage, Mailbox, ProcessingAttempt
from django_inbound_smtp.testing import running_server
from tests.helpers import GuardedSMTP, receiver_connected

pytestmark = pytest.mark.django_db(transaction=True)
Status = InboundMessage.Status
RAW = b"From: a@example.org\r\nTo: user@our.test\r\nSubject: flaky\r\n\r\nhello\r\n"


def test_two_failures_then_a_success_leave_three_attempts_with_their_tracebacks() -> None:
    Mailbox.objects.create(address="user@our.test")
    calls: list[int] = []

    def flaky(**kwargs: object) -> None:
        calls.append(1)
        if len(calls) <= 2:
            # Hostile text in a traceback: the admin must show it escaped.
            raise RuntimeError(f"receiver bug #{len(calls)} <script>alert(1)</script>")

    staff = Client()
    staff.force_login(User.objects.create_superuser("boss", "boss@x.test", "pw"))
    changelist = reverse("admin:inbound_smtp_inboundmessage_changelist")
    with receiver_connected(flaky):
        with running_server() as server:  # attempt 1: inline, after the 250
            with GuardedSMTP(server.host, server.port, timeout=30) as client:
                assert client.sendmail("s@example.org", ["user@our.test"], RAW) == {}
        message = InboundMessage.objects.get()
        assert message.status == Status.FAILED
        # Attempt 2: the admin action; attempt 3: the command. Both add a row.
        staff.post(changelist, {"action": "reprocess", "_selected_action": [message.pk]})
        assert dispatch.drain(timeout=30)
        assert InboundMessage.objects.get().status == Status.FAILED
        call_command("inbound_reprocess", "--failed", stdout=StringIO())
        assert dispatch.drain(timeout=30)

    message.refresh_from_db()
    assert (message.status, message.attempts, message.error) == (Status.PROCESSED, 3, "")
    attempts = list(message.processing_attempts.all())  # newest first
    assert [(a.number, a.outcome) for a in attempts] == [
        (3, "processed"),
        (2, "failed"),
        (1, "failed"),
    ]
    assert attempts[0].error == ""
    assert "RuntimeError: receiver bug #2" in attempts[1].error
    assert "RuntimeError: receiver bug #1" in attempts[2].error
    assert "Traceback (most recent call last)" in attempts[2].error
    for attempt in attempts:
        assert attempt.started_at <= attempt.finished_at
        # The claim of an inline processing thread of this process.
        assert attempt.worker.startswith(owners.process_owner() + ":"), attempt.worker
    assert attempts[2].finished_at <= attempts[1].started_at

    detail = reverse("admin:inbound_smtp_inboundmessage_change", args=[message.pk])
    with CaptureQueriesContext(connection) as queries:
        page = staff.get(detail).content.decode()
    history = [q["sql"] for q in queries.captured_queries if "processingattempt" in q["sql"]]
    assert len(history) == 1, history
    assert "receiver bug #1 &lt;script&gt;alert(1)&lt;/script&gt;" in page
    assert "<script>alert(1)" not in page
    # Newest first on the page too.
    assert page.index("receiver bug #2") < page.index("receiver bug #1")


def test_the_batch_writes_its_history_in_one_insert_with_the_outcomes() -> None:
    from django_inbound_smtp import store
    from tests.helpers import received_envelope

    pks = [store.store_message(received_envelope(f"QH{i}"), RAW + b"%d" % i) for i in range(5)]
    with CaptureQueriesContext(connection) as queries:
        outcomes = processing.process_batch(pks, owner="batch-owner")
    assert set(outcomes.values()) == {processing.Outcome.PROCESSED}
    inserts = [q["sql"] for q in queries.captured_queries if q["sql"].startswith("INSERT")]
    assert len(inserts) == 1, inserts
    assert "processingattempt" in inserts[0]
    rows = ProcessingAttempt.objects.filter(message_id__in=pks)
    assert sorted(rows.values_list("message_id", "number", "outcome")) == [
        (pk, 1, "processed") for pk in sorted(pks)
    ]
    assert {row.worker.rsplit(":", 1)[0] for row in rows} == {"batch-owner"}


def test_a_lost_lease_is_an_attempt_too_and_the_outcome_values_match() -> None:
    from django_inbound_smtp import store
    from tests.helpers import received_envelope

    pk = store.store_message(received_envelope("QLOST"), RAW)
    holder: list[str] = []

    def taken_over(message: InboundMessage, **kwargs: object) -> None:
        # Another worker takes the claim while this one runs (its lease expired).
        holder.append(message.claimed_by)
        InboundMessage.objects.filter(pk=message.pk).update(claimed_by="someone-else")

    with receiver_connected(taken_over):
        assert processing.process_message(pk, owner="slow") is processing.Outcome.LOST
    [attempt] = ProcessingAttempt.objects.filter(message_id=pk)
    assert (attempt.number, attempt.outcome, attempt.worker) == (1, "lost", holder[0])
    # The model's outcomes are the processing step's own values.
    assert {choice.value for choice in ProcessingAttempt.Outcome} == {
        outcome.value
        for outcome in (
            processing.Outcome.PROCESSED,
            processing.Outcome.FAILED,
            processing.Outcome.LOST,
        )
    }


def test_a_message_deleted_during_its_batch_costs_no_other_message_its_outcome() -> None:
    # Staff delete one message of a batch while a receiver runs (a real delete, as the
    # admin would do it): its outcome cannot be written, and its history row must not
    # take the other messages' outcomes down with it (they would be processed again).
    from django_inbound_smtp import store
    from tests.helpers import received_envelope

    kept, deleted = (
        store.store_message(received_envelope(f"QDEL{i}"), RAW + b"%d" % i) for i in range(2)
    )
    runs: list[int] = []

    def deleting(message: InboundMessage, **kwargs: object) -> None:
        runs.append(message.pk)
        if message.pk == kept:
            InboundMessage.objects.filter(pk=deleted).delete()

    with receiver_connected(deleting):
        outcomes = processing.process_batch([kept, deleted], owner="batch-owner")
    assert outcomes[kept] is processing.Outcome.PROCESSED
    assert outcomes[deleted] is processing.Outcome.LOST
    message = InboundMessage.objects.get(pk=kept)
    assert (message.status, message.claimed_by) == (Status.PROCESSED, "")
    assert list(ProcessingAttempt.objects.values_list("message_id", "outcome")) == [
        (kept, "processed")
    ]
    assert not InboundMessage.objects.filter(pk=deleted).exists()
