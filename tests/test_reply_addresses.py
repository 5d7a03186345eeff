"""Signed reply addresses and return paths: tokens, RCPT decisions, what processing hands over.

The token tests need only the database (content types); the rest speak real SMTP to a
real listener and store into the real database; the trust tests run the real sender
checks against the loopback DNS server with real DKIM signatures.
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from django.conf import settings as django_settings
from django.contrib.auth.models import Group, User

from django_inbound_smtp.models import (
    InboundMessage,
    InboundRecipient,
    Mailbox,
    ReplyTrust,
    ReturnPath,
)
from django_inbound_smtp.reply_addresses import (
    BadToken,
    reply_address,
    return_path,
    token_of,
    verify,
)
from django_inbound_smtp.testing import running_server
from tests.authkit import checks_settings, dkim_key, load_sender_zone, message, sign, txt
from tests.helpers import GuardedSMTP, receiver_connected

REPLY_DOMAIN = "reply.test"


@pytest.fixture
def reply_settings(settings):
    settings.INBOUND_SMTP = {**settings.INBOUND_SMTP, "REPLY_ADDRESS_DOMAINS": [REPLY_DOMAIN]}
    return settings


def _token(address: str) -> str:
    found = token_of(address)
    assert found is not None, address
    return found[1]


# --- tokens ----------------------------------------------------------------------------


def test_a_token_names_its_object_user_and_expiry(db, reply_settings):
    group = Group.objects.create(name="ticket 42")
    user = User.objects.create(username="alice", email="alice@sender.test")
    address = reply_address(group, for_user=user, expires=timedelta(days=2))
    assert address.startswith("reply+")
    assert address.endswith("@reply.test")
    reference = verify(_token(address))
    assert reference.object_id == group.pk
    assert reference.user_id == user.pk
    assert not reference.return_path
    assert reference.expires_at is not None
    assert (
        timedelta(days=2) - timedelta(seconds=5)
        < (reference.expires_at - datetime.now(UTC))
        <= timedelta(days=2, seconds=2)
    )
    # Lower-case base32 only: nothing an MTA's case folding can change.
    assert set(_token(address)) <= set("abcdefghijklmnopqrstuvwxyz234567")


def test_an_upper_cased_address_still_verifies(db, reply_settings):
    group = Group.objects.create(name="ticket")
    address = reply_address(group).upper()
    assert verify(_token(address)).object_id == group.pk


def test_any_changed_character_is_forged(db, reply_settings):
    token = _token(reply_address(Group.objects.create(name="t")))
    for position in range(len(token)):
        flipped = "a" if token[position] != "a" else "b"
        forged = token[:position] + flipped + token[position + 1 :]
        with pytest.raises(BadToken) as caught:
            verify(forged)
        assert caught.value.reason in {"forged", "malformed"}
    with pytest.raises(BadToken, match="malformed"):
        verify("not!base32")


def test_expired_token_is_told_apart_from_a_forged_one(db, reply_settings):
    token = _token(reply_address(Group.objects.create(name="t"), expires=timedelta(seconds=-5)))
    with pytest.raises(BadToken) as caught:
        verify(token)
    assert caught.value.reason == "expired"


def test_no_expiry_when_asked(db, reply_settings):
    token = _token(reply_address(Group.objects.create(name="t"), expires=None))
    assert verify(token, now=datetime(2200, 1, 1, tzinfo=UTC)).expires_at is None


def test_key_rotation_through_secret_key_fallbacks(db, reply_settings):
    reply_settings.SECRET_KEY = "the-old-key-" * 4
    token = _token(reply_address(Group.objects.create(name="t")))
    reply_settings.SECRET_KEY = "the-new-key-" * 4
    reply_settings.SECRET_KEY_FALLBACKS = ["the-old-key-" * 4]
    assert verify(token).object_id is not None
    reply_settings.SECRET_KEY_FALLBACKS = []
    with pytest.raises(BadToken, match="forged"):
        verify(token)


def test_the_local_part_fits_64_octets_with_the_largest_keys(db, reply_settings):
    # Unsaved instances with the largest bigint keys: the token is what is measured.
    huge = 2**63 - 1
    address = reply_address(Mailbox(pk=huge), for_user=User(pk=huge))
    local = address.rpartition("@")[0]
    assert len(local.encode()) <= 64, (len(local), local)
    reference = verify(_token(address))
    assert (reference.object_id, reference.user_id) == (huge, huge)


def test_addresses_that_cannot_work_are_refused_at_generation(db, reply_settings):
    with pytest.raises(ValueError, match="saved objects"):
        reply_address(Group(name="unsaved"))
    with pytest.raises(ValueError, match="saved objects"):
        reply_address(Group.objects.create(name="t1"), for_user=User(username="unsaved"))
    with pytest.raises(ValueError, match="aware"):
        reply_address(Group.objects.create(name="t2"), expires=datetime(2030, 1, 1))
    with pytest.raises(ValueError, match="REPLY_ADDRESS_DOMAINS"):
        reply_address(Group.objects.create(name="t"), domain="elsewhere.test")
    with pytest.raises(ValueError, match="64"):
        reply_address(Mailbox(pk="x" * 40))


# --- at RCPT, over SMTP ----------------------------------------------------------------


def _rcpt(server, address: str, *, sender: str = "someone@sender.test") -> tuple[int, str]:
    with GuardedSMTP(server.host, server.port, local_hostname="client.test", timeout=10) as c:
        c.ehlo()
        assert c.mail(sender)[0] == 250
        code, text = c.rcpt(address)
        return code, text.decode()


def _send(server, address: str, content: bytes, *, sender: str = "alice@sender.test") -> None:
    with GuardedSMTP(server.host, server.port, local_hostname="client.sender.test") as c:
        c.ehlo()
        assert c.mail(sender)[0] == 250
        assert c.rcpt(address)[0] == 250
        assert c.data(content)[0] == 250


def _collect() -> tuple[list[dict[str, Any]], Any]:
    seen: list[dict[str, Any]] = []

    def receiver(*, recipients: list[InboundRecipient], **kwargs: Any) -> None:
        seen.extend(
            {
                "object": r.reply_object,
                "trust": r.reply_trust,
                "bounce_recipient": r.bounce_recipient,
            }
            for r in recipients
        )

    return seen, receiver


@pytest.mark.integration
def test_a_valid_reply_is_accepted_and_receivers_get_the_object(transactional_db, reply_settings):
    group = Group.objects.create(name="ticket 42")
    address = reply_address(group)
    seen, receiver = _collect()
    with receiver_connected(receiver), running_server() as server:
        _send(server, address, message(to=address))
    assert seen == [{"object": group, "trust": ReplyTrust.NO_USER, "bounce_recipient": ""}]
    row = InboundRecipient.objects.get()
    assert row.reply_content_type is not None
    assert (row.reply_content_type.model_class(), row.reply_object_id) == (Group, str(group.pk))
    assert row.reply_object == group


@pytest.mark.integration
def test_a_case_folded_reply_address_is_accepted(transactional_db, reply_settings):
    group = Group.objects.create(name="ticket")
    with running_server() as server:
        assert _rcpt(server, reply_address(group).upper())[0] == 250


@pytest.mark.integration
@pytest.mark.parametrize("case", ["forged", "expired", "gone", "wrong prefix"])
def test_bad_tokens_are_unknown_mailboxes_with_their_reason_in_the_log(
    transactional_db, reply_settings, caplog, case
):
    group = Group.objects.create(name="ticket")
    address = reply_address(group)
    if case == "forged":
        token = _token(address)
        middle = len(token) // 2
        flipped = "a" if token[middle] != "a" else "b"
        address = address.replace(token, token[:middle] + flipped + token[middle + 1 :])
    elif case == "expired":
        address = reply_address(group, expires=timedelta(seconds=-1))
    elif case == "gone":
        group.delete()
    else:  # a reply token presented as a return path
        address = address.replace("reply+", "bounce+")
    caplog.set_level(logging.INFO, logger="django_inbound_smtp.validators.reply_addresses")
    with running_server() as server:
        code, text = _rcpt(server, address)
    assert (code, text[:5]) == (550, "5.1.1"), text
    reason = "forged" if case == "wrong prefix" else case
    assert f"signed address refused ({reason})" in caplog.text
    assert InboundMessage.objects.count() == 0


@pytest.mark.integration
def test_only_our_reply_domains_are_decided_no_open_door(transactional_db, reply_settings):
    group = Group.objects.create(name="ticket")
    token = _token(reply_address(group))
    with running_server() as server:
        code, text = _rcpt(server, f"reply+{token}@elsewhere.test")
    # Nobody serves elsewhere.test: relay denied, whatever the token.
    assert (code, text[:5]) == (550, "5.7.1"), text


@pytest.mark.integration
def test_verp_bounce_resolves_to_the_original_recipient(transactional_db, reply_settings):
    address = return_path("Customer.Name@Example.org")
    assert address.startswith("bounce+")
    assert len(address.rpartition("@")[0]) <= 64
    seen, receiver = _collect()
    bounce = b"From: MAILER-DAEMON@example.org\r\nSubject: Undelivered\r\n\r\nNo such user.\r\n"
    with receiver_connected(receiver), running_server() as server:
        with GuardedSMTP(server.host, server.port, local_hostname="mx.example.org") as c:
            c.ehlo()
            assert c.mail("<>")[0] == 250
            assert c.rcpt(address)[0] == 250
            assert c.data(bounce)[0] == 250
    assert [s["bounce_recipient"] for s in seen] == ["customer.name@example.org"]
    assert InboundRecipient.objects.get().bounce_recipient == "customer.name@example.org"
    # Same address, same row: one per address however much mail is sent.
    return_path("customer.name@example.org")
    assert ReturnPath.objects.count() == 1


# --- who may act as the user -----------------------------------------------------------


@pytest.fixture
def trust(dns_server, reply_settings):
    """Sender checks on (tag) against the loopback DNS server; a ticket and its user."""
    load_sender_zone(dns_server)
    _private, public = dkim_key()
    # evil.test signs its own mail correctly: authenticated, but not as sender.test.
    dns_server.load(
        {
            "evil.test": [("TXT", txt("v=spf1 -all"))],
            "sel._domainkey.evil.test": [("TXT", txt(f"v=DKIM1; k=rsa; p={public}"))],
            "_dmarc.evil.test": [("TXT", txt("v=DMARC1; p=reject"))],
        }
    )
    reply_settings.INBOUND_SMTP = checks_settings(dns_server, dict(django_settings.INBOUND_SMTP))
    user = User.objects.create(username="alice", email="Alice@Sender.test")
    return reply_address(Group.objects.create(name="ticket"), for_user=user)


def _verdict(address: str, content: bytes, *, sender: str) -> str:
    with running_server() as server:
        _send(server, address, content, sender=sender)
    return InboundRecipient.objects.get().reply_trust


@pytest.mark.integration
def test_the_user_with_dmarc_pass_is_trusted(transactional_db, trust):
    content = sign(message(to=trust))
    assert _verdict(trust, content, sender="alice@sender.test") == ReplyTrust.TRUSTED


@pytest.mark.integration
def test_a_third_party_holding_the_address_is_not_the_user(transactional_db, trust):
    # Bob was in CC; his own mail is perfectly authenticated, but he is not Alice.
    content = sign(message(sender="bob@sender.test", to=trust))
    assert _verdict(trust, content, sender="bob@sender.test") == ReplyTrust.SENDER_MISMATCH


@pytest.mark.integration
def test_the_users_address_without_authentication_is_not_trusted(
    transactional_db, trust, dns_server
):
    # sender.test now authorizes no host: an unsigned From: alice from us is a spoof.
    load_sender_zone(dns_server, spf="v=spf1 -all")
    content = message(to=trust)
    assert _verdict(trust, content, sender="alice@sender.test") == ReplyTrust.NOT_AUTHENTICATED


@pytest.mark.integration
def test_an_authenticated_stranger_cannot_borrow_the_users_envelope_sender(
    transactional_db, trust, dns_server
):
    # MAIL FROM is Alice (SPF even passes for it), the From is eve@evil.test with a
    # valid evil.test signature: the authenticated domain is not Alice's.
    content = sign(message(sender="eve@evil.test", to=trust), domain="evil.test")
    assert _verdict(trust, content, sender="alice@sender.test") == ReplyTrust.NOT_AUTHENTICATED


@pytest.mark.integration
def test_the_verdict_is_on_the_admin_message_page(transactional_db, trust, admin_client):
    _verdict(trust, sign(message(to=trust)), sender="alice@sender.test")
    message_row = InboundMessage.objects.get()
    page = admin_client.get(f"/admin/inbound_smtp/inboundmessage/{message_row.pk}/change/")
    assert page.status_code == 200
    html = page.content.decode()
    assert "Signed address for" in html  # the recipients inline, Envelope tab
    assert (
        f"group #{Group.objects.get().pk} (user #{User.objects.get(username='alice').pk})" in html
    )
    assert f">{ReplyTrust.TRUSTED.label}<" in html


# --- settings checks -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("values", "expected"),
    [
        ({"REPLY_ADDRESS_DOMAINS": "reply.test"}, ["inbound_smtp.E061"]),
        ({"REPLY_ADDRESS_DOMAINS": ["reply.test", "not a domain"]}, ["inbound_smtp.E061"]),
        ({"REPLY_ADDRESS_SEPARATOR": "%"}, ["inbound_smtp.E062"]),
        ({"REPLY_ADDRESS_PREFIX": "notifications"}, ["inbound_smtp.E062"]),
        ({"RETURN_PATH_PREFIX": "Reply"}, ["inbound_smtp.E062"]),
        ({"REPLY_ADDRESS_PREFIX": "re+ply"}, ["inbound_smtp.E062"]),
        ({"REPLY_ADDRESS_EXPIRY": 0}, ["inbound_smtp.E063"]),
        ({"REPLY_ADDRESS_EXPIRY": None, "REPLY_ADDRESS_DOMAINS": ["Reply.Test"]}, []),
        (
            {
                "REPLY_ADDRESS_DOMAINS": ["reply.test"],
                "RECIPIENT_VALIDATORS": ["django_inbound_smtp.validators.models.mailbox_validator"],
            },
            ["inbound_smtp.W013"],
        ),
    ],
)
def test_reply_address_settings_checks(settings, values, expected):
    from django_inbound_smtp.checks import check_settings

    settings.INBOUND_SMTP = {**settings.INBOUND_SMTP, **values}
    assert [message.id for message in check_settings()] == expected


@pytest.mark.integration
def test_signed_address_outcomes_are_counted(transactional_db, reply_settings, monkeypatch):
    from django_inbound_smtp import metrics

    pytest.importorskip("prometheus_client")
    # Metrics are per process and off in tests: on for this test only.
    monkeypatch.setattr(metrics, "_metrics", None)
    metrics.enable()
    group = Group.objects.create(name="ticket")
    with running_server() as server:
        assert _rcpt(server, reply_address(group))[0] == 250
        assert _rcpt(server, reply_address(group, expires=timedelta(seconds=-1)))[0] == 550
        assert _rcpt(server, reply_address(group, expires=timedelta(seconds=-1)))[0] == 550

    def count(outcome: str) -> float | None:
        name = "inbound_smtp_signed_addresses_total"
        value = metrics.registry().get_sample_value(name, {"outcome": outcome})
        return None if value is None else float(value)

    assert (count("accepted"), count("expired"), count("forged")) == (1.0, 2.0, None)


def test_an_object_deleted_after_rcpt_reaches_receivers_as_none(db, reply_settings):
    # Accepted while the ticket existed; deleted before processing ran.
    from django_inbound_smtp.lifecycle.process import process_message
    from django_inbound_smtp.testing import deliver

    group = Group.objects.create(name="ticket")
    address = reply_address(group)
    stored = deliver(message(to=address), to=[address], process=False)
    group.delete()
    seen, receiver = _collect()
    with receiver_connected(receiver):
        process_message(stored.pk, owner="test")
    assert seen == [{"object": None, "trust": ReplyTrust.NO_USER, "bounce_recipient": ""}]


@pytest.mark.integration
def test_the_users_envelope_sender_with_her_domain_authenticated_is_trusted(
    transactional_db, trust
):
    # A From of the same, authenticated domain (a shared or role address) with Alice
    # as envelope sender: her domain's servers vouch for both.
    content = sign(message(sender="team@sender.test", to=trust))
    assert _verdict(trust, content, sender="alice@sender.test") == ReplyTrust.TRUSTED


def test_inbound_route_explains_a_signed_address(db, reply_settings):
    from io import StringIO

    from django.core.management import call_command

    group = Group.objects.create(name="ticket")
    user = User.objects.create(username="alice", email="alice@sender.test")
    address = reply_address(group, for_user=user)
    out = StringIO()
    call_command("inbound_route", address, stdout=out)
    assert (
        f"accepted at RCPT by a signed reply address for auth.Group #{group.pk}, "
        f"issued to user #{user.pk}"
    ) in out.getvalue()
    verp = return_path("someone@example.org")
    call_command("inbound_route", verp, stdout=out)
    assert "accepted at RCPT by a signed return path for someone@example.org" in out.getvalue()
