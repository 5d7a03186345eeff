"""Tier 2: the write path: durability order, rollback cleanup, dedupe."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest
from django.core.files.storage import storages

from django_inbound_smtp import store
from django_inbound_smtp.envelope import ReceivedEnvelope, ResolvedRecipient
from django_inbound_smtp.lifecycle import schedule
from django_inbound_smtp.models import InboundMessage, Mailbox
from django_inbound_smtp.store import files, rows
from tests.helpers import received_envelope, store_and_schedule

pytestmark = pytest.mark.django_db(transaction=True)

CONTENT = b"Subject: once\r\nMessage-ID: <once@x.test>\r\n\r\nbody\r\n"


def _envelope(queue_id: str, *, to: tuple[str, ...] = ("user@our.test",)) -> ReceivedEnvelope:
    mailbox = Mailbox.objects.get_or_create(address="user@our.test")[0]
    return received_envelope(
        queue_id,
        recipients=tuple(ResolvedRecipient(address=a, mailbox_id=mailbox.pk) for a in to),
    )


def _files() -> set[Path]:
    return set(Path(storages["default"].path("")).rglob("*.eml"))


def test_stored_bytes_are_trace_then_content() -> None:
    pk = store_and_schedule(_envelope("QTRACE"), CONTENT, trace=b"Received: x\r\n")
    assert schedule.drain(10)
    message = InboundMessage.objects.get(pk=pk)
    assert message.raw_bytes == b"Received: x\r\n" + CONTENT
    assert message.size == len(message.raw_bytes)
    digest = hashlib.sha256(CONTENT).hexdigest()
    assert message.dedupe_key == rows.dedupe_key(_envelope("QTRACE"), digest, "<once@x.test>")


def test_a_failure_after_commit_still_counts_as_stored() -> None:
    # The store runs the after-commit hook it is given: here one that fails, as
    # scheduling does when the interpreter is shutting down. After the commit the
    # message must stay stored, file included, and the store must return its pk
    # normally so the client gets 250.
    def broken(pks: list[int]) -> None:
        raise RuntimeError("cannot schedule new futures after shutdown")

    before = _files()
    pk = store.store_message(_envelope("QAFTER"), CONTENT, on_commit=broken)
    message = InboundMessage.objects.get(pk=pk)
    assert message.status == InboundMessage.Status.RECEIVED  # the sweeper will pick it up
    assert _files() - before == {Path(storages["default"].path(message.raw_file))}


def test_a_repeat_delivery_is_a_duplicate_without_file_or_processing() -> None:
    first = store_and_schedule(_envelope("QFIRST"), CONTENT, trace=b"Received: 1\r\n")
    assert schedule.drain(10)
    files = _files()
    second = store_and_schedule(_envelope("QSECOND"), CONTENT, trace=b"Received: 2\r\n")
    assert schedule.drain(10)
    original = InboundMessage.objects.get(pk=first)
    repeat = InboundMessage.objects.get(pk=second)
    assert original.status == InboundMessage.Status.PROCESSED
    assert repeat.status == InboundMessage.Status.DUPLICATE
    assert repeat.duplicate_of == original
    assert repeat.raw_file == original.raw_file
    assert repeat.attempts == 0
    assert _files() == files
    assert [r.address for r in repeat.recipients.all()] == ["user@our.test"]


def test_other_recipients_or_content_are_not_duplicates() -> None:
    store_and_schedule(_envelope("QA"), CONTENT)
    store_and_schedule(_envelope("QB", to=("user@our.test", "other@our.test")), CONTENT)
    store_and_schedule(_envelope("QC"), CONTENT + b"more\r\n")
    assert schedule.drain(10)
    statuses = set(InboundMessage.objects.values_list("status", flat=True))
    assert InboundMessage.Status.DUPLICATE not in statuses


def test_folders_are_created_durably(settings, tmp_path) -> None:
    settings.STORAGES = {
        **settings.STORAGES,
        "default": {
            "BACKEND": "django.core.files.storage.FileSystemStorage",
            "OPTIONS": {"location": str(tmp_path)},
        },
    }
    pk = store_and_schedule(_envelope("QDIR"), CONTENT)
    name = InboundMessage.objects.get(pk=pk).raw_file
    assert name.startswith("inbound_smtp/")
    assert name.endswith("/QDIR.eml")
    assert (tmp_path / name).read_bytes() == CONTENT
    assert files._durable_folders >= {str(tmp_path / Path(name).parent)}
