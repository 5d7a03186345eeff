"""Routing: the first matching route names the handler; ``inbound_route`` explains it."""

from __future__ import annotations

from io import StringIO
from pathlib import Path
from typing import Any

import pytest
from django.core.checks import run_checks
from django.core.management import CommandError, call_command
from django.test import override_settings

from django_inbound_smtp import routing
from django_inbound_smtp.models import InboundMessage, InboundRecipient, Mailbox
from django_inbound_smtp.testing import deliver, running_server
from tests.helpers import GuardedSMTP, receiver_connected

CALLS: list[dict[str, Any]] = []


def ticket_handler(*, message: InboundMessage, recipients: list[InboundRecipient], **kwargs: Any):
    CALLS.append(
        {
            "handler": "ticket",
            "subject": message.subject,
            "route": kwargs["route"].name,
            "recipients": [r.address for r in recipients],
            "mailbox": kwargs["mailbox"].address if kwargs["mailbox"] else None,
        }
    )


def list_handler(*, message: InboundMessage, recipients: list[InboundRecipient], **kwargs: Any):
    CALLS.append({"handler": "list", "subject": message.subject, "route": kwargs["route"].name})


def mailbox_handler(*, message: InboundMessage, **kwargs: Any) -> None:
    CALLS.append({"handler": "mailbox", "subject": message.subject, "route": kwargs["route"].name})


ROUTES: list[dict[str, Any]] = [
    {
        "name": "lists",
        "headers": {"List-Id": "*<dev.lists.example.org>"},
        "handler": f"{__name__}.list_handler",
    },
    {"name": "tickets", "address": "ticket+*@our.test", "handler": f"{__name__}.ticket_handler"},
    {"name": "bug reports", "tag": "bug", "handler": f"{__name__}.ticket_handler"},
]


@pytest.fixture(autouse=True)
def _calls():
    CALLS.clear()
    yield
    CALLS.clear()


def _candidate(address: str, **fields: Any) -> routing.Candidate:
    return routing.Candidate(address=address, **fields)


def _routes(entries: list[dict[str, Any]]) -> list[routing.Route]:
    return [routing.parse_route(entry, position=n) for n, entry in enumerate(entries, start=1)]


def test_first_matching_route_wins_and_the_trace_says_why() -> None:
    routes = _routes(ROUTES)
    decision = routing.explain(
        _candidate(
            "Ticket+42@OUR.test", tag="42", headers=[("List-Id", "Dev <dev.lists.example.org>")]
        ),
        routes,
    )
    assert decision.route is not None
    assert decision.route.name == "lists"  # first, although tickets matches too
    assert decision.trace == [
        (
            "lists",
            True,
            ["List-Id 'Dev <dev.lists.example.org>' matches '*<dev.lists.example.org>'"],
        )
    ]

    decision = routing.explain(_candidate("ticket+42@our.test", tag="42"), routes)
    assert decision.route is not None
    assert decision.route.name == "tickets"
    assert decision.trace[0] == (
        "lists",
        False,
        ["no List-Id header (wanted '*<dev.lists.example.org>')"],
    )
    assert decision.trace[1][1] is True


def test_tag_kind_and_presence_conditions() -> None:
    [bug] = _routes([{"tag": "bug", "handler": "x"}])
    assert bug.check(_candidate("a+bug@our.test", tag="bug"))[0]
    assert not bug.check(_candidate("a+bugs@our.test", tag="bugs"))[0]
    [untagged] = _routes([{"tag": "", "handler": "x"}])
    assert untagged.check(_candidate("a@our.test"))[0]
    assert not untagged.check(_candidate("a+x@our.test", tag="x"))[0]
    [present] = _routes([{"headers": {"X-Kind": "*"}, "handler": "x"}])
    assert present.check(_candidate("a@our.test", headers=[("x-kind", "")]))[0]
    assert not present.check(_candidate("a@our.test"))[0]
    [regular] = _routes([{"kinds": ["regular"], "handler": "x"}])
    assert regular.check(_candidate("a@our.test", kind="regular"))[0]
    ok, reasons = regular.check(_candidate("a@our.test", kind="auto_reply"))
    assert not ok
    assert reasons == ["kind auto_reply not in ['regular']"]


def test_a_mailbox_handler_is_the_route_after_the_configured_ones() -> None:
    decision = routing.explain(
        _candidate("help@our.test", mailbox_address="help@our.test", mailbox_handler="pkg.h"),
        _routes([{"address": "sales@*", "handler": "x"}]),
    )
    assert decision.route == routing.mailbox_route("help@our.test", "pkg.h")
    assert [name for name, _ok, _why in decision.trace] == ["route 1", "mailbox:help@our.test"]


@pytest.mark.parametrize(
    ("entries", "problem"),
    [
        ({"name": "x"}, "must be a list of routes"),
        (
            [{"name": "t", "handler": "no.such.module.handler"}],
            "t: handler 'no.such.module.handler' is neither",
        ),
        ([{"handler": "x.y", "adress": "a@b"}], "route 1 has unknown keys: adress"),
        ([{"name": "t", "handler": "os.getcwd", "kinds": "regular"}], "t: 'kinds' must be a list"),
        (
            [{"name": "t", "handler": "os.getcwd"}, {"name": "t", "handler": "os.getcwd"}],
            "t: the name is used twice",
        ),
    ],
)
def test_a_broken_route_is_a_system_check_error(entries: Any, problem: str) -> None:
    with override_settings(INBOUND_SMTP={"ROUTES": entries}):
        errors = [e for e in run_checks() if e.id == "inbound_smtp.E055"]
    assert len(errors) == 1
    assert problem in errors[0].msg


def test_good_routes_pass_the_checks() -> None:
    with override_settings(INBOUND_SMTP={"ROUTES": ROUTES}):
        assert not [e for e in run_checks() if e.id == "inbound_smtp.E055"]


@pytest.mark.django_db
def test_processing_calls_each_routes_handler_once_with_its_recipients() -> None:
    support = Mailbox.objects.create(address="ticket@our.test")
    Mailbox.objects.create(address="help@our.test", handler=f"{__name__}.mailbox_handler")
    Mailbox.objects.create(address="plain@our.test")
    raw = b"From: a@example.org\r\nSubject: routed\r\n\r\nhi\r\n"
    to = ["ticket+1@our.test", "ticket+2@our.test", "help@our.test", "plain@our.test"]
    with override_settings(INBOUND_SMTP={"ROUTES": ROUTES}):
        message = deliver(raw, to=to)
    assert message.status == InboundMessage.Status.PROCESSED
    assert sorted(CALLS, key=lambda c: c["handler"]) == [
        {"handler": "mailbox", "subject": "routed", "route": "mailbox:help@our.test"},
        {
            "handler": "ticket",
            "subject": "routed",
            "route": "tickets",
            "recipients": ["ticket+1@our.test", "ticket+2@our.test"],
            "mailbox": support.address,
        },
    ]
    routes = dict(message.recipients.values_list("address", "route"))
    assert routes == {
        "ticket+1@our.test": "tickets",
        "ticket+2@our.test": "tickets",
        "help@our.test": "mailbox:help@our.test",
        "plain@our.test": "",
    }


@pytest.mark.django_db(transaction=True)
def test_a_list_message_over_smtp_goes_to_the_list_route_and_the_admin_shows_it(
    admin_client,
) -> None:
    Mailbox.objects.create(address="ticket@our.test")
    raw = (
        b"From: a@example.org\r\nList-Id: Developers <dev.lists.example.org>\r\n"
        b"Subject: list mail\r\n\r\nhi\r\n"
    )
    with override_settings(INBOUND_SMTP={"ROUTES": ROUTES, "DISPATCH": "inline"}):
        with running_server() as server:
            with GuardedSMTP(server.host, server.port, timeout=30) as client:
                assert client.sendmail("a@example.org", ["ticket+9@our.test"], raw) == {}
    message = InboundMessage.objects.get()
    assert message.status == InboundMessage.Status.PROCESSED
    assert CALLS == [{"handler": "list", "subject": "list mail", "route": "lists"}]
    assert message.recipients.get().route == "lists"
    page = admin_client.get(f"/admin/inbound_smtp/inboundmessage/{message.pk}/change/")
    assert ">lists<" in page.content.decode()


@pytest.mark.django_db
def test_inbound_route_explains_the_decision(tmp_path: Path) -> None:
    Mailbox.objects.create(address="ticket@our.test")
    eml = tmp_path / "reply.eml"
    eml.write_bytes(b"From: a@example.org\r\nSubject: Re: yours\r\n\r\nthanks\r\n")
    out = StringIO()
    with override_settings(INBOUND_SMTP={"ROUTES": ROUTES}):
        call_command("inbound_route", "ticket+42@our.test", "--eml", str(eml), stdout=out)
    assert out.getvalue().splitlines() == [
        "ticket+42@our.test: accepted at RCPT by mailbox ticket@our.test, tag '42'",
        "kind: regular",  # what processing would decide for the --eml
        "  1. lists: no: no List-Id header (wanted '*<dev.lists.example.org>')",
        "  2. tickets: MATCH: address ticket+42@our.test matches 'ticket+*@our.test'; "
        "kind regular in ['list', 'regular'] (the handler's)",
        f"=> route tickets: handler {__name__}.ticket_handler (callable)",
    ]


@pytest.mark.django_db
def test_inbound_route_says_when_rcpt_would_refuse() -> None:
    Mailbox.objects.create(address="ticket@our.test")
    with pytest.raises(CommandError, match=r"nobody@our.test: refused at RCPT: 550 5\.1\.1"):
        call_command("inbound_route", "nobody@our.test")


@pytest.mark.django_db
def test_broken_routes_fail_the_message_once_instead_of_escaping_processing() -> None:
    # A process that ran no system check (a Celery worker) with a ROUTES entry E055
    # reports: the error must fail the message like a handler's, not escape processing
    # after the receivers ran (the claim would expire and they would run again, up to
    # MAX_ATTEMPTS times).
    Mailbox.objects.create(address="help@our.test")
    received: list[str] = []

    def receiver(*, message: InboundMessage, **kwargs: Any) -> None:
        received.append(message.queue_id)

    with receiver_connected(receiver):
        with override_settings(INBOUND_SMTP={"ROUTES": [{"name": "no handler"}]}):
            message = deliver(b"Subject: x\r\n\r\nhi\r\n", to=["help@our.test"])
    assert received == [message.queue_id]
    assert message.status == InboundMessage.Status.FAILED
    assert "no handler: 'handler' must be a dotted path" in message.error


@pytest.mark.django_db
def test_a_mailbox_handler_naming_nothing_is_refused_by_the_admin_form_and_the_checks() -> None:
    from django.core.exceptions import ValidationError
    from django.core.management.base import SystemCheckError

    mailbox = Mailbox(address="help@our.test", handler="no.such.module.handler")
    with pytest.raises(ValidationError, match="Neither an importable callable"):
        mailbox.full_clean()
    Mailbox(address="ok@our.test", handler=f"{__name__}.mailbox_handler").full_clean()

    mailbox.save()  # saved around the form (a fixture, the shell): the checks catch it
    errors = [e for e in run_checks(databases=["default"]) if e.id == "inbound_smtp.E056"]
    assert [e.msg for e in errors] == [
        "Mailbox handler 'no.such.module.handler' is neither an importable callable nor a "
        "task of the project's Celery app."
    ]
    assert not [e for e in run_checks() if e.id == "inbound_smtp.E056"]  # needs a database
    with pytest.raises(SystemCheckError, match="E056"):
        call_command("check", "--database", "default")
