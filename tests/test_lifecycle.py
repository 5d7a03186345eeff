"""Tier 2/4: the processing lifecycle in inline mode, the sweeper, reprocessing, the
mailbox handlers and the public test kit."""

from __future__ import annotations

import email.message
import threading
import time
from datetime import timedelta
from io import StringIO

import pytest
from django.core import mail as django_mail
from django.core.management import CommandError, call_command
from django.test import override_settings
from django.utils import timezone

from django_inbound_smtp.exceptions import Rejected
from django_inbound_smtp.lifecycle import process as processing
from django_inbound_smtp.lifecycle import schedule as dispatch
from django_inbound_smtp.lifecycle.process import Outcome
from django_inbound_smtp.models import InboundMessage, InboundRecipient, Mailbox
from django_inbound_smtp.signals import message_received
from django_inbound_smtp.testing import adeliver, captured_messages, captured_tasks, deliver
from tests.helpers import GuardedSMTP, receiver_connected

Status = InboundMessage.Status
RAW = b"From: a@example.org\r\nTo: user@our.test\r\nSubject: kit\r\n\r\nhello\r\n"

# Records of the module-level handlers below (mailbox handlers are dotted paths).
HANDLED: list[tuple[str, str, list[str]]] = []


def record_handler(
    *, message: InboundMessage, mailbox: Mailbox, recipients: list[InboundRecipient]
) -> None:
    HANDLED.append((message.subject, mailbox.address, [r.address for r in recipients]))


def broken_handler(**kwargs: object) -> None:
    raise ValueError("handler bug")


@pytest.fixture
def mailbox(db) -> Mailbox:
    return Mailbox.objects.create(address="user@our.test")


# The test kit works inside an ordinary (rolled back) test transaction.
def test_kit_delivers_through_validators_storage_and_processing(mailbox) -> None:
    with captured_messages() as captured:
        message = deliver(RAW)
    assert message.status == Status.PROCESSED
    assert message.raw_bytes.endswith(RAW)
    assert message.raw_bytes.startswith(b"Received: from client.example.org")
    assert [r.address for r in message.recipients.all()] == ["user@our.test"]
    assert [c.message.pk for c in captured] == [message.pk]
    assert captured[0].kwargs["mailboxes"] == [mailbox]
    assert captured[0].kwargs["envelope"].mail_from == "sender@example.org"


def test_kit_takes_email_objects_and_reads_bcc(mailbox) -> None:
    Mailbox.objects.create(address="hidden@our.test")
    stdlib = email.message.EmailMessage()
    stdlib["Subject"] = "stdlib"
    stdlib["To"] = "user@our.test"
    stdlib["Bcc"] = "hidden@our.test"
    stdlib.set_content("body")
    message = deliver(stdlib)
    assert sorted(r.address for r in message.recipients.all()) == [
        "hidden@our.test",
        "user@our.test",
    ]
    django_message = django_mail.EmailMessage("django", "body", "a@example.org", ["user@our.test"])
    assert deliver(django_message).subject == "django"


def test_kit_refuses_what_the_server_would_refuse(mailbox) -> None:
    with pytest.raises(Rejected) as rejected:
        deliver(RAW, to=["nobody@our.test"])
    assert rejected.value.reply.status == "5.1.1"
    assert not InboundMessage.objects.exists()


def test_kit_can_store_without_processing(mailbox) -> None:
    message = deliver(RAW, process=False)
    assert message.status == Status.RECEIVED
    assert processing.process_message(message.pk, owner="me") is Outcome.PROCESSED


@pytest.mark.django_db(transaction=True)
async def test_async_kit() -> None:
    from asgiref.sync import sync_to_async

    await sync_to_async(Mailbox.objects.create)(address="user@our.test")
    message = await adeliver(RAW)
    assert message.status == Status.PROCESSED


def test_receiver_failure_is_recorded_then_reprocessing_fixes_it(mailbox) -> None:
    def broken(**kwargs: object) -> None:
        raise RuntimeError("receiver bug")

    with receiver_connected(broken):
        message = deliver(RAW)
    message.refresh_from_db()
    assert message.status == Status.FAILED
    assert "RuntimeError: receiver bug" in message.error
    assert message.attempts == 1
    with dispatch.recording() as recorder:
        out = StringIO()
        call_command("inbound_reprocess", "--failed", stdout=out)
    assert out.getvalue() == "Reprocessing 1 message(s).\n"
    assert recorder.scheduled == [message.pk]
    assert processing.process_message(message.pk, owner="t") is Outcome.PROCESSED
    message.refresh_from_db()
    assert (message.status, message.error, message.attempts) == (Status.PROCESSED, "", 2)


def test_reprocessing_twice_does_no_double_work(mailbox) -> None:
    message = deliver(RAW)
    with dispatch.recording() as recorder:
        assert dispatch.reprocess([message.pk]) == 1
        assert dispatch.reprocess([message.pk]) == 0  # already waiting
    assert recorder.scheduled == [message.pk]


def test_reprocess_command_needs_a_selection(db) -> None:
    with pytest.raises(CommandError, match="Say which messages"):
        call_command("inbound_reprocess")


def test_duplicates_are_never_reprocessed(mailbox) -> None:
    deliver(RAW)
    repeat = deliver(RAW)
    assert repeat.status == Status.DUPLICATE
    assert dispatch.reprocess([repeat.pk]) == 0


def test_a_claim_is_exclusive_until_its_lease_expires(mailbox) -> None:
    message = deliver(RAW, process=False)
    assert processing.claim(message.pk, owner="worker-1")
    assert not processing.claim(message.pk, owner="worker-1")  # not even the same name
    assert processing.process_message(message.pk, owner="worker-2") is Outcome.BUSY
    # worker-1 died: nothing renews its lease, which runs out.
    stale = timezone.now() - timedelta(seconds=61)
    InboundMessage.objects.filter(pk=message.pk).update(claimed_at=stale)
    assert processing.process_message(message.pk, owner="worker-2") is Outcome.PROCESSED
    assert processing.process_message(message.pk, owner="worker-3") is Outcome.SKIPPED
    assert InboundMessage.objects.get(pk=message.pk).attempts == 2


@pytest.mark.django_db(transaction=True)
@override_settings(INBOUND_SMTP={"PROCESSING_LEASE": 0.3})
def test_a_slow_live_worker_keeps_its_claim_and_a_late_one_is_told_it_lost() -> None:
    Mailbox.objects.create(address="user@our.test")
    message = deliver(RAW, process=False)
    inside = threading.Event()
    outcomes: list[Outcome] = []

    def slow(**kwargs: object) -> None:
        inside.set()
        time.sleep(1.2)  # four leases long: only the renewals keep the claim

    with receiver_connected(slow):
        worker = threading.Thread(
            target=lambda: outcomes.append(processing.process_message(message.pk, owner="a"))
        )
        worker.start()
        assert inside.wait(10)
        time.sleep(0.6)  # two leases: without renewal this claim would be stale now
        assert processing.process_message(message.pk, owner="b") is Outcome.BUSY
        with dispatch.recording() as recorder:
            dispatch.sweep()
        assert recorder.scheduled == []  # the sweeper leaves a live claim alone
        worker.join(10)
    assert outcomes == [Outcome.PROCESSED]
    assert InboundMessage.objects.get(pk=message.pk).attempts == 1


def test_an_outcome_after_losing_the_claim_is_not_recorded(mailbox) -> None:
    message = deliver(RAW, process=False)

    def taken_over(**kwargs: object) -> None:
        # Another execution took the claim meanwhile (this one's lease had expired).
        InboundMessage.objects.filter(pk=message.pk).update(claimed_by="someone-else")

    with receiver_connected(taken_over):
        assert processing.process_message(message.pk, owner="slow") is Outcome.LOST
    assert InboundMessage.objects.get(pk=message.pk).status == Status.PROCESSING


def test_a_receiver_error_with_a_nul_is_still_recorded(mailbox) -> None:
    def nul(**kwargs: object) -> None:
        raise ValueError("bad\x00byte")

    with receiver_connected(nul):
        message = deliver(RAW)
    assert message.status == Status.FAILED
    assert "bad\\x00byte" in message.error


def _age(message: InboundMessage, **fields: object) -> None:
    InboundMessage.objects.filter(pk=message.pk).update(**fields)


@override_settings(INBOUND_SMTP={"REDISPATCH_AFTER": 60, "MAX_ATTEMPTS": 3})
def test_sweeper_picks_up_lost_abandoned_and_retryable_messages(mailbox) -> None:
    long_ago = timezone.now() - timedelta(hours=1)
    lost = deliver(RAW, process=False)
    _age(lost, dispatched_at=long_ago)
    fresh = deliver(RAW + b"fresh\r\n", process=False)  # just scheduled: left alone
    abandoned = deliver(RAW + b"abandoned\r\n", process=False)
    _age(abandoned, status=Status.PROCESSING, claimed_by="dead", claimed_at=long_ago)
    retry = deliver(RAW + b"retry\r\n", process=False)
    _age(retry, status=Status.FAILED, attempts=1, processed_at=long_ago)
    exhausted = deliver(RAW + b"exhausted\r\n", process=False)
    _age(exhausted, status=Status.FAILED, attempts=3, processed_at=long_ago)
    with dispatch.recording() as recorder:
        out = StringIO()
        call_command("inbound_dispatch", stdout=out)
    assert sorted(recorder.scheduled) == sorted([lost.pk, abandoned.pk, retry.pk])
    assert "Scheduled 3 message(s)" in out.getvalue()
    assert InboundMessage.objects.get(pk=fresh.pk).status == Status.RECEIVED
    assert InboundMessage.objects.get(pk=exhausted.pk).status == Status.FAILED
    assert InboundMessage.objects.get(pk=abandoned.pk).claimed_by == ""


@override_settings(INBOUND_SMTP={"REDISPATCH_AFTER": 60, "MAX_ATTEMPTS": 5})
def test_retries_back_off_exponentially(mailbox) -> None:
    message = deliver(RAW, process=False)
    # Third attempt failed 3 minutes ago: the next retry waits 60 * 2**2 = 240 s.
    _age(
        message,
        status=Status.FAILED,
        attempts=3,
        processed_at=timezone.now() - timedelta(minutes=3),
    )
    with dispatch.recording() as recorder:
        dispatch.sweep()
    assert recorder.scheduled == []
    _age(message, processed_at=timezone.now() - timedelta(minutes=5))
    with dispatch.recording() as recorder:
        dispatch.sweep()
    assert recorder.scheduled == [message.pk]


def test_mailbox_handlers_run_after_the_signal(mailbox) -> None:
    HANDLED.clear()
    mailbox.handler = "tests.test_lifecycle.record_handler"
    mailbox.save()
    Mailbox.objects.create(address="other@our.test")
    message = deliver(RAW, to=["user@our.test", "user+x@our.test", "other@our.test"])
    assert message.status == Status.PROCESSED
    assert HANDLED == [("kit", "user@our.test", ["user@our.test", "user+x@our.test"])]


def test_failing_mailbox_handler_marks_the_message_failed(mailbox) -> None:
    mailbox.handler = "tests.test_lifecycle.broken_handler"
    mailbox.save()
    message = deliver(RAW)
    assert message.status == Status.FAILED
    assert "ValueError: handler bug" in message.error


@pytest.mark.integration
@pytest.mark.django_db(transaction=True)
def test_a_slow_receiver_never_delays_the_250(smtp_server) -> None:
    Mailbox.objects.create(address="user@our.test")
    release = threading.Event()
    started = threading.Event()

    def slow(**kwargs: object) -> None:
        started.set()
        release.wait(30)

    message_received.connect(slow)
    try:
        with GuardedSMTP(smtp_server.host, smtp_server.port, timeout=10) as client:
            # If the reply waited for the receiver this would time out: the receiver
            # is only released after the 250 has arrived.
            assert client.sendmail("a@example.org", ["user@our.test"], RAW) == {}
        assert started.wait(10)
        assert InboundMessage.objects.get().status == Status.PROCESSING
        release.set()
        assert dispatch.drain(10)
    finally:
        release.set()
        message_received.disconnect(slow)
    assert InboundMessage.objects.get().status == Status.PROCESSED


@pytest.mark.integration
@pytest.mark.django_db(transaction=True)
def test_a_repeated_delivery_over_smtp_signals_once(smtp_server) -> None:
    Mailbox.objects.create(address="user@our.test")
    raw = b"Message-ID: <same@example.org>\r\nSubject: twice\r\n\r\nx\r\n"
    with captured_messages() as captured:
        for _ in range(2):
            with GuardedSMTP(smtp_server.host, smtp_server.port, timeout=10) as client:
                assert client.sendmail("a@example.org", ["user@our.test"], raw) == {}
        assert dispatch.drain(10)
    assert len(captured) == 1
    statuses = sorted(InboundMessage.objects.values_list("status", flat=True))
    assert statuses == [Status.DUPLICATE, Status.PROCESSED]


@pytest.mark.integration
def test_the_public_fixture_serves_smtp(inbound_smtp_server) -> None:
    Mailbox.objects.create(address="support@example.org")
    with GuardedSMTP(inbound_smtp_server.host, inbound_smtp_server.port, timeout=10) as smtp:
        smtp.sendmail("a@example.net", ["support@example.org"], b"Subject: hi\r\n\r\nx\r\n")
    assert InboundMessage.objects.get().subject == "hi"


@override_settings(INBOUND_SMTP={"MAX_ATTEMPTS": 2})
def test_a_message_that_keeps_killing_its_worker_ends_failed(mailbox) -> None:
    message = deliver(RAW, process=False)
    long_ago = timezone.now() - timedelta(hours=1)
    _age(message, status=Status.PROCESSING, claimed_by="dead", claimed_at=long_ago, attempts=2)
    with dispatch.recording() as recorder:
        dispatch.sweep()
    assert recorder.scheduled == []
    message.refresh_from_db()
    assert message.status == Status.FAILED
    assert message.error == "abandoned by its worker 2 times; not retried again"


def test_a_handler_typo_fails_the_message_instead_of_vanishing(mailbox) -> None:
    mailbox.handler = "tests.test_lifecycle.no_such_handler"
    mailbox.save()
    message = deliver(RAW)
    assert message.status == Status.FAILED
    assert "neither an importable callable nor a task" in message.error


def test_celery_task_handlers_can_be_captured_without_a_broker(mailbox) -> None:
    mailbox.handler = "billing.tasks.import_invoice"
    mailbox.save()
    with captured_tasks() as sent:
        message = deliver(RAW)
    assert message.status == Status.PROCESSED
    assert sent == [("billing.tasks.import_invoice", [message.pk, mailbox.pk])]


def test_deleting_an_original_deletes_its_duplicates(mailbox) -> None:
    original = deliver(RAW)
    deliver(RAW)
    original.delete()
    assert not InboundMessage.objects.exists()


def test_the_reprocess_action_needs_the_change_permission(mailbox, client) -> None:
    from django.contrib.auth.models import Permission, User

    message = deliver(RAW)
    clerk = User.objects.create_user("clerk", password="pw", is_staff=True)
    clerk.user_permissions.add(Permission.objects.get(codename="view_inboundmessage"))
    client.force_login(clerk)
    url = "/admin/inbound_smtp/inboundmessage/"
    form = {"action": "reprocess", "_selected_action": [message.pk]}
    offered = client.get(url).context["action_form"].fields["action"].choices
    assert "reprocess" not in [name for name, _label in offered]  # not offered to a viewer
    client.post(url, form)
    assert InboundMessage.objects.get(pk=message.pk).status == Status.PROCESSED  # unchanged
    clerk.user_permissions.add(Permission.objects.get(codename="change_inboundmessage"))
    with dispatch.recording() as recorder:
        response = client.post(url, form, follow=True)
    assert recorder.scheduled == [message.pk]
    assert "1 message scheduled for processing." in response.content.decode()
