"""Checks on the client and the sender's domain: DNSBL/DNSWL, forward-confirmed reverse
DNS (``iprev``, RFC 8601 §3) and "can the sender domain receive mail" (RFC 5321 §5.1,
null MX RFC 7505). Pure: no Django; the resolver is passed in.
"""

from __future__ import annotations

import asyncio
import ipaddress
import re
from collections.abc import Sequence
from dataclasses import dataclass

import dns.reversename

from django_inbound_smtp.senderauth.resolver import Resolver, TemporaryDnsError

__all__ = ["DnsblZone", "Outcome", "dnsbl", "iprev", "parse_zone", "sender_domain"]

_MAX_PTR_NAMES = 10


@dataclass(frozen=True, slots=True)
class Outcome:
    """A check's result word (RFC 8601 vocabulary where one exists) and a reason."""

    result: str
    reason: str
    #: Extra facts worth storing (the confirmed name, the zones that listed the client).
    detail: str = ""


@dataclass(frozen=True, slots=True)
class DnsblZone:
    """A postscreen-style list entry: ``zone[=127.0.0.2]*weight`` (weight < 0: allowlist)."""

    zone: str
    weight: int = 1
    only: tuple[str, ...] = ()


_ZONE = re.compile(r"^([A-Za-z0-9_.-]+?)(?:=([0-9.;]+))?(?:\*(-?\d+))?$")


def parse_zone(text: str) -> DnsblZone:
    """``"zen.spamhaus.org*3"``, ``"list.dnswl.org=127.0.10.2;127.0.10.3*-2"``; ValueError."""
    match = _ZONE.match(text.strip())
    if match is None:
        raise ValueError(f"not a DNSBL zone: {text!r}")
    zone, only, weight = match.groups()
    addresses = tuple(a for a in (only or "").split(";") if a)
    for address in addresses:
        ipaddress.IPv4Address(address)
    return DnsblZone(zone.strip(".").lower(), int(weight) if weight else 1, addresses)


def _reverse_labels(ip: str) -> str:
    # 1.2.3.4 -> 4.3.2.1; IPv6 -> 32 nibbles reversed (RFC 5782 §2.4).
    name = dns.reversename.from_address(ip).to_text(omit_final_dot=True)
    return name.removesuffix(".in-addr.arpa").removesuffix(".ip6.arpa")


async def _listed(resolver: Resolver, ip: str, zone: DnsblZone) -> bool:
    answer = await resolver.lookup(f"{_reverse_labels(ip)}.{zone.zone}", "A")
    # RFC 5782 §2.1: listings are 127.0.0.0/8; 127.255.255.0/24 are the lists' own
    # error codes (e.g. "query via a public resolver refused"), never a listing.
    hits = [
        a
        for a in answer.records
        if a.startswith("127.") and not a.startswith("127.255.255.") and a != "127.0.0.1"
    ]
    return bool([a for a in hits if a in zone.only] if zone.only else hits)


async def dnsbl(
    resolver: Resolver, ip: str, zones: Sequence[DnsblZone], *, threshold: int
) -> Outcome:
    """Weighted score over all zones (postscreen's model); ``fail`` at ``threshold`` or more."""
    if not zones:
        return Outcome("none", "no DNSBL zones configured")
    address = ipaddress.ip_address(ip.split("%", 1)[0])
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    results = await asyncio.gather(
        *(_listed(resolver, str(address), zone) for zone in zones), return_exceptions=True
    )
    score, hits, errors = 0, [], []
    for zone, listed in zip(zones, results, strict=True):
        if isinstance(listed, TemporaryDnsError):
            errors.append(zone.zone)
        elif isinstance(listed, BaseException):
            raise listed
        elif listed:
            score += zone.weight
            hits.append(f"{zone.zone}*{zone.weight}")
    detail = " ".join(hits)
    if score >= threshold:
        return Outcome("fail", f"score {score} >= {threshold}: {detail}", detail)
    if (
        errors
        and score + sum(z.weight for z in zones if z.zone in errors and z.weight > 0) >= threshold
    ):
        # The unanswered lists could have tipped the score: we do not know.
        return Outcome("temperror", f"no answer from {', '.join(errors)}", detail)
    return Outcome(
        "pass", f"score {score} < {threshold}" + (f": {detail}" if detail else ""), detail
    )


async def iprev(resolver: Resolver, ip: str) -> Outcome:
    """Forward-confirmed reverse DNS (RFC 8601 §3 ``iprev``): a PTR name whose A/AAAA
    records include ``ip``. ``permerror`` when there is no PTR at all."""
    address = str(ipaddress.ip_address(ip.split("%", 1)[0]))
    try:
        names = (await resolver.ptr(address)).records
        if not names:
            return Outcome("permerror", f"no PTR record for {address}")
        forward = await asyncio.gather(
            *(resolver.addresses(name) for name in names[:_MAX_PTR_NAMES]), return_exceptions=True
        )
    except TemporaryDnsError as error:
        return Outcome("temperror", str(error))
    temporary = False
    for name, addresses in zip(names, forward, strict=False):
        if isinstance(addresses, TemporaryDnsError):
            temporary = True
        elif isinstance(addresses, BaseException):
            raise addresses
        elif address in {str(ipaddress.ip_address(a)) for a in addresses}:
            return Outcome("pass", f"{address} is {name}", name)
    if temporary:
        return Outcome("temperror", f"forward lookup of the PTR names of {address} failed")
    return Outcome("fail", f"no PTR name of {address} resolves back to it: {', '.join(names[:3])}")


async def sender_domain(resolver: Resolver, domain: str) -> Outcome:
    """Can ``domain`` receive mail (bounces)? MX, else A/AAAA (RFC 5321 §5.1); a null MX
    (RFC 7505: one MX ``0 .``) means it cannot. ``nullmx`` and ``fail`` are refusals."""
    try:
        mx = await resolver.lookup(domain, "MX")
        if not mx.exists:
            return Outcome("fail", f"{domain} does not exist (NXDOMAIN)")
        if mx.mx:
            if any(exchange in ("", ".", "@") for _pref, exchange in mx.mx):
                return Outcome("nullmx", f"{domain} publishes a null MX: it sends no mail")
            return Outcome("pass", f"{domain} has MX {mx.mx[0][1]}", mx.mx[0][1])
        if await resolver.addresses(domain):
            return Outcome("pass", f"{domain} has no MX but an address record (implicit MX)")
    except TemporaryDnsError as error:
        return Outcome("temperror", str(error))
    return Outcome("fail", f"{domain} has no MX and no address record")
