"""Tiers 2 and 4: kinds of mail through the real pipeline. Mail sent over SMTP is stored,
classified when parsed, its bounce rows written; ``message_bounced`` fires once; mailbox
handlers and routes take only the kinds they handle, and a loop reaches none; the admin
shows the kind and a bounce's report; the setting's check."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from django.contrib.auth.models import User
from django.core.checks import Error
from django.core.management import call_command
from django.test import Client, override_settings
from django.urls import reverse

from django_inbound_smtp.checks import check_settings
from django_inbound_smtp.kinds import handles
from django_inbound_smtp.models import BounceRecipient, InboundMessage, Mailbox
from django_inbound_smtp.signals import message_bounced
from django_inbound_smtp.testing import deliver, running_server
from tests.helpers import GuardedSMTP, receiver_connected

FIXTURES = Path(__file__).parent / "fixtures"
HOST = "mx.our.test"
# What the handlers below were called with: (handler, message subject).
CALLS: list[tuple[str, str]] = []


def plain_handler(*, message: InboundMessage, **kwargs: Any) -> None:
    CALLS.append(("plain", message.subject))


@handles(kinds={"bounce"})
def bounce_handler(*, message: InboundMessage, **kwargs: Any) -> None:
    CALLS.append(("bounces", message.subject))


@handles(kinds={"regular", "bounce", "auto_reply", "list"})
def everything_handler(*, message: InboundMessage, **kwargs: Any) -> None:
    CALLS.append(("everything", message.subject))


@pytest.fixture(autouse=True)
def _calls() -> None:
    CALLS.clear()


def _fixture(name: str) -> bytes:
    return (FIXTURES / name).read_bytes().replace(b"\r\n", b"\n").replace(b"\n", b"\r\n")


def _loop_by_received(count: int) -> bytes:
    # Our host in `count` earlier Received: lines; the listener adds one more.
    hops = b"".join(
        b"Received: from relay.remote.example ([192.0.2.9])\r\n"
        b"\tby " + HOST.encode() + b" (django-inbound-smtp) with ESMTP id %d\r\n"
        b"\t; Tue, 2 Dec 2025 12:00:0%d +0000\r\n" % (n, n)
        for n in range(count)
    )
    return hops + b"From: a@remote.example\r\nSubject: came back\r\n\r\nagain\r\n"


def _send(server: Any, raw: bytes, *, sender: str, to: str) -> None:
    with GuardedSMTP(server.host, server.port, local_hostname="c.test", timeout=30) as client:
        client.ehlo()
        client.mail(sender)
        client.rcpt(to)
        code, text = client.data(raw)
        assert code == 250, text


@pytest.mark.django_db(transaction=True)
def test_mail_over_smtp_is_classified_and_bounces_fire_once_with_the_failed_recipient() -> None:
    Mailbox.objects.create(address="notify@our.test")
    Mailbox.objects.create(address="support@our.test", handler=f"{__name__}.plain_handler")
    bounced: list[dict[str, Any]] = []
    received: list[str] = []

    def on_bounce(sender: type, **kwargs: Any) -> None:
        bounced.append({"sender": sender, **kwargs})

    def on_message(sender: type, message: InboundMessage, **kwargs: Any) -> None:
        received.append(message.kind)  # the kind is there when receivers run

    message_bounced.connect(on_bounce, weak=False)
    try:
        with receiver_connected(on_message), running_server(hostname=HOST) as server:
            _send(server, _fixture("bounces/qmail.eml"), sender="", to="notify@our.test")
            _send(server, _fixture("bounces/exim_dsn.eml"), sender="", to="notify@our.test")
            for name in ("auto_replies/exchange_oof_en.eml", "kinds/list_id.eml"):
                _send(server, _fixture(name), sender="a@remote.example", to="support@our.test")
            _send(server, _loop_by_received(3), sender="a@remote.example", to="support@our.test")
            _send(server, _loop_by_received(2), sender="a@remote.example", to="support@our.test")
    finally:
        message_bounced.disconnect(on_bounce)

    kinds = list(InboundMessage.objects.order_by("pk").values_list("kind", "status"))
    assert kinds == [
        ("bounce", "processed"),
        ("bounce", "processed"),
        ("auto_reply", "processed"),
        ("list", "processed"),
        ("loop", "processed"),
        ("regular", "processed"),  # our line and two earlier ones: 3, not more than 3
    ]
    # message_received is still sent for every kind, loops included. (Inline processing
    # runs in several threads: the order of messages is not the order they came in.)
    assert sorted(received) == sorted(["bounce", "bounce", "auto_reply", "list", "loop", "regular"])
    qmail, exim = InboundMessage.objects.filter(kind="bounce").order_by("pk")
    by_message = {b["message"].pk: b for b in bounced}
    assert len(bounced) == len(by_message) == 2  # once each
    assert by_message[qmail.pk]["failed"] == ["nobody@remote.example"]
    assert by_message[exim.pk]["failed"] == ["gone@remote.example"]
    assert all(b["sender"] is InboundMessage for b in bounced)
    assert by_message[exim.pk]["original_message_id"] == "<summary-42@app.example>"
    (row,) = BounceRecipient.objects.filter(message=exim)
    assert [r.pk for r in by_message[exim.pk]["recipients"]] == [row.pk]
    assert (row.final_recipient, row.action, row.status, row.remote_mta) == (
        "gone@remote.example",
        "failed",
        "5.1.1",
        "mail.remote.example",
    )
    # The default handler took the list post and the regular mail; not the auto-reply,
    # and never the loop.
    assert sorted(CALLS) == [("plain", "[users] Release 2.0 is out"), ("plain", "came back")]


@pytest.mark.django_db
def test_handlers_take_only_their_kinds_and_a_loop_reaches_none() -> None:
    Mailbox.objects.create(address="bounces@our.test", handler=f"{__name__}.bounce_handler")
    Mailbox.objects.create(address="all@our.test", handler=f"{__name__}.everything_handler")
    Mailbox.objects.create(address="plain@our.test", handler=f"{__name__}.plain_handler")
    to = ["bounces@our.test", "all@our.test", "plain@our.test"]
    samples = {
        "bounce": _fixture("bounces/gmail_failure.eml"),
        "auto_reply": _fixture("auto_replies/gmail_vacation.eml"),
        "loop": b"From: a@remote.example\r\nX-Loop: all@our.test\r\nSubject: loop\r\n\r\nx\r\n",
        "regular": _fixture("kinds/regular.eml"),
    }
    for kind, raw in samples.items():
        message = deliver(raw, mail_from="", to=to)
        assert message.kind == kind
        assert message.status == InboundMessage.Status.PROCESSED
    dsn, reply = "Delivery Status Notification (Failure)", "Re: Ticket #12 was updated"
    assert CALLS == [
        ("bounces", dsn),  # bounces@: handles bounces only
        ("everything", dsn),  # all@: every kind it may ask for; plain@: not a bounce
        ("everything", reply),  # the vacation reply: only all@ takes auto-replies
        # the loop: nobody, though all@ asked for every kind it could
        ("everything", reply),  # the regular reply: all@ and plain@ (the default)
        ("plain", reply),
    ]


ROUTES = [
    # Routed by kind: the route's kinds win over the (default) kinds of its handler.
    {"name": "bounces", "kinds": ["bounce"], "handler": f"{__name__}.plain_handler"},
    # No kinds condition: the handler's own (bounce_handler: bounces only).
    {"name": "declared", "address": "declared@our.test", "handler": f"{__name__}.bounce_handler"},
    # No kinds condition, undecorated handler: regular and list mail.
    {"name": "rest", "handler": f"{__name__}.plain_handler"},
]


@pytest.mark.django_db
@override_settings(INBOUND_SMTP={"HOSTNAME": HOST, "ROUTES": ROUTES})
def test_routes_take_their_kinds_or_their_handlers() -> None:
    Mailbox.objects.create(address="*@our.test")
    dsn = deliver(_fixture("bounces/sendmail_dsn.eml"), mail_from="", to=["x@our.test"])
    vacation = deliver(_fixture("auto_replies/sieve_vacation.eml"), to=["declared@our.test"])
    regular = deliver(_fixture("kinds/regular.eml"), to=["declared@our.test", "y@our.test"])
    assert (dsn.kind, vacation.kind, regular.kind) == ("bounce", "auto_reply", "regular")
    assert CALLS == [("plain", dsn.subject), ("plain", regular.subject)]
    # Each recipient's route is recorded: none for the auto-reply (no route takes it).
    assert [r.route for r in vacation.recipients.all()] == [""]
    assert [r.route for r in regular.recipients.all()] == ["rest", "rest"]


@pytest.mark.django_db
def test_inbound_route_reads_the_kind_from_the_eml(capsys: pytest.CaptureFixture[str]) -> None:
    Mailbox.objects.create(address="support@app.example", handler=f"{__name__}.plain_handler")
    eml = str(FIXTURES / "bounces/exim_plain.eml")
    call_command("inbound_route", "support@app.example", "--eml", eml)
    out = capsys.readouterr().out
    assert 'kind: bounce (non-DSN bounce ("mail delivery failed"))' in out
    assert "kind bounce not in ['list', 'regular'] (the handler's)" in out
    assert "=> no route" in out
    loop = str(FIXTURES / "kinds/x_loop.eml")
    call_command("inbound_route", "support@app.example", "--eml", loop)
    out = capsys.readouterr().out
    assert "kind: loop (X-Loop: support@app.example)" in out
    assert "kind loop: a loop is never handed to a handler" in out


@pytest.mark.django_db
def test_a_failing_bounce_receiver_fails_the_message() -> None:
    Mailbox.objects.create(address="notify@our.test")

    def broken(**kwargs: Any) -> None:
        raise RuntimeError("address book is down")

    message_bounced.connect(broken, weak=False)
    try:
        message = deliver(_fixture("bounces/outlook_com.eml"), mail_from="", to=["notify@our.test"])
    finally:
        message_bounced.disconnect(broken)
    assert message.status == InboundMessage.Status.FAILED
    assert "address book is down" in message.error
    assert message.bounce_recipients.count() == 1  # the report stays parsed


@pytest.mark.parametrize("value", [0, 101, "3", True, 2.5])
def test_loop_max_own_hops_is_checked(value: object) -> None:
    with override_settings(INBOUND_SMTP={"LOOP_MAX_OWN_HOPS": value}):
        errors = [e for e in check_settings() if e.id == "inbound_smtp.E058"]
    assert errors == [
        Error(
            "INBOUND_SMTP['LOOP_MAX_OWN_HOPS'] must be an integer from 1 (our own Received: "
            "line counts) to 100.",
            hint=f"Got {value!r}.",
            id="inbound_smtp.E058",
        )
    ]


def test_routes_refuse_loops_and_unknown_kinds() -> None:
    routes = [
        {"name": "l", "kinds": ["loop"], "handler": "os.getcwd"},
        {"name": "t", "kinds": ["bounces"], "handler": "os.getcwd"},
    ]
    with override_settings(INBOUND_SMTP={"ROUTES": routes}):
        messages = [e.msg for e in check_settings() if e.id == "inbound_smtp.E055"]
    assert any("a loop is never handed to a handler" in m for m in messages), messages
    assert any("unknown kinds ['bounces']" in m for m in messages), messages


@pytest.mark.django_db
def test_the_admin_shows_kinds_and_a_bounce_report() -> None:
    Mailbox.objects.create(address="notify@our.test")
    client = Client()
    client.force_login(User.objects.create_superuser("boss", "boss@x.test", "pw"))
    hostile = _fixture("bounces/exim_dsn.eml").replace(
        b"Recipient address rejected", b"<script>alert(1)</script>"
    )
    bounce = deliver(hostile, mail_from="", to=["notify@our.test"])
    regular = deliver(_fixture("kinds/regular.eml"), to=["notify@our.test"])
    changelist = reverse("admin:inbound_smtp_inboundmessage_changelist")
    listing = client.get(changelist).content.decode()
    assert '<td class="field-kind">bounce</td>' in listing
    assert '<td class="field-kind">regular</td>' in listing
    filtered = client.get(changelist, {"kind__exact": "bounce"}).content.decode()
    assert f"/{bounce.pk}/change/" in filtered
    assert f"/{regular.pk}/change/" not in filtered
    page = client.get(
        reverse("admin:inbound_smtp_inboundmessage_change", args=[bounce.pk])
    ).content.decode()
    assert "bounce <small>(RFC 3464 delivery status notification)</small>" in page
    assert (
        'id="tab-bounce" href="#panel-bounce" aria-controls="panel-bounce" aria-selected="true"'
        in (page)
    )
    report = page.split('id="panel-bounce"')[1].split("</section>")[0]
    assert "gone@remote.example" in report
    assert "5.1.1" in report
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in report
    assert "<script>alert(1)" not in page
    other = client.get(
        reverse("admin:inbound_smtp_inboundmessage_change", args=[regular.pk])
    ).content.decode()
    assert 'id="tab-bounce"' not in other  # only a bounce has the tab


@pytest.mark.django_db
@override_settings(INBOUND_SMTP={"REPLY_ADDRESS_DOMAINS": ["reply.our.test"]})
def test_a_bounce_to_a_signed_return_path_names_its_recipient() -> None:
    from django_inbound_smtp.reply_addresses import return_path

    fired: list[dict[str, Any]] = []

    def on_bounce(**kwargs: Any) -> None:
        fired.append(kwargs)

    # The report names a forwarding address; our signature names who the mail went to.
    address = return_path("Reader@Remote.example")
    message_bounced.connect(on_bounce, weak=False)
    try:
        deliver(_fixture("bounces/exim_dsn.eml"), mail_from="", to=[address])
    finally:
        message_bounced.disconnect(on_bounce)
    (call,) = fired
    assert call["failed"] == ["gone@remote.example"]
    assert call["return_path_recipients"] == ["reader@remote.example"]
