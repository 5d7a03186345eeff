"""Mailbox quotas: usage counting, the directory's knowledge of which mailboxes have one,
``452 4.2.2`` at RCPT over SMTP, and the admin fields."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from django.contrib.auth.models import User
from django.test import Client
from django.urls import reverse

from django_inbound_smtp import store
from django_inbound_smtp.envelope import ReceivedEnvelope, ResolvedRecipient
from django_inbound_smtp.exceptions import TemporaryFailure
from django_inbound_smtp.models import InboundMessage, Mailbox
from django_inbound_smtp.testing import deliver
from django_inbound_smtp.validators import quota
from django_inbound_smtp.validators.directory import directory

SIMPLE = b"Subject: quota\r\nMessage-ID: <q1@example.org>\r\n\r\n" + b"x" * 100 + b"\r\n"


def _store(mailbox: Mailbox, content: bytes = SIMPLE, *, queue_id: str) -> int:
    envelope = ReceivedEnvelope(
        queue_id=queue_id,
        mail_from="a@example.org",
        recipients=(ResolvedRecipient(address=mailbox.address, mailbox_id=mailbox.pk),),
        peer_host="192.0.2.1",
        peer_port=1234,
        helo="client.test",
        tls=False,
        esmtp=True,
        received_at=datetime.now(UTC),
    )
    return store.store_message(envelope, content)


@pytest.mark.django_db(transaction=True)
def test_usage_counts_stored_messages_once_duplicates_excluded_and_deleting_frees_room() -> None:
    box = Mailbox.objects.create(address="box@our.test")
    other = Mailbox.objects.create(address="other@our.test")
    first = _store(box, queue_id="Q1")
    _store(box, queue_id="Q2")  # the same message again: a duplicate, sharing its file
    _store(box, b"Subject: two\r\n\r\nsecond\r\n", queue_id="Q3")
    _store(other, queue_id="Q4")
    assert InboundMessage.objects.filter(status="duplicate").count() == 1
    size = sum(
        InboundMessage.objects.filter(queue_id__in=["Q1", "Q3"]).values_list("size", flat=True)
    )
    assert quota.usage([box.pk]) == {box.pk: quota.Usage(messages=2, size=size)}
    InboundMessage.objects.filter(pk=first).delete()  # its duplicate goes with it
    remaining = InboundMessage.objects.get(queue_id="Q3").size
    assert quota.usage([box.pk, other.pk])[box.pk] == quota.Usage(1, remaining)


@pytest.mark.django_db(transaction=True)
def test_full_at_rcpt_by_messages_or_bytes() -> None:
    box = Mailbox.objects.create(address="box@our.test")
    recipient = ResolvedRecipient(address="box@our.test", mailbox_id=box.pk)
    assert quota.refusal_at_rcpt(recipient) is None  # no quota
    _store(box, queue_id="Q1")
    size = InboundMessage.objects.get().size
    for fields, full in (
        ({"quota_messages": 2}, False),
        ({"quota_messages": 1}, True),
        ({"quota_bytes": size + 1}, False),  # room left: a message may take it over
        ({"quota_bytes": size}, True),
    ):
        Mailbox.objects.filter(pk=box.pk).update(
            **{"quota_messages": None, "quota_bytes": None, **fields}
        )
        refusal = quota.refusal_at_rcpt(recipient)
        assert (refusal is not None) is full, fields
        if refusal is not None:
            assert str(refusal) == "452 4.2.2 <box@our.test>: Mailbox full, try again later"
    assert quota.refusal_at_rcpt(ResolvedRecipient(address="postmaster")) is None


@pytest.mark.django_db(transaction=True)
def test_the_directory_tells_which_mailboxes_have_a_quota(settings) -> None:
    limited = Mailbox.objects.create(address="limited@our.test", quota_bytes=1000)
    free = Mailbox.objects.create(address="free@our.test")
    directory.clear()
    assert directory.has_quota(limited.pk) is None  # nothing loaded yet: ask the database
    directory.lookup(["free@our.test"], "our.test")  # loads the whole directory
    assert directory.has_quota(limited.pk) is True
    assert directory.has_quota(free.pk) is False
    assert directory.has_quota(free.pk + limited.pk + 100) is None  # not an active mailbox
    # RCPT skips the quota query only where memory says there is no quota.
    assert quota.may_skip(ResolvedRecipient(address="free@our.test", mailbox_id=free.pk))
    assert not quota.may_skip(ResolvedRecipient(address="x@our.test", mailbox_id=limited.pk))
    assert quota.may_skip(ResolvedRecipient(address="postmaster"))
    # A quota set through the ORM is seen at once in this process (the snapshot is dropped).
    free.quota_messages = 5
    free.save()
    assert directory.has_quota(free.pk) is None
    settings.INBOUND_SMTP = {"HOSTNAME": "mx.test", "DIRECTORY_TTL": 0}
    directory.lookup(["free@our.test"], "our.test")
    assert directory.has_quota(free.pk) is None  # no directory: always ask


@pytest.mark.django_db(transaction=True)
def test_too_many_mailboxes_for_the_directory_the_quota_answer_is_remembered(settings) -> None:
    settings.INBOUND_SMTP = {"HOSTNAME": "mx.test", "DIRECTORY_MAX_SIZE": 1}
    limited = Mailbox.objects.create(address="limited@our.test", quota_messages=5)
    free = Mailbox.objects.create(address="free@our.test")
    directory.clear()
    directory.lookup(["free@our.test"], "our.test")  # too large: per-address mode
    assert directory.has_quota(free.pk) is None
    # Asked once: later RCPTs within DIRECTORY_TTL skip the query for "free" (memory
    # bounded by DIRECTORY_MAX_SIZE entries, here one).
    for box, has_quota in ((limited, True), (free, False)):
        assert quota.refusal_at_rcpt(ResolvedRecipient(box.address, mailbox_id=box.pk)) is None
        assert directory.has_quota(box.pk) is has_quota


@pytest.mark.integration
def test_a_full_mailbox_is_452_4_2_2_at_rcpt_over_smtp_the_others_unaffected(
    make_mailbox, smtp_client
) -> None:
    full = make_mailbox("full@our.test", quota_messages=1)
    make_mailbox("other@our.test")
    assert smtp_client.sendmail("a@example.org", ["full@our.test"], SIMPLE) == {}
    smtp_client.mail("a@example.org")
    code, text = smtp_client.rcpt("full@our.test")
    assert (code, text.decode()) == (452, "4.2.2 <full@our.test>: Mailbox full, try again later")
    assert smtp_client.rcpt("other@our.test")[0] == 250
    code, _ = smtp_client.data(b"Subject: second\r\n\r\nfor the other one\r\n")
    assert code == 250
    assert full.deliveries.count() == 1
    # Room is made (a message deleted): the next delivery is accepted.
    InboundMessage.objects.filter(recipients__mailbox=full).delete()
    assert smtp_client.sendmail("a@example.org", ["full@our.test"], SIMPLE) == {}


@pytest.mark.django_db
def test_the_test_kit_refuses_a_full_mailbox_as_the_server_would() -> None:
    Mailbox.objects.create(address="full@our.test", quota_messages=0)
    with pytest.raises(TemporaryFailure) as refused:
        deliver(SIMPLE, to=["full@our.test"])
    assert str(refused.value.reply) == "452 4.2.2 <full@our.test>: Mailbox full, try again later"
    assert not InboundMessage.objects.exists()


def test_quota_fields_are_listed_and_editable_in_the_admin(db) -> None:
    client = Client()
    client.force_login(User.objects.create_superuser("boss", "boss@x.test", "pw"))
    box = Mailbox.objects.create(address="box@our.test")
    change = reverse("admin:inbound_smtp_mailbox_change", args=[box.pk])
    form = client.get(change).content.decode()
    assert 'name="quota_messages"' in form
    assert 'name="quota_bytes"' in form
    saved = client.post(
        change,
        {"address": "box@our.test", "is_active": "on", "quota_messages": "10", "quota_bytes": ""},
    )
    assert saved.status_code == 302
    box.refresh_from_db()
    assert (box.quota_messages, box.quota_bytes) == (10, None)
    listing = client.get(reverse("admin:inbound_smtp_mailbox_changelist")).content.decode()
    assert "quota" in listing.lower()
