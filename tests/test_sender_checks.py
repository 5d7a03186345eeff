"""Sender checks end to end: a real listener, a real DNS server on loopback, real mail.

Tier 4 (integration): nothing is monkeypatched; the resolver is pointed at the
loopback DNS server through ``INBOUND_SMTP["DNS"]``.
"""

from __future__ import annotations

import smtplib
import threading
import time

import pytest
from django.conf import settings as django_settings

from django_inbound_smtp.models import InboundMessage, SenderCheck
from django_inbound_smtp.testing import running_server
from tests.authkit import checks_settings, dkim_key, load_sender_zone, message, sign, txt
from tests.helpers import GuardedSMTP

pytestmark = [pytest.mark.integration]


@pytest.fixture
def checks(dns_server, settings, make_mailbox):
    """Every check on in tag mode against ``dns_server``; returns a policy switcher."""
    make_mailbox("user@our.test")
    load_sender_zone(dns_server)
    base = dict(django_settings.INBOUND_SMTP)

    def configure(**policies: str) -> None:
        settings.INBOUND_SMTP = checks_settings(dns_server, base, **policies)

    configure()
    return configure


def _send(
    server, content: bytes, *, sender: str = "alice@sender.test", helo: str = "client.sender.test"
):
    """MAIL, RCPT, DATA; returns (MAIL reply, DATA reply) as (code, text)."""
    with GuardedSMTP(server.host, server.port, local_hostname=helo, timeout=15) as client:
        client.ehlo()
        mail = client.mail(sender)
        if mail[0] != 250:
            return mail, None
        assert client.rcpt("user@our.test")[0] == 250
        data: tuple[int, bytes | str]
        try:
            data = client.data(content)
        except smtplib.SMTPDataError as error:
            data = (error.smtp_code, error.smtp_error)
        return mail, data


def _code(reply) -> str:
    return f"{reply[0]} {reply[1].decode()}"


def _stored() -> InboundMessage:
    return InboundMessage.objects.select_related("sender_check").get()


def test_signed_mail_from_an_authorized_host_passes_every_check(checks, smtp_server):
    mail, data = _send(smtp_server, sign(message()))
    assert (mail[0], data[0]) == (250, 250), (mail, data)
    check = _stored().sender_check
    assert check.iprev_result == "pass"
    assert check.sender_domain_result == "pass"
    assert check.spf_result == "pass"
    assert check.spf_helo_result == "pass"
    assert check.dkim_result == "pass", check.dkim_reason
    assert check.dmarc_result == "pass"
    assert check.dmarc_policy == "reject"
    assert check.sender_verified is True
    assert check.from_domain == "sender.test"
    assert check.details["dkim_signatures"][0]["domain"] == "sender.test"


def test_our_authentication_results_header_is_first_and_forged_ones_are_renamed(
    checks, smtp_server
):
    forged = "Authentication-Results: mx.test; dkim=pass header.d=bank.test\r\n"
    other = "Authentication-Results: elsewhere.test; spf=pass\r\n"
    _send(smtp_server, sign(message(extra=forged + other)))
    raw = _stored().raw_bytes
    head = raw.split(b"\r\n\r\n", 1)[0].decode()
    assert head.startswith("Authentication-Results: mx.test;\r\n\tiprev=pass")
    assert "\r\nReceived: from client.sender.test" in head
    assert "X-Original-Authentication-Results: mx.test; dkim=pass header.d=bank.test" in head
    assert "\r\nAuthentication-Results: elsewhere.test; spf=pass" in head
    assert head.count("\nAuthentication-Results: mx.test") == 0
    assert "dkim=pass" in _stored().sender_check.authentication_results


def test_a_spooled_message_gets_our_header_and_keeps_its_signature(
    transactional_db, checks, settings, tmp_path
):
    # Past SPOOL_MEMORY_LIMIT the message is in a spool file when the DATA checks run:
    # DKIM reads it from there, and the header we add goes on top of the stored file.
    settings.INBOUND_SMTP = {
        **settings.INBOUND_SMTP,
        "SPOOL_MEMORY_LIMIT": 4096,
        "SPOOL_DIR": str(tmp_path),
    }
    forged = "Authentication-Results: mx.test; dkim=pass header.d=bank.test\r\n"
    body = "".join(f"line {n} of a long signed body\r\n" for n in range(5000))
    content = sign(message(extra=forged, body=body))
    with running_server() as server:
        mail, data = _send(server, content)
    assert data[0] == 250, data
    stored = _stored()
    raw = stored.raw_bytes
    assert raw.startswith(b"Authentication-Results: mx.test;\r\n\tiprev=pass")
    assert raw.endswith(body.encode())
    assert b"X-Original-Authentication-Results: mx.test; dkim=pass header.d=bank.test" in raw
    assert stored.size == len(raw)
    assert stored.sender_check.dkim_result == "pass"
    assert stored.sender_check.sender_verified is True
    assert list(tmp_path.glob("*.spool")) == []


def test_spf_fail_is_tagged_by_default_and_refused_under_reject(checks, smtp_server, dns_server):
    dns_server.load({"sender.test": [("MX", "10 mx.sender.test."), ("TXT", txt("v=spf1 -all"))]})
    mail, data = _send(smtp_server, message())
    assert data[0] == 250
    assert _stored().sender_check.spf_result == "fail"
    assert _stored().sender_check.sender_verified is False
    checks(SPF="reject")
    mail, _ = _send(smtp_server, message(body="second\r\n"))
    assert _code(mail).startswith("550 5.7.23"), mail
    checks(SPF="tempfail")
    mail, _ = _send(smtp_server, message(body="third\r\n"))
    assert _code(mail).startswith("451 4.7.23"), mail


def test_dmarc_reject_refuses_unaligned_mail_and_accepts_aligned(checks, smtp_server, dns_server):
    checks(DMARC="reject")
    # Envelope from another domain (SPF pass there), From: sender.test, unsigned.
    dns_server.load(
        {"relay.test": [("MX", "10 mx.sender.test."), ("TXT", txt("v=spf1 ip4:127.0.0.1 -all"))]}
    )
    mail, data = _send(smtp_server, message(), sender="bounce@relay.test")
    assert mail[0] == 250
    assert _code(data).startswith("550 5.7.26"), data
    # The same, DKIM-signed by sender.test: aligned, accepted.
    mail, data = _send(smtp_server, sign(message()), sender="bounce@relay.test")
    assert data[0] == 250, data
    check = _stored().sender_check
    assert (check.spf_result, check.dkim_result, check.dmarc_result) == ("pass", "pass", "pass")
    assert check.sender_verified


def test_dkim_body_tampered_key_missing_and_key_revoked(checks, smtp_server, dns_server):
    tampered = sign(message()).replace(b"Hello.", b"Hullo.")
    _send(smtp_server, tampered)
    check = InboundMessage.objects.get().sender_check
    assert (check.dkim_result, check.dkim_reason) == (
        "fail",
        "sender.test: body hash did not verify",
    )
    _send(smtp_server, sign(message(body="missing\r\n"), selector="gone"))
    assert InboundMessage.objects.order_by("-pk")[0].sender_check.dkim_result == "permerror"
    dns_server.load({"old._domainkey.sender.test": [("TXT", txt("v=DKIM1; k=rsa; p="))]})
    _send(smtp_server, sign(message(body="revoked\r\n"), selector="old"))
    check = InboundMessage.objects.order_by("-pk")[0].sender_check
    assert check.dkim_result == "permerror"
    assert "revoked" in check.dkim_reason
    # DKIM failed, SPF passed and is aligned: DMARC passes, the sender is verified.
    assert check.dmarc_result == "pass"
    assert check.sender_verified


def test_malformed_signed_mail_and_key_records_are_permanent_never_451(
    checks, smtp_server, dns_server
):
    # In tag mode nothing about the content may turn into a 4xx: a 451 would be
    # retried for days and then bounced, for a message that can never verify.
    signed = sign(message(body="broken header\r\n"))
    end = signed.index(b"\r\n\r\n")
    broken = signed[:end] + b"\r\nthis line has no colon" + signed[end:]
    assert _send(smtp_server, broken)[1][0] == 250
    assert InboundMessage.objects.order_by("-pk")[0].sender_check.dkim_result == "permerror"
    _private, public = dkim_key()
    record = txt(f"v=DKIM1; k=rsa; p={public}; junk")
    dns_server.load({"typo._domainkey.sender.test": [("TXT", record)]})
    assert _send(smtp_server, sign(message(body="typo\r\n"), selector="typo"))[1][0] == 250
    check = InboundMessage.objects.order_by("-pk")[0].sender_check
    assert check.dkim_result == "permerror"
    assert "key record" in check.dkim_reason


def test_nul_in_sender_controlled_fields_is_stored_cleaned(checks, smtp_server):
    # PostgreSQL text and jsonb refuse NUL: a From domain or a DKIM s= with one must
    # not turn into a 451 on every retry.
    content = message().replace(b"alice@sender.test>", b"alice@send\x00er.test>", 1)
    assert _send(smtp_server, content)[1][0] == 250
    bad_selector = sign(message(body="selector\r\n")).replace(b"s=sel;", b"s=se\x00l;", 1)
    assert _send(smtp_server, bad_selector)[1][0] == 250
    for check in SenderCheck.objects.all():
        assert "\x00" not in check.from_domain
        assert "\x00" not in str(check.details)
        assert "\x00" not in check.dkim_reason


def test_dkim_reject_refuses_a_broken_signature(checks, smtp_server):
    checks(DKIM="reject")
    _mail, data = _send(smtp_server, sign(message()).replace(b"Hello.", b"Hullo."))
    assert _code(data).startswith("550 5.7.20"), data


def test_dnsbl_listed_client_is_refused_at_mail(checks, smtp_server, dns_server, settings):
    settings.INBOUND_SMTP = {**settings.INBOUND_SMTP, "DNSBL_ZONES": ["bl.test*2", "wl.test*-1"]}
    checks_now = settings.INBOUND_SMTP
    dns_server.load({"1.0.0.127.bl.test": [("A", "127.0.0.2")]})
    _send(smtp_server, message())
    check = _stored().sender_check
    assert check.dnsbl_result == "fail"
    assert "bl.test*2" in check.dnsbl_reason
    settings.INBOUND_SMTP = {
        **checks_now,
        "SENDER_CHECKS": {**checks_now["SENDER_CHECKS"], "DNSBL": "reject"},
    }
    mail, _ = _send(smtp_server, message(body="again\r\n"))
    assert _code(mail).startswith("550 5.7.1"), mail
    # An allowlist entry brings the score under the threshold of 2.
    dns_server.load({"1.0.0.127.wl.test": [("A", "127.0.0.2")]})
    settings.INBOUND_SMTP = {**settings.INBOUND_SMTP, "DNSBL_THRESHOLD": 2}
    mail, _ = _send(smtp_server, message(body="allowed\r\n"))
    assert mail[0] == 250, mail


def test_dnsbl_not_listed(checks, smtp_server, settings):
    settings.INBOUND_SMTP = {**settings.INBOUND_SMTP, "DNSBL_ZONES": ["bl.test"]}
    _send(smtp_server, message())
    assert _stored().sender_check.dnsbl_result == "pass"


def test_reverse_dns_mismatch(checks, smtp_server, dns_server):
    dns_server.load(
        {
            "1.0.0.127.in-addr.arpa": [("PTR", "elsewhere.test.")],
            "elsewhere.test": [("A", "192.0.2.1")],
        }
    )
    _send(smtp_server, message())
    check = _stored().sender_check
    assert check.iprev_result == "fail"
    checks(IPREV="reject")
    mail, _ = _send(smtp_server, message(body="again\r\n"))
    assert _code(mail).startswith("550 5.7.25"), mail


def test_null_mx_sender_domain(checks, smtp_server, dns_server):
    dns_server.load({"nomail.test": [("MX", "0 ."), ("TXT", txt("v=spf1 ip4:127.0.0.1 -all"))]})
    _send(smtp_server, message(), sender="alice@nomail.test")
    assert _stored().sender_check.sender_domain_result == "nullmx"
    checks(SENDER_DOMAIN="reject")
    mail, _ = _send(smtp_server, message(body="again\r\n"), sender="alice@nomail.test")
    assert _code(mail).startswith("550 5.7.27"), mail
    mail, _ = _send(smtp_server, message(body="third\r\n"), sender="alice@nxdomain.test")
    assert _code(mail).startswith("550 5.1.8"), mail


@pytest.mark.parametrize("failure", ["timeout", "servfail"])
def test_dns_failure_is_a_tempfail_never_a_reject(checks, smtp_server, dns_server, failure):
    if failure == "timeout":
        dns_server.never_answer("sender.test")
    else:
        dns_server.servfail("sender.test")
    checks(**{name: "reject" for name in ("SPF", "SENDER_DOMAIN", "DKIM", "DMARC")})
    mail, _ = _send(smtp_server, message())
    assert _code(mail).startswith("451 4.4.3"), mail
    checks()  # tag: accepted, recorded as temperror
    mail, data = _send(smtp_server, sign(message(body="tagged\r\n")))
    assert data[0] == 250, data
    check = _stored().sender_check
    assert (check.spf_result, check.sender_domain_result, check.dkim_result) == ("temperror",) * 3


def _hostile_signatures() -> bytes:
    # Five signatures whose keys live in a zone that never answers.
    signatures = b"".join(
        b"DKIM-Signature: v=1; a=rsa-sha256; c=relaxed/relaxed; d=d%d.slow.test; s=s;"
        b" h=from:to; bh=47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU=; b=AAAA\r\n" % index
        for index in range(5)
    )
    return signatures + message()


def _timed_send(server, content: bytes, out: dict[str, tuple[int, float]], key: str) -> None:
    start = time.monotonic()
    code = _send(server, content)[1][0]
    out[key] = (code, time.monotonic() - start)


def test_hostile_signatures_cost_the_phase_budget_and_stall_no_one_else(
    checks, smtp_server, dns_server, settings
):
    dns_server.never_answer("slow.test")
    settings.INBOUND_SMTP = {
        **settings.INBOUND_SMTP,
        "DNS": {**settings.INBOUND_SMTP["DNS"], "TIMEOUT": 1.0},
        "SENDER_CHECKS_TIMEOUT": 1,
    }
    big = message(body="x" * 78 + "\r\n") + b"y" * 78 * 4000 + b"\r\n"  # spooled: file I/O
    out: dict[str, tuple[int, float]] = {}
    _timed_send(smtp_server, big, out, "baseline")
    hostile = [
        threading.Thread(
            target=_timed_send, args=(smtp_server, _hostile_signatures(), out, f"h{n}")
        )
        for n in range(6)
    ]
    for thread in hostile:
        thread.start()
    time.sleep(0.8)  # their DATA is in, their verifications wait on DNS
    _timed_send(smtp_server, big, out, "victim")
    for thread in hostile:
        thread.join()
    assert all(out[f"h{n}"][0] == 250 for n in range(6)), out  # tag mode: accepted
    # Each hostile message costs about the one-second budget (five lookups would be 5 s);
    # two verifier threads serve six messages, so the last ones wait up to ~3 budgets.
    assert max(out[f"h{n}"][1] for n in range(6)) < 4.5, out
    assert out["victim"][1] < out["baseline"][1] + 2.0, out
    assert InboundMessage.objects.filter(sender_check__dkim_result="temperror").count() == 6
