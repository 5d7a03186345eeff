"""Tier 1: the header summary stored before 250, and the text view used by the admin."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from django_inbound_smtp.parsing import (
    clean_text,
    header_block,
    parse,
    summarize_headers,
    text_body,
)

FIXTURES = Path(__file__).parent / "fixtures" / "messages"


def _raw(name: str) -> bytes:
    return (FIXTURES / name).read_bytes()


def test_plain_message_summary() -> None:
    summary = summarize_headers(_raw("plain.eml"))
    assert summary.message_id == "<plain-1@example.org>"
    assert summary.subject == "Plain hello"
    assert summary.from_header == "Alice <alice@example.org>"
    assert summary.date == datetime(2026, 11, 29, 11, 0, tzinfo=UTC)
    assert summary.date.utcoffset() == timedelta(0)  # stored in UTC


@pytest.mark.parametrize(
    ("fixture", "subject"),
    [
        # hostile-inputs #76: an encoded CRLF must not survive into a stored field.
        ("encoded_crlf_subject.eml", "hello Bcc: victim@x"),
        # #77: PostgreSQL rejects NUL in text columns.
        ("nul_in_subject.eml", "ab"),
        # #83: the first of two singular headers wins.
        ("duplicate_singular_headers.eml", "one"),
        ("eight_bit_subject.eml", "Grüße raw 8-bit"),
        # #79: a bidi override could disguise the text.
        ("rtlo_subject.eml", "invoicefdp.exe"),
    ],
)
def test_hostile_subjects_are_cleaned(fixture: str, subject: str) -> None:
    assert summarize_headers(_raw(fixture)).subject == subject


def test_missing_message_id_and_bad_date_are_empty_not_errors() -> None:
    summary = summarize_headers(_raw("no_message_id_bad_date.eml"))
    assert (summary.message_id, summary.date) == ("", None)


def test_first_from_wins() -> None:
    assert (
        summarize_headers(_raw("duplicate_singular_headers.eml")).from_header == "first@example.org"
    )


def test_header_block_stops_at_the_blank_line_and_the_limit() -> None:
    raw = _raw("plain.eml")
    assert header_block(raw).endswith(b"<plain-1@example.org>\r\n")
    assert header_block(b"X: " + b"y" * 100, limit=10) == b"X: yyyyyyy"


def test_huge_header_is_bounded() -> None:
    raw = b"Subject: " + b"s" * (2 * 1024 * 1024) + b"\r\n\r\nbody\r\n"
    assert len(summarize_headers(raw).subject) <= 998


@pytest.mark.parametrize(
    ("fixture", "expected"),
    [
        ("plain.eml", "Hello there.\r\n"),
        ("iso_8859_1.eml", "café crème\r\n"),
        # #74: an unknown charset must not raise; bytes become replacement characters.
        ("unknown_charset.eml", "\ufffd\ufffd caf\ufffd\r\n"),
    ],
)
def test_text_body_decodes_with_fallbacks(fixture: str, expected: str) -> None:
    assert text_body(parse(_raw(fixture))) == expected


def test_clean_text_folds_and_bounds() -> None:
    assert clean_text("a\r\n\tb\x00c\u202ed", limit=4) == "a bc"


@pytest.mark.parametrize(
    "header",
    [
        # Found by fuzzing: each made the stdlib's structured header parser raise.
        b"Message-ID: \xe2\x80\xb9]",
        b"From: :;-\\[:",
        b"From: =@[\r\n \r\n",
        b"Subject: =?x-unknown?q?abc?=",
        b"From: " + b"a@b.test, " * 20000,
    ],
)
def test_malformed_headers_never_raise(header: bytes) -> None:
    summary = summarize_headers(header + b"\r\nSubject: kept\r\n\r\nbody\r\n")
    assert len(summary.from_header) <= 998


@pytest.mark.parametrize(
    ("date", "expected"),
    [
        ("Fri, 31 Dec 9999 23:00:00 -1400", None),
        ("Mon, 1 Jan 1900 00:00:00 +0000", None),
        ("Sun, 29 Nov 2026 12:00:00 -0000", datetime(2026, 11, 29, 12, 0, tzinfo=UTC)),
        ("Sun, 29 Nov 2026 12:00:00", datetime(2026, 11, 29, 12, 0, tzinfo=UTC)),
    ],
)
def test_dates_are_range_checked_and_made_aware(date: str, expected: datetime | None) -> None:
    raw = f"Date: {date}\r\n\r\nx\r\n".encode()
    assert summarize_headers(raw).date == expected


_header_names = st.sampled_from(["Subject", "From", "Message-ID", "Date", "X-Other"])


@settings(max_examples=300, derandomize=True)
@given(st.lists(st.tuples(_header_names, st.binary(max_size=80)), max_size=8))
def test_summary_never_raises_and_stays_display_safe(headers: list[tuple[str, bytes]]) -> None:
    raw = b"".join(name.encode() + b": " + value + b"\r\n" for name, value in headers)
    summary = summarize_headers(raw + b"\r\nbody\r\n")
    for text in (summary.subject, summary.from_header, summary.message_id):
        assert not set(text) & {"\x00", "\r", "\n"}
    assert summary.date is None or summary.date.tzinfo is not None


def test_an_encoded_word_decoding_to_a_lone_surrogate_is_dropped() -> None:
    # unicode_escape is a valid Python charset name; a surrogate cannot be stored in
    # any database text column, so it must never leave the summary.
    summary = summarize_headers(b"Subject: =?unicode_escape?q?a=5Cud800b?=\r\n\r\n")
    assert summary.subject == "ab"
    summary.subject.encode("utf-8")
