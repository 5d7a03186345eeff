"""Tier 5: ``manage.py inbound_dns_check`` against the loopback DNS server."""

from __future__ import annotations

from io import StringIO

import pytest
from django.core.management import CommandError, call_command

from tests.authkit import txt

pytestmark = pytest.mark.django_db


@pytest.fixture
def dns(dns_server, settings):
    settings.INBOUND_SMTP = {
        **settings.INBOUND_SMTP,
        "DNS": {"NAMESERVERS": [dns_server.address], "TIMEOUT": 0.5},
    }
    dns_server.load(
        {
            "mx.test": [("A", "192.0.2.25")],
            "25.2.0.192.in-addr.arpa": [("PTR", "mx.test.")],
        }
    )
    return dns_server


def _run(*args: str) -> tuple[str, str | None]:
    out = StringIO()
    try:
        call_command("inbound_dns_check", *args, stdout=out)
    except CommandError as error:
        return out.getvalue(), str(error)
    return out.getvalue(), None


def test_a_correct_domain_passes(dns):
    dns.load(
        {
            "good.test": [("MX", "10 mx.test."), ("TXT", txt("v=spf1 mx -all"))],
            "_dmarc.good.test": [("TXT", txt("v=DMARC1; p=reject"))],
        }
    )
    out, error = _run("good.test")
    assert error is None, out
    assert "10 mx.test -> 192.0.2.25 (this host)" in out
    assert "v=spf1 mx -all" in out
    assert "192.0.2.25 -> mx.test (forward-confirmed)" in out
    assert "0 error(s), 0 warning(s)." in out


def test_a_wrong_mx_fails_with_advice(dns, make_mailbox):
    make_mailbox("user@wrong.test")
    dns.load(
        {
            "wrong.test": [("MX", "10 old-mx.example.test.")],
            "old-mx.example.test": [("A", "198.51.100.7")],
        }
    )
    out, error = _run()  # the domains of the mailboxes
    assert error is not None
    assert "1 error(s)" in error
    assert "10 old-mx.example.test -> 198.51.100.7 (not this host)" in out
    assert "no MX of wrong.test resolves to this host (192.0.2.25)" in out
    assert "publish 'MX 10 mx.test.' for wrong.test" in out
    assert "no SPF record" in out
    assert "no DMARC record" in out


def test_null_mx_missing_domain_and_dns_failure(dns):
    dns.load({"null.test": [("MX", "0 .")]})
    dns.never_answer("slow.test")
    out, error = _run("null.test", "nx.test", "slow.test", "--ip", "192.0.2.25")
    assert error is not None
    assert "null MX" in out
    assert "nx.test does not exist" in out
    assert "lookup failed" in out


def test_strict_fails_on_warnings(dns):
    dns.load({"lax.test": [("MX", "10 mx.test.")]})
    assert _run("lax.test")[1] is None
    assert _run("lax.test", "--strict")[1] is not None
