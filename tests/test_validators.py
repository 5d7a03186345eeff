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
from django_inbound_smtp.validators import cacheable, validate_recipient
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


# --- Validators that declare their answers cacheable ----------------------------------

CALLS: list[str] = []


@cacheable
def remembered(
    address: str, *, context: RecipientContext
) -> ResolvedRecipient | replies.Reply | None:
    CALLS.append(address)
    local = address.partition("@")[0]
    if local == "gone":
        raise Rejected(replies.MAILBOX_UNKNOWN)
    if local == "busy":
        raise TemporaryFailure(replies.LOOKUP_FAILURE)
    if local == "later":
        return replies.LOOKUP_FAILURE  # a 4xx reply
    return ResolvedRecipient(address=address, tag=local) if local != "skip" else None


@cacheable(vary_on=("mail_from",))
async def per_sender(address: str, *, context: RecipientContext) -> ResolvedRecipient:
    CALLS.append(f"{address} from {context.mail_from}")
    return ResolvedRecipient(address=address, tag=context.mail_from)


@cacheable(ttl=0)
def never_kept(address: str, *, context: RecipientContext) -> ResolvedRecipient:
    CALLS.append(address)
    return ResolvedRecipient(address=address)


class FlaggedValidator:
    cacheable = True

    def __call__(self, address: str, *, context: RecipientContext) -> ResolvedRecipient:
        CALLS.append(address)
        return ResolvedRecipient(address=address)


flagged = FlaggedValidator()


async def _no_hop(*args: object, **kwargs: object) -> object:
    raise AssertionError("called a sync validator whose answer should be remembered")


def _ask(address: str, *, run_sync=_bridge.run_sync, context=CONTEXT) -> object:
    try:
        return asyncio.run(validate_recipient(address, context=context, run_sync=run_sync))
    except (Rejected, TemporaryFailure) as refusal:
        return refusal.reply


@pytest.fixture
def calls() -> list[str]:
    CALLS.clear()
    return CALLS


@override_settings(INBOUND_SMTP={"RECIPIENT_VALIDATORS": ["tests.test_validators.remembered"]})
def test_a_cacheable_validators_final_answers_are_reused_from_memory(calls) -> None:
    for address in ("a@x.test", "gone@x.test", "skip@x.test"):
        first = _ask(address)
        assert _ask(address, run_sync=_no_hop) == first  # not called again, not even a hop
    assert _ask("skip@x.test", run_sync=_no_hop) is replies.RELAY_DENIED
    assert _ask("gone@x.test", run_sync=_no_hop) is replies.MAILBOX_UNKNOWN
    assert _ask("A@x.test") == ResolvedRecipient(address="A@x.test", tag="A")  # exact address
    assert calls == ["a@x.test", "gone@x.test", "skip@x.test", "A@x.test"]
    # Temporary answers are asked again every time.
    for _ in range(2):
        assert _ask("busy@x.test") is replies.LOOKUP_FAILURE
        assert _ask("later@x.test") is replies.LOOKUP_FAILURE
    assert calls[4:] == ["busy@x.test", "later@x.test"] * 2


@override_settings(
    INBOUND_SMTP={"RECIPIENT_VALIDATORS": ["tests.test_validators.remembered"], "DIRECTORY_TTL": 0}
)
def test_directory_ttl_zero_turns_answer_caching_off(calls) -> None:
    _ask("a@x.test")
    _ask("a@x.test")
    assert calls == ["a@x.test", "a@x.test"]


@override_settings(INBOUND_SMTP={"RECIPIENT_VALIDATORS": ["tests.test_validators.per_sender"]})
def test_answers_vary_on_the_context_fields_a_validator_names(calls) -> None:
    other = RecipientContext(mail_from="b@example.org", peer_host="192.0.2.9", helo="d", tls=True)
    elsewhere = RecipientContext(
        mail_from="a@example.org", peer_host="192.0.2.9", helo="d", tls=True
    )
    assert _ask("u@x.test") == ResolvedRecipient(address="u@x.test", tag="a@example.org")
    assert _ask("u@x.test", context=other) == ResolvedRecipient("u@x.test", tag="b@example.org")
    # Only mail_from counts: another peer with the same sender reuses the answer.
    assert _ask("u@x.test", context=elsewhere) == ResolvedRecipient("u@x.test", tag="a@example.org")
    assert calls == ["u@x.test from a@example.org", "u@x.test from b@example.org"]


def plain(address: str, *, context: RecipientContext) -> ResolvedRecipient:
    CALLS.append(address)
    return ResolvedRecipient(address=address)


@pytest.mark.parametrize(("path", "times"), [("plain", 2), ("never_kept", 2), ("flagged", 1)])
def test_only_validators_that_say_so_are_cached(calls, path: str, times: int) -> None:
    chain = [f"tests.test_validators.{path}"]
    with override_settings(INBOUND_SMTP={"RECIPIENT_VALIDATORS": chain}):
        for _ in range(2):
            assert _ask("vip@x.test") == ResolvedRecipient(address="vip@x.test")
    assert calls == ["vip@x.test"] * times


def test_cacheable_refuses_a_context_field_that_does_not_exist() -> None:
    with pytest.raises(ValueError, match="unknown context fields"):
        cacheable(vary_on=("sender",))
