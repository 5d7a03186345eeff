"""The MX doctor behind ``manage.py inbound_dns_check``: is a served domain's DNS right?

Pure (no Django): given the resolver, the domains, this host's name and addresses, it
returns findings, each a fact (``ok``), a ``warning`` (worth fixing) or an ``error``
(mail will not reach us, or will be refused), with plain-language advice.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Sequence
from dataclasses import dataclass, field

from django_inbound_smtp.senderauth.dmarc import organizational_domain
from django_inbound_smtp.senderauth.resolver import Resolver, TemporaryDnsError

__all__ = ["Finding", "Report", "check_domain", "check_host"]


@dataclass(frozen=True, slots=True)
class Finding:
    level: str  # "ok", "warning" or "error"
    topic: str  # "MX", "SPF", "DMARC", "rDNS", "DNS"
    text: str


@dataclass
class Report:
    subject: str
    findings: list[Finding] = field(default_factory=list)

    def add(self, level: str, topic: str, text: str) -> None:
        self.findings.append(Finding(level, topic, text))

    @property
    def errors(self) -> int:
        return sum(1 for f in self.findings if f.level == "error")

    @property
    def warnings(self) -> int:
        return sum(1 for f in self.findings if f.level == "warning")


def _same(a: str, b: str) -> bool:
    return ipaddress.ip_address(a) == ipaddress.ip_address(b)


async def _mx(
    report: Report, resolver: Resolver, domain: str, ours: Sequence[str], host: str
) -> None:
    answer = await resolver.lookup(domain, "MX")
    fix = f"publish 'MX 10 {host}.' for {domain}"
    if not answer.exists:
        report.add("error", "MX", f"{domain} does not exist in DNS (NXDOMAIN): {fix}.")
        return
    if any(exchange in (".", "") for _p, exchange in answer.mx):
        report.add(
            "error",
            "MX",
            f"{domain} publishes a null MX (RFC 7505): it refuses all mail. Replace it: {fix}.",
        )
        return
    targets = [(p, e) for p, e in answer.mx] or [(0, domain)]
    if not answer.mx:
        report.add(
            "warning",
            "MX",
            (
                f"{domain} has no MX record; senders fall back to its address records "
                f"(implicit MX). Better: {fix}."
            ),
        )
    here = []
    for preference, exchange in targets:
        addresses = await resolver.addresses(exchange)
        mine = [a for a in addresses if any(_same(a, o) for o in ours)]
        where = ", ".join(addresses) or "no address"
        if not addresses:
            report.add(
                "error",
                "MX",
                (
                    f"MX {preference} {exchange} has no A/AAAA record: senders cannot "
                    f"connect. Give {exchange} an address record, or point the MX at "
                    f"{host}."
                ),
            )
        elif mine:
            here.append(exchange)
            report.add("ok", "MX", f"{preference} {exchange} -> {where} (this host)")
        else:
            report.add("ok", "MX", f"{preference} {exchange} -> {where} (not this host)")
    if not here:
        report.add(
            "error",
            "MX",
            (
                f"no MX of {domain} resolves to this host ({', '.join(ours)}): "
                f"mail for {domain} goes elsewhere. Fix: {fix}, or add this host's "
                "address to an existing MX name."
            ),
        )
    elif here[0] != targets[0][1]:
        report.add(
            "warning",
            "MX",
            f"this host is not the preferred MX of {domain}: {targets[0][1]} is asked first.",
        )


async def _policies(report: Report, resolver: Resolver, domain: str) -> None:
    spf = [
        r for r in (await resolver.lookup(domain, "TXT")).records if r.lower().startswith("v=spf1")
    ]
    if len(spf) > 1:
        report.add(
            "error",
            "SPF",
            (
                f"{domain} has {len(spf)} SPF records; receivers treat that as "
                "an error (permerror). Merge them into one."
            ),
        )
    elif spf:
        report.add("ok", "SPF", spf[0])
    else:
        report.add(
            "warning",
            "SPF",
            (
                f"{domain} has no SPF record, so anyone can send as it. If it sends "
                "no mail, publish TXT 'v=spf1 -all'; otherwise list its senders, "
                "e.g. 'v=spf1 mx -all'."
            ),
        )
    org = organizational_domain(domain)
    for name in dict.fromkeys((domain, org)):
        records = [
            r
            for r in (await resolver.lookup(f"_dmarc.{name}", "TXT")).records
            if r.replace(" ", "").lower().startswith("v=dmarc1")
        ]
        if records:
            report.add("ok", "DMARC", f"_dmarc.{name}: {records[0]}")
            return
    report.add(
        "warning",
        "DMARC",
        (
            f"no DMARC record for {domain}. Publish TXT at _dmarc.{org}, e.g. "
            f"'v=DMARC1; p=none; rua=mailto:dmarc@{org}', then move to p=quarantine "
            "or p=reject."
        ),
    )


async def check_domain(
    resolver: Resolver, domain: str, *, ours: Sequence[str], host: str
) -> Report:
    """MX (does it reach this host?), SPF and DMARC of one served domain."""
    report = Report(domain)
    try:
        await _mx(report, resolver, domain.lower().rstrip("."), ours, host)
        await _policies(report, resolver, domain.lower().rstrip("."))
    except TemporaryDnsError as error:
        report.add(
            "error",
            "DNS",
            (
                f"lookup failed ({error}); the DNS servers did not answer. Try "
                "again, or check the resolver (INBOUND_SMTP['DNS'])."
            ),
        )
    return report


async def check_host(resolver: Resolver, *, host: str, ours: Sequence[str]) -> Report:
    """Reverse DNS of this host's addresses: each should name a host that resolves back."""
    report = Report(f"this host ({host})")
    if not ours:
        report.add(
            "error",
            "DNS",
            (
                f"{host} has no address in DNS and none was given: pass --ip with "
                "this host's public address(es)."
            ),
        )
        return report
    try:
        for address in ours:
            names = (await resolver.ptr(address)).records
            confirmed = [
                n for n in names if any(_same(address, a) for a in await resolver.addresses(n))
            ]
            if confirmed:
                level = "ok" if host.lower() in confirmed else "warning"
                extra = (
                    ""
                    if level == "ok"
                    else f"; HOSTNAME is {host}: make them match (ask your provider for the PTR)"
                )
                report.add(level, "rDNS", f"{address} -> {confirmed[0]} (forward-confirmed){extra}")
            elif names:
                report.add(
                    "warning",
                    "rDNS",
                    (
                        f"{address} -> {names[0]}, which does not resolve back to {address}. "
                        f"Give {names[0]} an address record for {address}."
                    ),
                )
            else:
                report.add(
                    "warning",
                    "rDNS",
                    (
                        f"{address} has no PTR record. Ask your hosting provider to set "
                        f"it to {host}; some senders distrust hosts without one."
                    ),
                )
    except TemporaryDnsError as error:
        report.add("error", "DNS", f"lookup failed ({error}).")
    return report
