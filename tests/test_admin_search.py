"""Tier 2: the message list's search (words, operators, ranking) and its query counts.

Runs on both databases; the full-text ranking test needs PostgreSQL
(``INBOUND_TEST_DB=postgres``). Query counts are asserted, never timings: the pages'
speed at 100,000 messages is measured by ``benchmarks/admin_speed.py``.
"""

from __future__ import annotations

import itertools
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from django.db import connection
from django.test import Client
from django.test.utils import CaptureQueriesContext
from django.urls import reverse

from django_inbound_smtp import store
from django_inbound_smtp.admin import _addresses, search
from django_inbound_smtp.lifecycle.extract import extract
from django_inbound_smtp.models import Attachment, InboundMessage, InboundRecipient, Mailbox
from tests.helpers import received_envelope

LIST = "admin:inbound_smtp_inboundmessage_changelist"
postgres_only = pytest.mark.skipif(
    connection.vendor != "postgresql", reason="full-text search is PostgreSQL's"
)
_ids = itertools.count()
NOW = datetime(2026, 6, 15, 12, 0, tzinfo=UTC)


def make(
    *,
    subject: str = "hello",
    text: str = "",
    html: str = "",
    sender: str = "someone@sender.test",
    to: tuple[str, ...] = ("user@our.test",),
    files: tuple[str, ...] = (),
    status: str = "processed",
    age: timedelta = timedelta(0),
) -> InboundMessage:
    """A stored, parsed message row with its recipients and attachment rows."""
    number = next(_ids)
    message = InboundMessage.objects.create(
        queue_id=f"Q{number:08d}",
        status=status,
        envelope_from=sender,
        from_header=sender,
        size=100,
        raw_file=f"none/{number}.eml",
        subject=subject,
        text=text,
        html=html,
        received_at=NOW - age,
        parsed_at=NOW - age,
        message_id=f"<m{number}@sender.test>",
    )
    InboundRecipient.objects.bulk_create(
        InboundRecipient(message=message, address=address) for address in to
    )
    Attachment.objects.bulk_create(
        Attachment(
            message=message,
            position=position,
            filename=name,
            file=f"none/{number}-{position}",
            content_type="application/octet-stream",
            size=1,
            sha256="0" * 64,
        )
        for position, name in enumerate(files)
    )
    return message


def listed(staff: Client, query: str, **params: str) -> list[InboundMessage]:
    page = staff.get(reverse(LIST), {"q": query, **params})
    assert page.status_code == 200
    return list(page.context["cl"].result_list)


def subjects(staff: Client, query: str, **params: str) -> list[str]:
    return [message.subject for message in listed(staff, query, **params)]


def test_a_word_of_the_body_finds_a_message_stored_and_parsed_for_real(staff: Client) -> None:
    raw = (
        b"From: Hans <hans@firma.test>\r\nSubject: Lieferung\r\n"
        b"Content-Type: text/plain; charset=utf-8\r\n\r\n"
    ) + "Die Sendung ist unterwegs nach Köln, Zollnummer ZX4711.\r\n".encode()
    envelope = received_envelope("QREAL01", mail_from="hans@firma.test")
    message = InboundMessage.objects.get(pk=store.store_message(envelope, raw))
    make(subject="other", text="nothing here")
    assert subjects(staff, "ZX4711") == []  # not parsed yet: no body to search
    assert extract(message)
    assert subjects(staff, "ZX4711") == ["Lieferung"]
    assert subjects(staff, "köln") == ["Lieferung"]
    assert subjects(staff, '"nach Köln"') == ["Lieferung"]


def test_words_search_the_message_s_own_fields(staff: Client) -> None:
    invoice = make(
        subject="Invoice 42",
        text="please pay",
        sender="billing@acme.test",
        to=("alice@our.test", "bcc-box@our.test"),
        files=("statement.pdf",),
    )
    invoice.addresses = {"to": [["Alice Example", "alice@our.test"]], "cc": []}
    invoice.save(update_fields=["addresses"])
    make(subject="Lunch", text="pizza at noon", sender="bob@food.test")
    make(subject="", html="<style>p { x: quarterly-css }</style><p>Only <b>HTML</b> quarterly</p>")
    for query in (
        "invoice",
        "pay",
        "billing@acme.test",
        "acme",
        invoice.queue_id,
        "Invoice please",
        "alice",  # To header: address and name
        '"Alice Example"',
    ):
        assert subjects(staff, query) == ["Invoice 42"], query
    assert subjects(staff, "quarterly") == [""]
    assert subjects(staff, "invoice pizza") == []  # every word must match
    # Envelope-only recipients and attachment names have their operators.
    assert subjects(staff, "bcc-box") == []
    assert subjects(staff, "to:bcc-box") == ["Invoice 42"]
    assert subjects(staff, "statement.pdf") == []
    assert subjects(staff, "filename:statement") == ["Invoice 42"]


def test_operators_narrow_the_list(staff: Client) -> None:
    make(subject="Invoice March", sender="billing@acme.test", files=("a.pdf",), age=timedelta(90))
    make(subject="Invoice June", sender="billing@acme.test", status="failed")
    make(subject="Newsletter", sender="news@letters.test", to=("support@our.test",))
    assert subjects(staff, "from:acme") == ["Invoice June", "Invoice March"]
    assert subjects(staff, "from:acme is:failed") == ["Invoice June"]
    assert subjects(staff, "status:processed from:billing") == ["Invoice March"]
    assert subjects(staff, "has:attachment") == ["Invoice March"]
    assert subjects(staff, "to:support@") == ["Newsletter"]
    assert subjects(staff, 'subject:"invoice jun"') == ["Invoice June"]
    assert subjects(staff, "before:2026-06-01") == ["Invoice March"]
    assert subjects(staff, "after:2026-06-01 invoice") == ["Invoice June"]
    assert subjects(staff, "after:2026-06-16") == []


def test_to_matches_envelope_recipients_however_many_addresses_contain_the_text(
    staff: Client, monkeypatch: pytest.MonkeyPatch
) -> None:
    make(subject="a", to=("sales@our.test",))
    make(subject="b", to=("sales+eu@our.test", "x@our.test"))
    make(subject="c", to=("support@our.test",))
    assert subjects(staff, "to:sales") == ["b", "a"]  # exact match on the addresses found
    monkeypatch.setattr(search, "_MAX_ADDRESSES", 1)
    assert subjects(staff, "to:sales") == ["b", "a"]  # too many addresses: containment
    assert subjects(staff, "to:SUPPORT@") == ["c"]


@pytest.mark.parametrize(
    "walk_limit", [1000, 5, 4, 1], ids=["walk", "walk-ends-before-limit", "limit-reached", "scan"]
)
def test_to_finds_the_same_addresses_whether_walked_or_scanned(
    staff: Client, monkeypatch: pytest.MonkeyPatch, walk_limit: int
) -> None:
    # Four distinct addresses (one twice, one differing in case): a walk limit above 4
    # walks them all, 4 and 1 stop the walk and scan the rows instead (on SQLite the
    # rows are always scanned).
    monkeypatch.setattr(_addresses, "WALK_LIMIT", walk_limit)
    make(subject="a", to=("sales@our.test", "x_y@our.test"))
    make(subject="b", to=("Sales@our.test",))
    make(subject="c", to=("sales@our.test", "support@our.test"))
    assert subjects(staff, "to:sales") == ["c", "b", "a"]
    assert subjects(staff, "to:SUPPORT") == ["c"]
    assert subjects(staff, "to:x_y") == ["a"]
    assert subjects(staff, "to:s_les") == []  # _ and % are characters, not wildcards
    assert subjects(staff, "to:%") == []
    assert subjects(staff, "to:nobody") == []


def test_to_on_an_empty_recipient_table_lists_nothing(staff: Client) -> None:
    assert subjects(staff, "to:sales") == []


def test_a_malformed_operator_is_a_message_not_an_error_page(staff: Client) -> None:
    make(subject="anything")
    for query, text in (
        ("before:notadate", "Search not understood: before: needs a date written YYYY-MM-DD"),
        ("is:spam", "Search not understood: is: is one of"),
    ):
        page = staff.get(reverse(LIST), {"q": query})
        assert page.status_code == 200
        assert page.context["cl"].result_count == 0
        assert text in page.content.decode()


def test_a_search_with_words_matching_too_many_lists_the_newest(
    staff: Client, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(search, "MAX_MATCHES", 3)
    for day in range(5):
        make(subject=f"report {day}", age=timedelta(days=day))
    page = staff.get(reverse(LIST), {"q": "report"})
    assert sorted(m.subject for m in page.context["cl"].result_list) == [
        "report 0",
        "report 1",
        "report 2",
    ]
    assert "More than 3 messages match" in page.content.decode()
    assert "More than 3" not in staff.get(reverse(LIST), {"q": "report 4"}).content.decode()


def test_date_drill_down_of_a_searched_list(staff: Client) -> None:
    make(subject="invoice new")
    make(subject="invoice old", age=timedelta(days=400))
    make(subject="unrelated", age=timedelta(days=800))
    content = staff.get(reverse(LIST), {"q": "invoice"}).content.decode()
    # The drill-down offers the years of the matches, not those of every message.
    assert "received_at__year=2025" in content
    assert "received_at__year=2026" in content
    assert "received_at__year=2024" not in content
    assert subjects(staff, "invoice", received_at__year="2025") == ["invoice old"]
    assert subjects(staff, "from:sender is:processed", received_at__year="2024") == ["unrelated"]


@postgres_only
def test_full_text_ranks_a_word_in_subject_and_body_above_one_in_the_body(
    staff: Client,
) -> None:
    make(subject="Weekly notes", text="the shipment left", age=timedelta(0))
    make(subject="Shipment delayed", text="your shipment is late", age=timedelta(days=2))
    make(subject="Shipment", text="nothing else", age=timedelta(days=1))
    assert subjects(staff, "shipment") == ["Shipment delayed", "Shipment", "Weekly notes"]
    # A column the staff sorts by wins over the rank.
    assert subjects(staff, "shipment", o="-1") == [
        "Weekly notes",
        "Shipment",
        "Shipment delayed",
    ]


@postgres_only
def test_the_full_text_column_follows_the_row_and_a_huge_body_still_stores(
    staff: Client,
) -> None:
    message = make(subject="first", text="alpha")
    assert subjects(staff, "alpha") == ["first"]
    InboundMessage.objects.filter(pk=message.pk).update(subject="second", text="beta")
    assert subjects(staff, "alpha") == []
    assert subjects(staff, "beta") == ["second"]
    # 150,000 distinct words: more than a tsvector holds (1 MiB of words). Only the first
    # 100,000 characters are indexed, so the row stores and its start is searchable.
    huge = " ".join(f"w{index}" for index in range(150_000))
    make(subject="huge", text=huge)
    assert subjects(staff, "w10") == ["huge"]
    assert subjects(staff, "w149999") == []


# Query counts: the same for 5 and 50 messages (no query per row) -------------------


def _queries(client: Client, url: str, params: dict[str, Any] | None = None) -> int:
    with CaptureQueriesContext(connection) as captured:
        response = client.get(url, params or {})
    assert response.status_code == 200
    return len(captured.captured_queries)


def _fill(count: int) -> None:
    mailbox = Mailbox.objects.get_or_create(address="user@our.test")[0]
    for index in range(count):
        message = make(
            subject=f"invoice {index}",
            text="total due",
            to=("user@our.test", "other@our.test"),
            files=("a.pdf",),
            status="failed" if index % 2 else "processed",
            age=timedelta(days=index * 9),
        )
        message.recipients.update(mailbox=mailbox)


@pytest.mark.parametrize(
    "params",
    [
        {},
        {"q": "invoice"},
        {"q": "from:someone has:attachment is:failed"},
        {"q": "invoice", "received_at__year": "2026"},
        {"q": "due", "status__exact": "failed"},
    ],
    ids=["changelist", "words", "operators", "drill-down", "filtered"],
)
def test_the_list_needs_the_same_queries_for_5_and_50_messages(
    staff: Client, params: dict[str, str]
) -> None:
    url = reverse(LIST)
    _fill(5)
    few = _queries(staff, url, params)
    _fill(45)
    assert _queries(staff, url, params) == few
    assert few <= 16


def test_the_detail_page_needs_a_bounded_number_of_queries(staff: Client) -> None:
    small = make(subject="one", to=("a@our.test",), files=("a.pdf",))
    large = make(
        subject="many",
        to=tuple(f"r{i}@our.test" for i in range(30)),
        files=tuple(f"f{i}.pdf" for i in range(20)),
    )

    def detail(message: InboundMessage) -> int:
        url = reverse("admin:inbound_smtp_inboundmessage_change", args=[message.pk])
        return _queries(staff, url)

    detail(small)  # the first page of a session loads more (content types)
    assert detail(large) == detail(small)
    assert detail(large) <= 12
