"""Tier 1: the kinds classifier, the DSN reader and the non-DSN bounce readers, on the
fixture corpus (``tests/fixtures/{bounces,auto_replies,kinds}``); ``kinds.handles``."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from django_inbound_smtp import kinds
from django_inbound_smtp.parsing.dsn import address_of, parse_delivery_status, status_of
from django_inbound_smtp.parsing.kinds import KINDS, Classification, classify
from django_inbound_smtp.parsing.mime import parse_message

FIXTURES = Path(__file__).parent / "fixtures"
OUR_HOST = "mx.app.example"
OUR_ADDRESS = "support@app.example"
SOMEONE = "someone@remote.example"


def _classify(name: str, *, envelope_from: str = SOMEONE, **options: object) -> Classification:
    raw = (FIXTURES / name).read_bytes().replace(b"\r\n", b"\n").replace(b"\n", b"\r\n")
    return classify(
        parse_message(raw),
        envelope_from=envelope_from,
        own_hosts=options.get("own_hosts", {OUR_HOST}),  # type: ignore[arg-type]
        own_addresses=[OUR_ADDRESS],
        max_own_hops=options.get("max_own_hops", 3),  # type: ignore[arg-type]
    )


# fixture, envelope sender, kind. Bounces come from the null sender, except where the
# From alone (a postmaster, Exchange's MicrosoftExchange...) must be enough.
TABLE = [
    ("bounces/postfix.eml", "", "bounce"),
    ("bounces/exim_dsn.eml", "", "bounce"),
    ("bounces/exim_plain.eml", "", "bounce"),
    ("bounces/exim_delay.eml", "", "bounce"),
    ("bounces/qmail.eml", "", "bounce"),
    ("bounces/sendmail_old.eml", "MAILER-DAEMON@relay.remote.example", "bounce"),
    ("bounces/sendmail_dsn.eml", "", "bounce"),
    ("bounces/gmail_failure.eml", "", "bounce"),
    ("bounces/gmail_delay.eml", "", "bounce"),
    ("bounces/exchange_dsn.eml", "", "bounce"),
    ("bounces/exchange_2003.eml", "postmaster@legacy.example", "bounce"),
    ("bounces/outlook_com.eml", "", "bounce"),
    ("auto_replies/exchange_oof_en.eml", SOMEONE, "auto_reply"),
    ("auto_replies/exchange_oof_de.eml", SOMEONE, "auto_reply"),
    ("auto_replies/outlook_2003_abwesenheitsnotiz.eml", SOMEONE, "auto_reply"),
    ("auto_replies/outlook_fr.eml", SOMEONE, "auto_reply"),
    ("auto_replies/outlook_es.eml", SOMEONE, "auto_reply"),
    ("auto_replies/outlook_it.eml", SOMEONE, "auto_reply"),
    ("auto_replies/outlook_nl.eml", SOMEONE, "auto_reply"),
    ("auto_replies/outlook_pt.eml", SOMEONE, "auto_reply"),
    ("auto_replies/outlook_ru.eml", SOMEONE, "auto_reply"),
    ("auto_replies/outlook_ja.eml", SOMEONE, "auto_reply"),
    ("auto_replies/gmail_vacation.eml", "", "auto_reply"),
    ("auto_replies/sieve_vacation.eml", "", "auto_reply"),
    ("auto_replies/exim_autoreply.eml", SOMEONE, "auto_reply"),
    ("auto_replies/cpanel_autorespond.eml", SOMEONE, "auto_reply"),
    ("auto_replies/qmail_precedence_auto_reply.eml", SOMEONE, "auto_reply"),
    ("auto_replies/lotus_notes.eml", SOMEONE, "auto_reply"),
    ("auto_replies/read_receipt.eml", SOMEONE, "auto_reply"),
    ("kinds/list_id.eml", SOMEONE, "list"),
    ("kinds/precedence_bulk.eml", SOMEONE, "list"),
    ("kinds/loop_received.eml", SOMEONE, "loop"),
    ("kinds/x_loop.eml", OUR_ADDRESS, "loop"),
    ("kinds/regular.eml", SOMEONE, "regular"),
    # "Re: Out of office party", List-Unsubscribe without Precedence, a quoted bounce text
    ("kinds/regular_reply.eml", SOMEONE, "regular"),
    # "Automatic reply: ..." written by a person who says so (Auto-Submitted: no)
    ("kinds/auto_submitted_no.eml", SOMEONE, "regular"),
    # A person forwarding a bounce's text is not a bounce
    ("kinds/forwarded_bounce.eml", SOMEONE, "regular"),
]


def test_the_table_covers_every_fixture() -> None:
    on_disk = {
        str(path.relative_to(FIXTURES))
        for folder in ("bounces", "auto_replies", "kinds")
        for path in (FIXTURES / folder).glob("*.eml")
    }
    assert on_disk == {name for name, _sender, _kind in TABLE}


@pytest.mark.parametrize(("name", "envelope_from", "kind"), TABLE, ids=[t[0] for t in TABLE])
def test_every_fixture_is_classified_right(name: str, envelope_from: str, kind: str) -> None:
    result = _classify(name, envelope_from=envelope_from)
    assert result.kind == kind, result
    assert result.reason or kind == "regular"
    assert bool(result.bounced) == (kind == "bounce")


# fixture → [(recipient, action, status, in the diagnostic, remote MTA)], returned Message-ID
ROWS = {
    # Captured from a real Postfix by tests/test_postfix_bounce.py
    "bounces/postfix.eml": (
        [("gone@remote.test", "failed", "5.1.1", "Recipient address rejected", "127.0.0.1")],
        "<summary-1@app.test>",
    ),
    "bounces/exim_dsn.eml": (
        [("gone@remote.example", "failed", "5.1.1", "User unknown", "mail.remote.example")],
        "<summary-42@app.example>",
    ),
    "bounces/exim_plain.eml": (
        [("old.user@remote.example", "failed", "5.1.1", "User unknown", "mail.remote.example")],
        "<reset-7@app.example>",
    ),
    "bounces/exim_delay.eml": (
        [("slow@remote.example", "delayed", "4.2.2", "Mailbox full", "mail.remote.example")],
        "<invoice-2025-12@app.example>",
    ),
    "bounces/qmail.eml": (
        [("nobody@remote.example", "failed", "5.1.1", "User unknown", "192.0.2.40")],
        "<welcome-9@app.example>",
    ),
    "bounces/sendmail_old.eml": (
        [("jdoe@remote.example", "failed", "5.1.1", "User unknown", "mail.remote.example")],
        "<order-77@app.example>",
    ),
    "bounces/sendmail_dsn.eml": (
        [("left@remote.example", "failed", "5.2.1", "Mailbox disabled", "mail.remote.example")],
        "<reminder-3@app.example>",
    ),
    "bounces/gmail_failure.eml": (
        [
            (
                "nonexistent.person@gmail.example",
                "failed",
                "5.1.1",
                "does not exist",
                "gmail-smtp-in.l.google.example",
            )
        ],
        "<digest-5@app.example>",
    ),
    "bounces/gmail_delay.eml": (
        [("busy@remote.example", "delayed", "4.4.1", "did not accept", "")],
        "<notes-1@app.example>",
    ),
    "bounces/exchange_dsn.eml": (
        [("former.employee@corp.remote.example", "failed", "5.1.1", "RecipNotFound", "")],
        "<ticket-update-12@app.example>",
    ),
    "bounces/exchange_2003.eml": (
        [("m.rossi@legacy.example", "failed", "5.1.1", "User unknown", "mx.legacy.example")],
        "",
    ),
    "bounces/outlook_com.eml": (
        [("someone@tenant.outlook.example", "failed", "5.1.10", "RecipientNotFound", "")],
        "<receipt-100@app.example>",
    ),
}


@pytest.mark.parametrize("name", sorted(ROWS))
def test_bounce_rows_are_read_for_each_format(name: str) -> None:
    expected, message_id = ROWS[name]
    result = _classify(name, envelope_from="")
    got = [(r.recipient, r.action, r.status, r.remote_mta) for r in result.bounced]
    assert got == [(a, action, status, mta) for a, action, status, _d, mta in expected]
    for row, (*_head, diagnostic, _mta) in zip(result.bounced, expected, strict=True):
        assert diagnostic in row.diagnostic_code
    assert result.original_message_id == message_id


def test_a_non_dsn_bounce_from_a_person_is_not_a_bounce() -> None:
    # qmail's text, from a person's address and a real envelope sender: someone quoting.
    raw = (
        (FIXTURES / "bounces/qmail.eml")
        .read_bytes()
        .replace(b"From: MAILER-DAEMON@mail.remote.example", b"From: Jane <jane@remote.example>")
    )
    parsed = parse_message(raw)
    assert classify(parsed, envelope_from="jane@remote.example", own_hosts=()).kind == "regular"
    assert classify(parsed, envelope_from="", own_hosts=()).kind == "bounce"


def test_loops_need_more_than_the_limit_of_our_own_hops() -> None:
    # Four of our Received: lines (one spelled MX.APP.EXAMPLE.): a loop above 3, not at 4.
    assert _classify("kinds/loop_received.eml").reason.startswith("our host in 4 Received")
    assert _classify("kinds/loop_received.eml", max_own_hops=4).kind == "regular"
    assert _classify("kinds/loop_received.eml", own_hosts={"other.example"}).kind == "regular"


def test_x_loop_names_our_host_as_a_whole_word() -> None:
    raw = b"From: a@b.example\r\nX-Loop: list@notmx.app.example\r\nSubject: x\r\n\r\nx\r\n"
    parsed = parse_message(raw)
    assert classify(parsed, envelope_from="a@b.example", own_hosts={OUR_HOST}).kind == "regular"
    named = parse_message(raw.replace(b"notmx.app.example", b"mx.app.example"))
    assert classify(named, envelope_from="a@b.example", own_hosts={OUR_HOST}).kind == "loop"


def test_a_loop_wins_over_a_bounce_and_a_bounce_over_an_auto_reply() -> None:
    dsn = (FIXTURES / "bounces/exim_dsn.eml").read_bytes()
    assert b"Auto-Submitted: auto-replied" in dsn  # also an auto-reply: the bounce wins
    assert classify(parse_message(dsn), envelope_from="", own_hosts=()).kind == "bounce"
    looped = b"X-Loop: mx.app.example\n" + dsn
    assert classify(parse_message(looped), envelope_from="", own_hosts={OUR_HOST}).kind == "loop"
    # An auto-reply that also says Precedence: bulk (vacation programs do) is an auto-reply.
    assert _classify("auto_replies/sieve_vacation.eml").kind == "auto_reply"


@pytest.mark.parametrize(
    ("subject", "kind"),
    [
        ("Out of Office: Ticket #12", "auto_reply"),
        ("Out of Office AutoReply: Ticket #12", "auto_reply"),
        ("Automatic reply: Ticket #12", "auto_reply"),
        ("Out of office", "auto_reply"),
        ("AUTO: Pat is out of the office", "auto_reply"),
        ("Out of office party on Friday", "regular"),
        ("Re: Automatic reply: Ticket #12", "regular"),
        ("Automatically generated invoices", "regular"),
    ],
)
def test_out_of_office_subjects_must_lead_and_end_in_a_colon(subject: str, kind: str) -> None:
    raw = f"From: a@b.example\r\nSubject: {subject}\r\n\r\nx\r\n".encode()
    assert classify(parse_message(raw), envelope_from="a@b.example", own_hosts=()).kind == kind


def test_auto_submitted_no_is_a_person() -> None:
    raw = b"From: a@b.example\r\nAuto-Submitted: no\r\nSubject: hello\r\n\r\nx\r\n"
    assert classify(parse_message(raw), envelope_from="a@b.example", own_hosts=()).kind == (
        "regular"
    )
    hint = raw.replace(b"no\r\n", b"No (a person wrote this)\r\nX-Auto-Response-Suppress: All\r\n")
    assert classify(parse_message(hint), envelope_from="a@b.example", own_hosts=()).kind == (
        "regular"
    )


def test_the_delivery_status_reader() -> None:
    payload = (
        b"Reporting-MTA: dns; mx.example\r\n\r\n"
        b"Original-Recipient: rfc822;<First@Example.org>\r\n"
        b"Final-Recipient: RFC822; first@example.org\r\n"
        b"Action: Failed\r\nStatus: 5.1.1 (bad mailbox)\r\n"
        b"Diagnostic-Code: smtp; 550 5.1.1\r\n  folded\tcontinuation\r\n"
        b"Remote-MTA: dns; mx.remote.example. [192.0.2.1]\r\n\r\n"
        b"Final-Recipient: rfc822; second@example.org\r\nAction: shouting\r\nStatus: 4.4.7\r\n\r\n"
        b"Final-Recipient: x400; no address here\r\nAction: failed\r\nStatus: 5.0.0\r\n"
    )
    rows = parse_delivery_status(payload)
    assert [(r.recipient, r.final_recipient, r.action, r.status) for r in rows] == [
        ("First@Example.org", "first@example.org", "failed", "5.1.1"),
        ("second@example.org", "second@example.org", "delayed", "4.4.7"),
    ]
    assert rows[0].diagnostic_code == "smtp; 550 5.1.1 folded continuation"
    assert rows[0].remote_mta == "mx.remote.example"
    assert rows[0].failed
    assert not rows[1].failed
    assert address_of("utf-8; <Jörg@example.org>") == "Jörg@example.org"
    assert status_of("550-5.7.26 unauthenticated") == "5.7.26"


@pytest.mark.parametrize(
    "payload",
    [b"", b"\x00\xff" * 1000, b"Final-Recipient:\r\n\r\n" * 2000, b"Action: failed\r\n" * 5000],
)
def test_the_delivery_status_reader_takes_anything(payload: bytes) -> None:
    rows = parse_delivery_status(payload)
    assert all(row.recipient for row in rows)


def test_a_hostile_bounce_is_bounded() -> None:
    many = b"".join(
        b"Final-Recipient: rfc822; u%d@example.org\r\nAction: failed\r\nStatus: 5.1.1\r\n\r\n" % i
        for i in range(600)  # within PARSE_MAX_PARTS; more rows than MAX_ROWS
    )
    raw = (
        b"From: MAILER-DAEMON@x.example\r\nContent-Type: multipart/report; "
        b'report-type=delivery-status; boundary="b"\r\n\r\n--b\r\n'
        b"Content-Type: message/delivery-status\r\n\r\n" + many + b"\r\n--b--\r\n"
    )
    result = classify(parse_message(raw), envelope_from="", own_hosts=())
    assert result.kind == "bounce"
    assert len(result.bounced) == 500


def test_handles_filters_receivers_and_declares_kinds() -> None:
    calls = []

    @kinds.handles(kinds={kinds.BOUNCE})
    def on_bounce(*, message: object, **kwargs: object) -> str:
        calls.append(message)
        return "ran"

    class Message:
        def __init__(self, kind: str) -> None:
            self.kind = kind

    assert on_bounce(message=Message("regular")) is None
    bounce = Message("bounce")
    assert on_bounce(message=bounce) == "ran"
    assert calls == [bounce]
    assert kinds.kinds_of(on_bounce) == {"bounce"}
    assert kinds.accepts(on_bounce, "bounce")
    assert not kinds.accepts(on_bounce, "regular")

    def undecorated(**kwargs: object) -> None: ...

    assert kinds.kinds_of(undecorated) == kinds.DEFAULT_HANDLER_KINDS == {"regular", "list"}
    assert not kinds.accepts(undecorated, "auto_reply")

    class Task:  # what a Celery task looks like to handles(): not a plain function
        def __call__(self) -> None: ...

        def run(self) -> None: ...

    task = kinds.handles(kinds={"regular", "auto_reply"})(Task())
    assert kinds.kinds_of(task) == {"regular", "auto_reply"}


@pytest.mark.parametrize(
    "asked", [{"loop"}, {"regular", "loop"}, {"bounces"}, set()], ids=["loop", "mixed", "typo", "0"]
)
def test_handles_refuses_loops_and_unknown_kinds(asked: set[str]) -> None:
    with pytest.raises(ValueError, match="loop|unknown|empty"):
        kinds.handles(kinds=asked)


def test_a_loop_is_accepted_by_no_handler() -> None:
    class Everything:
        inbound_smtp_kinds = frozenset(KINDS)  # set by hand, past handles()'s refusal

    assert not kinds.accepts(Everything(), "loop")
    assert kinds.accepts(Everything(), "bounce")


def test_a_celery_task_declares_the_kinds_of_its_function() -> None:
    from celery import Celery, shared_task

    Celery("kinds-test")  # shared_task binds to whatever app there is

    @shared_task(name="tests.kinds.bounce_task")
    @kinds.handles(kinds={kinds.BOUNCE})
    def bounce_task(message_pk: int, mailbox_pk: int) -> None: ...

    assert kinds.kinds_of(bounce_task) == {"bounce"}
    assert kinds.accepts(bounce_task, "bounce")
    assert not kinds.accepts(bounce_task, "regular")


HOSTILE_BODIES = {
    "a long token": b"a" * 60000,
    "a long host name": b"host " + b"a." * 30000,
    "many at signs": b"a@" * 30000,
    "a long domain": b"a@" + b"a" * 60000,
    "many hosts": b"x@y.example 550 host " * 3000,
}


@pytest.mark.parametrize("body", list(HOSTILE_BODIES.values()), ids=list(HOSTILE_BODIES))
def test_hostile_bounce_texts_are_read_in_linear_time(body: bytes) -> None:
    # Each of these took 2 to 15 s with an unbounded repeat in an address or host pattern.
    head = b"From: MAILER-DAEMON@x.example\r\nSubject: failure notice\r\n"
    for raw in (
        head + b"\r\n" + body + b"\r\n",
        head + b"Content-Type: text/html\r\n\r\n" + b"<" * 60000 + body + b"\r\n",
    ):
        parsed = parse_message(raw)
        started = time.monotonic()
        assert classify(parsed, envelope_from="", own_hosts=()).kind == "bounce"
        assert time.monotonic() - started < 0.5


@settings(max_examples=150, derandomize=True, deadline=None)
@given(
    head=st.sampled_from(
        [
            b"From: MAILER-DAEMON@x.example\r\nSubject: Returned mail: x\r\n\r\n",
            b"Content-Type: multipart/report; report-type=delivery-status; boundary=b\r\n\r\n"
            b"--b\r\nContent-Type: message/delivery-status\r\n\r\n",
            b"Subject: Automatic reply: x\r\nX-Loop: \r\n\r\n",
        ]
    ),
    body=st.binary(max_size=2000),
)
def test_classify_takes_any_bytes_and_bounds_what_it_keeps(head: bytes, body: bytes) -> None:
    result = classify(parse_message(head + body), envelope_from="", own_hosts={OUR_HOST})
    assert result.kind in KINDS
    assert len(result.reason) <= 200
    for row in result.bounced:
        assert len(row.final_recipient) <= 254
        assert len(row.original_recipient) <= 254
        assert len(row.status) <= 16
        assert len(row.diagnostic_code) <= 1000
        assert len(row.remote_mta) <= 255
        assert "\x00" not in row.diagnostic_code + row.final_recipient
