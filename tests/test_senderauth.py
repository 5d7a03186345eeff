"""Tier 1-3: the evaluators against the loopback DNS server (no monkeypatching).

SPF (RFC 7208) results, include/redirect chains and limits; DNSBL weights; iprev;
sender domain (MX, implicit MX, null MX); DMARC discovery and alignment; the
Authentication-Results field and forged-field renaming.
"""

from __future__ import annotations

import pytest

from django_inbound_smtp.senderauth import dmarc, network, spf
from django_inbound_smtp.senderauth.resolver import Resolver, TemporaryDnsError
from django_inbound_smtp.senderauth.results import (
    Verdict,
    Verdicts,
    authentication_results,
    from_domain,
    rename_forged,
)
from tests.authkit import txt


@pytest.fixture
def resolver(dns_server) -> Resolver:
    return Resolver(nameservers=[dns_server.address], timeout=0.5, cache_size=0)


async def _spf(
    resolver: Resolver,
    domain: str = "s.test",
    ip: str = "192.0.2.1",
    sender: str | None = None,
    helo: str = "h.test",
) -> spf.SpfResult:
    return await spf.check_host(
        resolver, ip=ip, domain=domain, sender=sender or f"user@{domain}", helo=helo
    )


@pytest.mark.parametrize(
    ("record", "expected"),
    [
        ("v=spf1 ip4:192.0.2.0/24 -all", "pass"),
        ("v=spf1 ip4:198.51.100.1 -all", "fail"),
        ("v=spf1 ~all", "softfail"),
        ("v=spf1 ?all", "neutral"),
        ("v=spf1 ip4:198.51.100.1", "neutral"),
        ("v=spf1 ip4:192.0.2.1/33 -all", "permerror"),
        ("v=spf1 bogus:x -all", "permerror"),
        ("v=spf1 redirect=a.test redirect=b.test", "permerror"),
        ("v=spf1 a -all", "pass"),
        ("v=spf1 a:other.test/24 -all", "pass"),
        ("v=spf1 mx -all", "pass"),
        ("v=spf1 exists:%{i}.ok.test -all", "pass"),
        ("v=spf1 exists:%{ir}.%{v}.ok.test -all", "pass"),
        ("v=spf1 exists:%{l}.users.test -all", "pass"),
        ("v=spf1 ip6:2001:db8::/32 -all", "fail"),
        ("v=spf1 ptr -all", "pass"),
        ("v=spf1 exists:%{z}.x.test -all", "permerror"),
    ],
)
async def test_spf_results(dns_server, resolver, record, expected):
    dns_server.load(
        {
            "s.test": [("TXT", txt(record)), ("A", "192.0.2.1"), ("MX", "5 mail.s.test.")],
            "mail.s.test": [("A", "192.0.2.1")],
            "other.test": [("A", "192.0.2.200")],
            "192.0.2.1.ok.test": [("A", "127.0.0.2")],
            "1.2.0.192.in-addr.ok.test": [("A", "127.0.0.2")],
            "user.users.test": [("A", "127.0.0.2")],
            "1.2.0.192.in-addr.arpa": [("PTR", "host.s.test.")],
            "host.s.test": [("A", "192.0.2.1")],
        }
    )
    result = await _spf(resolver)
    assert result.result == expected, result


async def test_spf_none_without_record_and_permerror_with_two(dns_server, resolver):
    dns_server.load({"s.test": [("TXT", txt("google-site-verification=x"))]})
    assert (await _spf(resolver)).result == "none"
    assert (await _spf(resolver, domain="nx.test")).result == "none"
    dns_server.load({"s.test": [("TXT", txt("v=spf1 -all")), ("TXT", txt("v=spf1 +all"))]})
    assert (await _spf(resolver)).result == "permerror"


async def test_spf_include_and_redirect_chains(dns_server, resolver):
    dns_server.load(
        {
            "s.test": [("TXT", txt("v=spf1 include:inc.test redirect=red.test"))],
            "inc.test": [("TXT", txt("v=spf1 ip4:198.51.100.0/24 -all"))],
            "red.test": [("TXT", txt("v=spf1 include:deep.test ~all"))],
            "deep.test": [("TXT", txt("v=spf1 ip4:192.0.2.1 -all"))],
        }
    )
    assert (await _spf(resolver)).result == "pass"  # via redirect -> include
    assert (await _spf(resolver, ip="198.51.100.7")).result == "pass"  # via include
    assert (await _spf(resolver, ip="203.0.113.9")).result == "softfail"  # red.test's ~all
    # An include of a domain without SPF is a permerror (§5.2); a redirect to one too.
    dns_server.load({"s.test": [("TXT", txt("v=spf1 include:nospf.test -all"))]})
    dns_server.load({"nospf.test": [("A", "192.0.2.1")]})
    assert (await _spf(resolver)).result == "permerror"


async def test_spf_ten_lookup_limit(dns_server, resolver):
    chain = {f"l{i}.test": [("TXT", txt(f"v=spf1 include:l{i + 1}.test -all"))] for i in range(11)}
    chain["l11.test"] = [("TXT", txt("v=spf1 +all"))]
    dns_server.load(chain)
    result = await _spf(resolver, domain="l2.test")  # 9 includes + l11: within the limit
    assert result.result == "pass", result
    result = await _spf(resolver, domain="l0.test")  # 11 includes
    assert result.result == "permerror"
    assert "more than 10 DNS lookups" in result.reason


async def test_spf_void_lookup_limit(dns_server, resolver):
    dns_server.load({"s.test": [("TXT", txt("v=spf1 a:v1.test a:v2.test a:v3.test -all"))]})
    result = await _spf(resolver)
    assert result.result == "permerror"
    assert "void lookups" in result.reason
    dns_server.load({"s.test": [("TXT", txt("v=spf1 a:v1.test a:v2.test -all"))]})
    assert (await _spf(resolver)).result == "fail"


async def test_spf_temperror_on_timeout_and_servfail(dns_server, resolver):
    dns_server.never_answer("slow.test")
    dns_server.servfail("broken.test")
    assert (await _spf(resolver, domain="slow.test")).result == "temperror"
    assert (await _spf(resolver, domain="broken.test")).result == "temperror"
    dns_server.load({"s.test": [("TXT", txt("v=spf1 include:slow.test -all"))]})
    assert (await _spf(resolver)).result == "temperror"


async def test_dnsbl_weights_and_error_codes(dns_server, resolver):
    zones = [network.parse_zone(z) for z in ("bl.test*2", "wl.test*-2", "strict.test=127.0.0.4")]
    dns_server.load({"1.2.0.192.bl.test": [("A", "127.0.0.2")]})
    assert (await network.dnsbl(resolver, "192.0.2.1", zones, threshold=2)).result == "fail"
    dns_server.load({"1.2.0.192.wl.test": [("A", "127.0.0.2")]})
    assert (await network.dnsbl(resolver, "192.0.2.1", zones, threshold=2)).result == "pass"
    # Only the listed return code counts; 127.255.255.x are the list's own errors.
    dns_server.load({"9.2.0.192.strict.test": [("A", "127.0.0.2")]})
    dns_server.load({"9.2.0.192.bl.test": [("A", "127.255.255.254")]})
    assert (await network.dnsbl(resolver, "192.0.2.9", zones, threshold=1)).result == "pass"
    assert network.parse_zone("list.dnswl.org=127.0.10.2;127.0.10.3*-3").weight == -3
    with pytest.raises(ValueError, match="not a DNSBL zone"):
        network.parse_zone("bad zone")


async def test_iprev(dns_server, resolver):
    dns_server.load(
        {
            "1.2.0.192.in-addr.arpa": [("PTR", "mail.s.test.")],
            "mail.s.test": [("A", "192.0.2.1")],
            "2.2.0.192.in-addr.arpa": [("PTR", "liar.s.test.")],
            "liar.s.test": [("A", "192.0.2.99")],
        }
    )
    assert (await network.iprev(resolver, "192.0.2.1")).result == "pass"
    assert (await network.iprev(resolver, "192.0.2.2")).result == "fail"
    assert (await network.iprev(resolver, "192.0.2.3")).result == "permerror"
    dns_server.never_answer("4.2.0.192.in-addr.arpa")
    assert (await network.iprev(resolver, "192.0.2.4")).result == "temperror"


async def test_sender_domain(dns_server, resolver):
    dns_server.load(
        {
            "mx.test": [("MX", "10 in.mx.test.")],
            "implicit.test": [("A", "192.0.2.1")],
            "null.test": [("MX", "0 .")],
            "txtonly.test": [("TXT", txt("hello"))],
        }
    )
    results = {
        d: (await network.sender_domain(resolver, d)).result
        for d in ("mx.test", "implicit.test", "null.test", "txtonly.test", "nx.test")
    }
    assert results == {
        "mx.test": "pass",
        "implicit.test": "pass",
        "null.test": "nullmx",
        "txtonly.test": "fail",
        "nx.test": "fail",
    }


async def test_dmarc_discovery_alignment_and_subdomain_policy(dns_server, resolver):
    dns_server.load(
        {
            "_dmarc.org.test": [("TXT", txt("v=DMARC1; p=reject; sp=quarantine; adkim=s"))],
        }
    )
    ok = await dmarc.evaluate(
        resolver,
        from_domain="org.test",
        spf_result="fail",
        spf_domain="x.test",
        dkim_passed=["org.test"],
    )
    assert (ok.result, ok.policy, ok.verified) == ("pass", "reject", True)
    # adkim=s: a signature of a subdomain is not aligned; SPF pass of a subdomain is (relaxed).
    strict = await dmarc.evaluate(
        resolver,
        from_domain="org.test",
        spf_result="pass",
        spf_domain="bounce.org.test",
        dkim_passed=["mail.org.test"],
    )
    assert (strict.result, strict.dkim_aligned, strict.spf_aligned) == ("pass", False, True)
    sub = await dmarc.evaluate(
        resolver,
        from_domain="news.org.test",
        spf_result="none",
        spf_domain="x.test",
        dkim_passed=[],
    )
    assert (sub.result, sub.policy) == ("fail", "quarantine")
    none = await dmarc.evaluate(
        resolver,
        from_domain="free.test",
        spf_result="pass",
        spf_domain="free.test",
        dkim_passed=[],
    )
    assert (none.result, none.verified) == ("none", True)


def test_organizational_domain_uses_the_public_suffix_list():
    assert dmarc.organizational_domain("a.b.example.co.uk") == "example.co.uk"
    assert dmarc.aligned("mail.example.co.uk", "example.co.uk", strict=False)
    assert not dmarc.aligned("example.co.uk", "other.co.uk", strict=False)


def test_authentication_results_field_and_forged_renaming():
    verdicts = Verdicts(
        values={
            "iprev": Verdict("pass", "", "client.test"),
            "spf": Verdict("fail", "s.test: -all (matched) \\ evil\r\nX: y"),
        }
    )
    header = authentication_results(
        "mx.test", verdicts, mail_from="a@s.test", helo="client.test", peer="192.0.2.1"
    )
    assert header == (
        b"Authentication-Results: mx.test;\r\n\tiprev=pass (client.test) policy.iprev=192.0.2.1;"
        b"\r\n\tspf=fail (s.test: -all matched  evilX: y) smtp.mailfrom=a@s.test\r\n"
    )
    content = (
        b"Authentication-Results: MX.test (comment);\r\n dkim=pass\r\n"
        b"authentication-results: other.test; spf=pass\r\nFrom: a@b.test\r\n\r\n"
        b"Authentication-Results: mx.test; body text\r\n"
    )
    renamed, count = rename_forged(content, "mx.test")
    assert count == 1
    assert renamed.startswith(b"X-Original-Authentication-Results: MX.test (comment);\r\n dkim")
    assert renamed.endswith(b"\r\n\r\nAuthentication-Results: mx.test; body text\r\n")
    assert from_domain(content) == "b.test"
    assert from_domain(b"From: a@x.test, b@y.test\r\n\r\n") == ""


async def test_resolver_raises_temporary_errors_and_caches(dns_server):
    resolver = Resolver(nameservers=[dns_server.address], timeout=0.3, cache_size=100)
    dns_server.load({"c.test": [("A", "192.0.2.1")]})
    dns_server.never_answer("slow.test")
    assert (await resolver.lookup("c.test", "A")).records == ("192.0.2.1",)
    assert (await resolver.lookup("c.test", "A")).records == ("192.0.2.1",)
    assert dns_server.asked("A").count("c.test") == 1  # the second came from the cache
    with pytest.raises(TemporaryDnsError):
        await resolver.lookup("x.slow.test", "A")
    assert not (await resolver.lookup("bad..name", "A")).exists
