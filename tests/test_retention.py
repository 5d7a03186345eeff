"""Tier 2: retention deletes finished messages past their age, rows and files together,
and never an unfinished or held one; the command, the task, smtpd's housekeeping, the
admin's hold actions and the settings check."""

from __future__ import annotations

import io
import time
from collections.abc import Iterator
from datetime import timedelta
from email.message import EmailMessage
from pathlib import Path

import pytest
from django.contrib.auth.models import Permission, User
from django.core.checks import Error
from django.core.management import call_command
from django.test import Client, override_settings
from django.urls import reverse
from django.utils import timezone

from django_inbound_smtp.checks import check_settings
from django_inbound_smtp.models import Attachment, InboundMessage, Mailbox, PendingFileDeletion
from django_inbound_smtp.store import retention
from django_inbound_smtp.tasks import prune as prune_task
from django_inbound_smtp.testing import deliver, running_server
from tests.helpers import local_storages

Status = InboundMessage.Status
LIMITS = {"processed": 30, "failed": 90, "duplicate": 7}


@pytest.fixture
def media(tmp_path: Path) -> Iterator[Path]:
    settings = {"HOSTNAME": "mx.test", "RETENTION": LIMITS, "MAX_ATTEMPTS": 5}
    with override_settings(STORAGES=local_storages(tmp_path), INBOUND_SMTP=settings):
        Mailbox.objects.get_or_create(address="user@our.test")
        yield tmp_path


def _message(subject: str, *, attachment: bool = False) -> bytes:
    built = EmailMessage()
    built["Subject"] = subject
    built["Message-ID"] = f"<{subject}@x.test>"
    built.set_content("body\n")
    if attachment:
        built.add_attachment(b"PDF" * 10, maintype="application", subtype="pdf", filename="a.pdf")
    return built.as_bytes().replace(b"\n", b"\r\n")


# What each stored message's client sent (a repeat of it is a duplicate).
_SENT: dict[int, bytes] = {}


def _stored(subject: str, status: str, age_days: float, **options: bool) -> InboundMessage:
    """A message in ``status`` whose age (processing, or receipt) is ``age_days``."""
    raw = _message(subject, attachment=options.get("attachment", False))
    message = deliver(raw, to=["user@our.test"], process=status != Status.RECEIVED)
    _SENT[message.pk] = raw
    when = timezone.now() - timedelta(days=age_days)
    fields: dict[str, object] = {"received_at": when, "processed_at": when}
    if status != Status.RECEIVED:
        fields["status"] = status
    if status == Status.FAILED:
        fields["attempts"] = 5
    InboundMessage.objects.filter(pk=message.pk).update(**fields)
    message.refresh_from_db()
    return message


def _duplicate_of(original: InboundMessage, age_days: float) -> InboundMessage:
    again = deliver(_SENT[original.pk], to=["user@our.test"], process=False)
    assert again.status == Status.DUPLICATE
    assert again.duplicate_of_id == original.pk
    when = timezone.now() - timedelta(days=age_days)
    InboundMessage.objects.filter(pk=again.pk).update(received_at=when)
    return again


def _subjects() -> set[str]:
    return set(InboundMessage.objects.values_list("subject", flat=True))


@pytest.mark.django_db(transaction=True)
def test_each_status_goes_past_its_own_limit_and_unfinished_ones_never(media: Path) -> None:
    for status in (Status.PROCESSED, Status.FAILED):
        _stored(f"old-{status}", status, 400)
        _stored(f"new-{status}", status, 20)
    _stored("failed-89d", Status.FAILED, 89)
    _stored("failed-91d", Status.FAILED, 91)
    retrying = _stored("failed-retry-due", Status.FAILED, 400)
    InboundMessage.objects.filter(pk=retrying.pk).update(attempts=2)  # the sweeper retries it
    _stored("received-old", Status.RECEIVED, 4000)
    _stored("processing-old", Status.PROCESSING, 4000)
    kept_original = _stored("original-of-dups", Status.PROCESSED, 1)
    _duplicate_of(kept_original, 8)

    report = retention.prune()

    assert report.messages == {"duplicate": 1, "processed": 1, "failed": 2}
    assert _subjects() == {
        "new-processed",
        "new-failed",
        "failed-89d",
        "failed-retry-due",
        "received-old",
        "processing-old",
        "original-of-dups",
    }


@pytest.mark.django_db(transaction=True)
def test_whatever_the_settings_received_and_processing_are_never_pruned(media: Path) -> None:
    _stored("waiting", Status.RECEIVED, 10_000)
    _stored("running", Status.PROCESSING, 10_000)
    with pytest.raises(ValueError, match="never pruned"):
        retention.eligible("received", 0)
    everything = {"processed": 0, "failed": 0, "duplicate": 0, "received": 0, "processing": 0}
    with override_settings(STORAGES=local_storages(media), INBOUND_SMTP={"RETENTION": everything}):
        assert retention.prune().total == 0
    assert _subjects() == {"waiting", "running"}


@pytest.mark.django_db(transaction=True)
def test_held_messages_and_originals_of_held_duplicates_survive(media: Path) -> None:
    held = _stored("held", Status.PROCESSED, 400)
    held.hold(by="alice")
    assert (held.held, held.held_by) == (True, "alice")
    assert held.held_at is not None
    original = _stored("original", Status.PROCESSED, 400)
    duplicate = _duplicate_of(original, 400)
    assert InboundMessage.objects.filter(pk=duplicate.pk).hold(by="bob") == 1
    _stored("free", Status.PROCESSED, 400)

    retention.prune()

    assert _subjects() == {"held", "original"}
    assert InboundMessage.objects.filter(pk=duplicate.pk).exists()
    held.release_hold()
    InboundMessage.objects.filter(pk=duplicate.pk).release_hold()
    retention.prune()
    assert not InboundMessage.objects.exists()


@pytest.mark.django_db(transaction=True)
def test_rows_raw_files_and_attachment_files_go_together(media: Path) -> None:
    gone = _stored("gone", Status.PROCESSED, 400, attachment=True)
    attachment = Attachment.objects.get(message=gone)
    duplicate = _duplicate_of(gone, 1)  # goes with its original
    stays = _stored("stays", Status.PROCESSED, 1, attachment=True)
    lone_dup = _duplicate_of(stays, 400)  # goes alone: the original keeps the shared file
    paths = [media / gone.raw_file, media / attachment.file]
    assert all(path.exists() for path in paths)

    report = retention.prune()

    assert report.messages == {"duplicate": 1, "processed": 1, "failed": 0}
    assert report.with_original == 1
    assert report.files == 2
    assert not any(path.exists() for path in paths)
    assert not InboundMessage.objects.filter(pk__in=[gone.pk, duplicate.pk, lone_dup.pk]).exists()
    assert not Attachment.objects.filter(pk=attachment.pk).exists()
    assert (media / stays.raw_file).read_bytes() == stays.raw_bytes
    assert (media / Attachment.objects.get(message=stays).file).exists()
    assert not PendingFileDeletion.objects.exists()


@pytest.mark.django_db(transaction=True)
def test_a_file_that_could_not_be_deleted_is_deleted_by_the_next_prune(media: Path) -> None:
    gone = _stored("gone", Status.PROCESSED, 400)
    raw = media / gone.raw_file
    # A real storage fault: the file's name is taken by a non-empty folder, which
    # FileSystemStorage.delete cannot remove (IsADirectoryError / OSError).
    raw.unlink()
    raw.mkdir()
    (raw / "blocker").write_bytes(b"x")

    retention.prune()

    assert not InboundMessage.objects.filter(pk=gone.pk).exists()  # the row went
    assert list(PendingFileDeletion.objects.values_list("name", flat=True)) == [gone.raw_file]
    (raw / "blocker").unlink()
    raw.rmdir()
    raw.write_bytes(b"left behind")  # as a crash after the commit would leave it

    report = retention.prune()

    assert report.files == 1
    assert not raw.exists()
    assert not PendingFileDeletion.objects.exists()


@pytest.mark.django_db(transaction=True)
def test_bounded_batches_delete_everything_due(media: Path) -> None:
    for number in range(5):
        _stored(f"old-{number}", Status.PROCESSED, 400)
    report = retention.prune(batch_size=2)
    assert report.messages["processed"] == 5
    assert not InboundMessage.objects.exists()


@pytest.mark.django_db(transaction=True)
def test_dry_run_counts_by_status_and_deletes_nothing(media: Path) -> None:
    old = _stored("old", Status.PROCESSED, 400)
    _stored("older-failed", Status.FAILED, 400)
    out = io.StringIO()
    call_command("inbound_prune", "--dry-run", stdout=out)
    assert out.getvalue().splitlines() == [
        "Would delete 0 duplicate message(s) older than 7 day(s).",
        "Would delete 1 processed message(s) older than 30 day(s).",
        "Would delete 1 failed message(s) older than 90 day(s).",
    ]
    assert InboundMessage.objects.count() == 2
    assert (media / old.raw_file).exists()
    out = io.StringIO()
    call_command("inbound_prune", stdout=out)
    assert "Deleted 1 processed message(s) older than 30 day(s)." in out.getvalue()
    assert "Deleted 2 file(s)." in out.getvalue()
    assert not InboundMessage.objects.exists()


@pytest.mark.django_db(transaction=True)
def test_the_default_keeps_everything(tmp_path: Path) -> None:
    with override_settings(STORAGES=local_storages(tmp_path), INBOUND_SMTP={}):
        Mailbox.objects.create(address="user@our.test")
        _stored("ancient", Status.PROCESSED, 10_000)
        out = io.StringIO()
        call_command("inbound_prune", stdout=out)
        assert "nothing to prune" in out.getvalue()
        assert retention.prune().total == 0
    assert _subjects() == {"ancient"}


@pytest.mark.django_db(transaction=True)
def test_the_celery_task_prunes_through_the_task_api(media: Path) -> None:
    # Eager, through Celery's task API (apply); a real worker runs it in
    # test_retention_worker.py.
    _stored("old", Status.PROCESSED, 400)
    result = prune_task.apply()
    assert result.successful()
    assert result.get() == {"duplicate": 0, "processed": 1, "failed": 0}
    assert not InboundMessage.objects.exists()


@pytest.mark.django_db(transaction=True)
def test_smtpd_housekeeping_prunes_at_its_interval(tmp_path: Path) -> None:
    settings = {"HOSTNAME": "mx.test", "RETENTION": LIMITS, "PRUNE_INTERVAL": 0.2}
    with override_settings(STORAGES=local_storages(tmp_path), INBOUND_SMTP=settings):
        Mailbox.objects.create(address="user@our.test")
        old = _stored("old", Status.PROCESSED, 400)
        _stored("new", Status.PROCESSED, 1)
        with running_server():
            deadline = time.monotonic() + 10
            while InboundMessage.objects.filter(pk=old.pk).exists():
                assert time.monotonic() < deadline, "smtpd did not prune"
                time.sleep(0.05)
        assert _subjects() == {"new"}
        assert not (tmp_path / old.raw_file).exists()


@pytest.mark.django_db(transaction=True)
def test_admin_hold_and_release_need_the_change_permission(media: Path) -> None:
    message = _stored("m", Status.PROCESSED, 1)
    url = reverse("admin:inbound_smtp_inboundmessage_changelist")
    viewer = User.objects.create_user("viewer", password="pw", is_staff=True)
    viewer.user_permissions.add(Permission.objects.get(codename="view_inboundmessage"))
    client = Client()
    client.force_login(viewer)
    page = client.get(url)
    assert b'value="hold"' not in page.content
    client.post(url, {"action": "hold", "_selected_action": [message.pk]})
    message.refresh_from_db()
    assert not message.held

    boss = Client()
    boss.force_login(User.objects.create_superuser("boss", "boss@x.test", "pw"))
    assert b'value="hold"' in boss.get(url).content
    boss.post(url, {"action": "hold", "_selected_action": [message.pk]})
    message.refresh_from_db()
    assert (message.held, message.held_by) == (True, "boss")
    boss.post(url, {"action": "release_hold", "_selected_action": [message.pk]})
    message.refresh_from_db()
    assert (message.held, message.held_by, message.held_at) == (False, "", None)


@pytest.mark.parametrize(
    ("value", "problem"),
    [
        ([30], "must be a dict"),
        ({"received": 3}, "'received' is not a status"),
        ({"processed": -1}, "'processed': -1"),
        ({"failed": 1.5}, "'failed': 1.5"),
        ({"duplicate": True}, "'duplicate': True"),
    ],
)
def test_retention_settings_are_checked(value: object, problem: str) -> None:
    with override_settings(INBOUND_SMTP={"RETENTION": value}):
        errors = [e for e in check_settings() if e.id == "inbound_smtp.E045"]
    assert len(errors) == 1
    assert isinstance(errors[0], Error)
    assert problem in errors[0].msg


def test_good_retention_settings_pass_the_check() -> None:
    good = {"processed": 30, "failed": None, "duplicate": 0}
    with override_settings(INBOUND_SMTP={"RETENTION": good, "PRUNE_INTERVAL": 600}):
        assert [
            e for e in check_settings() if e.id in ("inbound_smtp.E045", "inbound_smtp.E002")
        ] == []
    with override_settings(INBOUND_SMTP={"PRUNE_INTERVAL": -1}):
        assert any("PRUNE_INTERVAL" in e.msg for e in check_settings())


@pytest.mark.django_db(transaction=True)
def test_deleting_in_the_admin_takes_the_files_too(media: Path) -> None:
    gone = _stored("gone", Status.RECEIVED, 1, attachment=True)
    processed = _stored("processed", Status.PROCESSED, 1, attachment=True)
    attachment = Attachment.objects.get(message=processed)
    duplicate = _duplicate_of(processed, 1)
    boss = Client()
    boss.force_login(User.objects.create_superuser("boss", "boss@x.test", "pw"))
    url = reverse("admin:inbound_smtp_inboundmessage_changelist")

    boss.post(url, {"action": "delete_selected", "_selected_action": [duplicate.pk], "post": "yes"})
    assert (media / processed.raw_file).exists()  # the original keeps the shared file
    boss.post(
        url,
        {"action": "delete_selected", "_selected_action": [gone.pk, processed.pk], "post": "yes"},
    )
    single = _stored("single", Status.FAILED, 1)
    one = reverse("admin:inbound_smtp_inboundmessage_delete", args=[single.pk])
    assert boss.post(one, {"post": "yes"}).status_code == 302
    assert not (media / single.raw_file).exists()

    assert not InboundMessage.objects.exists()
    assert not (media / gone.raw_file).exists()
    assert not (media / processed.raw_file).exists()
    assert not (media / attachment.file).exists()
