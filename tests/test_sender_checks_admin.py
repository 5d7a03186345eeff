"""Tier 2: sender-check verdicts are stored with the message, shown and filterable."""

from __future__ import annotations

import pytest
from django.urls import reverse

from django_inbound_smtp import store
from django_inbound_smtp.models import InboundMessage
from django_inbound_smtp.senderauth.results import Verdict, Verdicts
from tests.helpers import received_envelope

pytestmark = pytest.mark.django_db


def _store(queue_id: str, *, verified: bool) -> InboundMessage:
    verdicts = Verdicts(
        values={
            "spf": Verdict("pass" if verified else "fail", "sender.test: -all matched"),
            "dkim": Verdict("none", "message not signed"),
        },
        from_domain="sender.test",
        sender_verified=verified,
    )
    envelope = received_envelope(
        queue_id,
        mail_from="a@sender.test",
        peer_host="192.0.2.7",
        peer_port=40000,
        helo="client.test",
        sender_checks=verdicts.record("Authentication-Results: mx.test; spf=pass"),
    )
    pk = store.store_message(envelope, f"Subject: {queue_id}\r\n\r\nbody\r\n".encode())
    return InboundMessage.objects.get(pk=pk)


def test_verdicts_are_stored_with_the_message() -> None:
    message = _store("Q1", verified=True)
    check = message.sender_check
    assert (check.spf_result, check.dkim_result, check.dmarc_result) == ("pass", "none", "")
    assert check.sender_verified
    assert check.authentication_results.startswith("Authentication-Results: mx.test")


def test_messages_without_checks_have_no_row() -> None:
    envelope = received_envelope("Q0", mail_from="", peer_host=None, peer_port=None, helo="")
    pk = store.store_message(envelope, b"Subject: x\r\n\r\nbody\r\n")
    assert not hasattr(InboundMessage.objects.get(pk=pk), "sender_check")


def test_admin_shows_and_filters_by_verdict(admin_client) -> None:
    good = _store("GOODQUEUE", verified=True)
    _store("BADQUEUE", verified=False)
    url = reverse("admin:inbound_smtp_inboundmessage_changelist")
    page = admin_client.get(url, {"sender_check__sender_verified__exact": "1"}).content.decode()
    assert "GOODQUEUE" in page
    assert "BADQUEUE" not in page
    page = admin_client.get(url, {"sender_check__spf_result": "fail"}).content.decode()
    assert "BADQUEUE" in page
    assert "GOODQUEUE" not in page
    detail = admin_client.get(reverse("admin:inbound_smtp_inboundmessage_change", args=[good.pk]))
    text = detail.content.decode()
    assert detail.status_code == 200
    assert "sender.test: -all matched" in text
    assert "Authentication-Results: mx.test" in text
