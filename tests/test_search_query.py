"""Tier 1: the admin search box's language (operators, phrases, errors), no database."""

from __future__ import annotations

from datetime import date

import pytest

from django_inbound_smtp.admin.search_query import (
    MAX_TERMS,
    SearchSyntaxError,
    Term,
    parse_search,
)

STATUSES = {"received", "processing", "processed", "failed", "duplicate"}


def parse(query: str) -> list[Term]:
    return parse_search(query, statuses=STATUSES)


def test_every_operator_and_words_combine() -> None:
    assert parse(
        'from:alice@example.org to:support@ subject:"monthly report" has:attachment '
        "is:failed status:received before:2026-02-01 after:2026-01-01 invoice"
    ) == [
        Term("from", "alice@example.org"),
        Term("to", "support@"),
        Term("subject", "monthly report"),
        Term("attachment", "yes"),
        Term("status", "failed"),
        Term("status", "received"),
        Term("before", date(2026, 2, 1)),
        Term("after", date(2026, 1, 1)),
        Term("text", "invoice"),
    ]


def test_quoted_phrases_are_one_term_and_unclosed_quotes_run_to_the_end() -> None:
    assert parse('"grüße aus köln"  bill') == [Term("text", "grüße aus köln"), Term("text", "bill")]
    assert parse('"open phrase to the end') == [Term("text", "open phrase to the end")]
    assert parse('subject:"a b" c') == [Term("subject", "a b"), Term("text", "c")]


def test_operator_names_ignore_case_and_status_values_are_lowered() -> None:
    assert parse("FROM:Bob IS:Failed Has:Attachments") == [
        Term("from", "Bob"),
        Term("status", "failed"),
        Term("attachment", "yes"),
    ]


@pytest.mark.parametrize(
    "query",
    ["Re: meeting", "10:30", "https://example.org/a", '"from:alice"', "x:y", ":"],
)
def test_a_colon_that_is_no_operator_is_part_of_a_word(query: str) -> None:
    terms = parse(query)
    assert terms
    assert all(term.kind == "text" for term in terms)
    assert " ".join(str(t.value) for t in terms) == query.replace('"', "")


def test_empty_and_blank_searches_have_no_terms() -> None:
    assert parse("") == []
    assert parse('   ""  ') == []


@pytest.mark.parametrize(
    ("query", "message"),
    [
        ("before:notadate", "before: needs a date written YYYY-MM-DD"),
        ("after:2026-13-01", "after: needs a date written YYYY-MM-DD"),
        ("after:20260101", "after: needs a date written YYYY-MM-DD"),
        ("before:2026-W05-1", "before: needs a date written YYYY-MM-DD"),
        ("has:pictures", "has: knows only has:attachment"),
        ("is:spam", "is: is one of duplicate, failed, processed, processing, received"),
        ("status:", "status: needs a value"),
        ('from:""', "from: needs a value"),
        ("subject:", "subject: needs a value"),
    ],
)
def test_a_known_operator_with_a_bad_value_is_an_error_staff_can_read(
    query: str, message: str
) -> None:
    with pytest.raises(SearchSyntaxError) as raised:
        parse(query)
    assert str(raised.value).startswith(message)


def test_too_many_terms_is_an_error() -> None:
    assert len(parse(" ".join(["w"] * MAX_TERMS))) == MAX_TERMS
    with pytest.raises(SearchSyntaxError, match="at most"):
        parse(" ".join(["w"] * (MAX_TERMS + 1)))
