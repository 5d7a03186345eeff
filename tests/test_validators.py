"""Tier 2/3: the recipient validator chain and the Mailbox validator."""

from __future__ import annotations

import asyncio
import threading

import pytest
from django.test import override_settings

from django_inbound_smtp import replies
from django_inbound_smtp.envelope import RecipientContext, ResolvedRecipient
from django_inbound_smtp.exceptions import Rejected, TemporaryFailure
from django_inbound_smtp.smtp import _bridge
from django_inbound_smtp.validators import validate_recipient
from django_inbound_smtp.validators.models import candidate_addresses

CONTEXT = RecipientContext(mail_from="a@example.org", peer_host="127.0.0.1", helo="c", tls=False)


def accept_vip(address: str, *, context: RecipientContext) -> ResolvedRecipient | None:
    return ResolvedRecipient(address=address) if address.startswith("vip@") else None


async def async_refuse_spam(address: str, *, context: RecipientContext) -> replies.Reply | None:
    await asyncio.sleep(0)
    if address.startswith("spam@"):
        return replies.MAILBOX_UNKNOWN
    if address.startswith("later@"):
        return replies.LOOKUP_FAILURE
    return None


def returns_junk(address: str, *, context: RecipientContext) -> object:
    return True


def raises_rejected(address: str, *, context: RecipientContext) -> None:
    raise Rejected(replies.Reply(550, "5.7.1", "Sender blocked"))


CHAIN = [
    "tests.test_validators.async_refuse_spam",
    "tests.test_validators.accept_vip",
    "django_inbound_smtp.validators.models.mailbox_validator",
]


def _run(address: str) -> ResolvedRecipient:
    return asyncio.run(_bridge.validate_recipient(address, CONTEXT))


def test_candidates_order_exact_then_plus_base_then_catch_all() -> None:
    assert candidate_addresses("User+Tag@Our.Test", delimiter="+") == [
        ("user+tag@our.test", ""),
        ("user@our.test", "Tag"),
        ("*@our.test", ""),
    ]
    assert candidate_addresses("+tag@our.test", delimiter="+") == [
        ("+tag@our.test", ""),
        ("*@our.test", ""),
    ]
    assert candidate_addresses("a-b@x.test", delimiter="-")[1] == ("a@x.test", "b")


@override_settings(INBOUND_SMTP={"RECIPIENT_VALIDATORS": CHAIN})
def test_chain_runs_sync_and_async_validators_in_order(transactional_db, make_mailbox) -> None:
    make_mailbox("user@our.test")
    assert _run("vip@anywhere.example") == ResolvedRecipient(address="vip@anywhere.example")
    assert _run("user@our.test").mailbox_id is not None
    with pytest.raises(Rejected) as rejected:
        _run("spam@our.test")
    assert rejected.value.reply is replies.MAILBOX_UNKNOWN
    with pytest.raises(TemporaryFailure):
        _run("later@our.test")
    # Nobody claims the domain: relay denied, never accepted.
    with pytest.raises(Rejected) as denied:
        _run("x@nobody.example")
    assert denied.value.reply is replies.RELAY_DENIED


@override_settings(INBOUND_SMTP={"RECIPIENT_VALIDATORS": ["tests.test_validators.raises_rejected"]})
def test_a_validator_may_raise_rejected_with_its_own_reply() -> None:
    with pytest.raises(Rejected) as rejected:
        _run("x@our.test")
    assert str(rejected.value.reply) == "550 5.7.1 Sender blocked"


@override_settings(INBOUND_SMTP={"RECIPIENT_VALIDATORS": ["tests.test_validators.returns_junk"]})
def test_a_validator_returning_junk_is_an_error_not_an_accept() -> None:
    with pytest.raises(TypeError, match="expected ResolvedRecipient"):
        _run("x@our.test")


SEEN_CONTEXTS: list[tuple[str, RecipientContext, int]] = []


def recording(address: str, *, context: RecipientContext) -> ResolvedRecipient:
    SEEN_CONTEXTS.append((address, context, threading.get_ident()))
    return ResolvedRecipient(address=address, tag="seen")


@override_settings(INBOUND_SMTP={"RECIPIENT_VALIDATORS": ["tests.test_validators.recording"]})
def test_sync_validators_get_address_and_context_off_the_loop() -> None:
    SEEN_CONTEXTS.clear()
    result = asyncio.run(
        validate_recipient("who@x.test", context=CONTEXT, run_sync=_bridge.run_sync)
    )
    assert result == ResolvedRecipient(address="who@x.test", tag="seen")
    assert SEEN_CONTEXTS == [("who@x.test", CONTEXT, SEEN_CONTEXTS[0][2])]
    assert SEEN_CONTEXTS[0][2] != threading.get_ident()  # ran in the ORM thread
