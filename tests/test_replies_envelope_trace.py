"""Tier 1: reply values, envelope address rules, our Received: line and queue ids."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from hypothesis import given
from hypothesis import strategies as st

from django_inbound_smtp import replies
from django_inbound_smtp.envelope import address_syntax_error, split_address
from django_inbound_smtp.exceptions import Rejected, TemporaryFailure
from django_inbound_smtp.smtp._compat import enhance as _enhance
from django_inbound_smtp.smtp._trace import new_queue_id, received_header, sanitize_helo


def test_reply_wire_format_and_classes() -> None:
    assert str(replies.MAILBOX_UNKNOWN) == "550 5.1.1 Recipient address rejected: User unknown"
    assert str(replies.RELAY_DENIED.about("v@example.net")) == (
        "550 5.7.1 <v@example.net>: Relay access denied"
    )
    assert str(replies.queued("ABC")) == "250 2.0.0 Ok: queued as ABC"
    assert replies.TEMPORARY_FAILURE.is_temporary
    assert not replies.TEMPORARY_FAILURE.is_permanent
    assert str(replies.TEMPORARY_FAILURE.with_reference("Q1")).endswith("(ref Q1)")


@pytest.mark.parametrize(
    "reply",
    [r for r in vars(replies).values() if isinstance(r, replies.Reply)],
)
def test_every_named_reply_has_a_matching_enhanced_code(reply: replies.Reply) -> None:
    # RFC 3463: the enhanced class digit matches the basic code's first digit.
    assert reply.status[0] == str(reply.code)[0]
    assert "\r" not in reply.text
    assert "\n" not in reply.text


def test_exceptions_insist_on_the_right_reply_class() -> None:
    assert Rejected().reply is replies.MAILBOX_UNKNOWN
    assert TemporaryFailure().reply is replies.LOOKUP_FAILURE
    with pytest.raises(ValueError, match="5xx"):
        Rejected(replies.LOOKUP_FAILURE)
    with pytest.raises(ValueError, match="4xx"):
        TemporaryFailure(replies.MAILBOX_UNKNOWN)


@pytest.mark.parametrize(
    ("address", "parts"),
    [
        ("User@Example.ORG", ("User", "example.org")),
        ('"a@b"@our.test', ('"a@b"', "our.test")),
        ("postmaster", ("postmaster", "")),
    ],
)
def test_split_address_uses_the_last_at(address: str, parts: tuple[str, str]) -> None:
    assert split_address(address) == parts


@pytest.mark.parametrize(
    "address",
    [
        "us\x00er@our.test",
        "us\rer@our.test",
        "us\ner@our.test",
        "x" * 65 + "@our.test",
        "u@" + "d" * 256,
        "a" * 60 + "@" + "b" * 200 + ".test",
        "postmaster",
        "@our.test",
    ],
)
def test_unusable_addresses(address: str) -> None:
    assert address_syntax_error(address) is not None


@given(st.text())
def test_no_accepted_address_carries_control_characters_or_excess_length(text: str) -> None:
    if address_syntax_error(text) is None:
        assert not set(text) & {"\x00", "\r", "\n"}
        assert len(text.encode("utf-8", "surrogateescape")) <= 254
        assert "@" in text


def test_received_header_single_recipient_and_folding() -> None:
    when = datetime(2026, 11, 29, 12, 0, tzinfo=UTC)
    header = received_header(
        helo="client.test",
        peer_host="127.0.0.1",
        hostname="mx.test",
        queue_id="Q1",
        recipients=("u@our.test",),
        esmtp=True,
        tls=False,
        when=when,
    )
    assert header == (
        b"Received: from client.test ([127.0.0.1])\r\n"
        b"\tby mx.test (django-inbound-smtp) with ESMTP id Q1\r\n"
        b"\tfor <u@our.test>; Sun, 29 Nov 2026 12:00:00 +0000\r\n"
    )


def test_received_header_hides_recipients_and_notes_tls() -> None:
    header = received_header(
        helo="c",
        peer_host=None,
        hostname="mx.test",
        queue_id="Q2",
        recipients=("a@x.test", "b@x.test"),
        esmtp=True,
        tls=True,
        when=datetime(2026, 1, 1, tzinfo=UTC),
    )
    assert b"for <" not in header
    assert b"with ESMTPS id Q2;" in header
    assert b"([unknown])" in header


def test_helo_is_sanitized() -> None:
    assert sanitize_helo("a\x00b\r\n<script>") == "ab<script>"
    assert len(sanitize_helo("x" * 600)) == 255


def test_queue_ids_are_unique_hex() -> None:
    ids = {new_queue_id() for _ in range(1000)}
    assert len(ids) == 1000
    assert all(len(i) == 16 and int(i, 16) >= 0 for i in ids)


@pytest.mark.parametrize(
    ("aiosmtpd", "ours"),
    [
        ("503 Error: need MAIL command", "503 5.5.1 Error: need MAIL command"),
        ("501 Syntax: RCPT TO: <address>", "501 5.5.4 Syntax: RCPT TO: <address>"),
        (
            '500 Error: command "FOO" not recognized',
            '500 5.5.1 Error: command "FOO" not recognized',
        ),
        (
            "552 Error: message size exceeds fixed maximum message size",
            str(replies.MESSAGE_TOO_BIG),
        ),
        ("250 2.1.5 Ok", "250 2.1.5 Ok"),
    ],
)
def test_aiosmtpd_replies_get_enhanced_codes(aiosmtpd: str, ours: str) -> None:
    assert _enhance(aiosmtpd) == ours
