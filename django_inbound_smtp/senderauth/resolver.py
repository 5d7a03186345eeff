"""The one DNS resolver of the server: dnspython's async resolver, with timeouts and a
TTL-aware cache. Pure (no Django): settings are passed in by the caller.

Results are values, errors are typed: an answer (possibly empty: NODATA), a
nonexistent name (NXDOMAIN), or :class:`TemporaryDnsError` for a timeout, SERVFAIL or
unreachable server. A temporary error must never turn into a permanent reject.
"""

from __future__ import annotations

import asyncio
import ipaddress
from collections.abc import Sequence
from dataclasses import dataclass

import dns.asyncresolver
import dns.exception
import dns.name
import dns.nameserver
import dns.resolver
import dns.reversename

__all__ = ["Answer", "Resolver", "TemporaryDnsError", "parse_nameserver"]

# RFC 1035 §2.3.4: a name may not exceed 255 octets; a hostile sender or HELO name
# never reaches the wire if it is not a name.
_MAX_NAME = 253


class TemporaryDnsError(Exception):
    """Timeout, SERVFAIL or no reachable server: try again later, never reject."""


@dataclass(frozen=True, slots=True)
class Answer:
    """The records of one lookup, as text (TXT strings joined, names without the root
    dot, MX as ``(preference, exchange)``). ``exists`` is False for NXDOMAIN."""

    exists: bool
    records: tuple[str, ...] = ()
    mx: tuple[tuple[int, str], ...] = ()

    @property
    def void(self) -> bool:
        """NXDOMAIN or an empty answer (RFC 7208 §4.6.4 "void lookup")."""
        return not self.records and not self.mx


def parse_nameserver(value: str) -> tuple[str, int]:
    """``"127.0.0.1"``, ``"127.0.0.1:5353"``, ``"[::1]:53"`` or ``"::1"`` → (address, port)."""
    value = value.strip()
    if value.startswith("["):
        host, _, port = value[1:].partition("]")
        return str(ipaddress.ip_address(host)), int(port.lstrip(":") or 53)
    try:
        return str(ipaddress.ip_address(value)), 53
    except ValueError:
        host, _, port = value.rpartition(":")
        return str(ipaddress.ip_address(host)), int(port)


def _text(rdata: object) -> str:
    strings = getattr(rdata, "strings", None)
    if strings is not None:
        # RFC 7208 §3.3: the character-strings of one TXT record are concatenated.
        return b"".join(strings).decode("utf-8", "replace")
    target = getattr(rdata, "target", None)
    if target is not None:
        return str(target.to_text(omit_final_dot=True)).lower()
    return str(getattr(rdata, "address", rdata))


class Resolver:
    """Async lookups with a per-query ``timeout`` (seconds) and a TTL-aware LRU cache.

    ``nameservers`` are ``"host[:port]"`` strings; empty means the system's
    (``/etc/resolv.conf``). One instance is shared by every session of the server.
    """

    def __init__(
        self, *, nameservers: Sequence[str] = (), timeout: float = 3.0, cache_size: int = 5000
    ) -> None:
        resolver = dns.asyncresolver.Resolver(configure=not nameservers)
        if nameservers:
            resolver.nameservers = [
                dns.nameserver.Do53Nameserver(*parse_nameserver(server)) for server in nameservers
            ]
        resolver.timeout = timeout
        resolver.lifetime = timeout
        # dnspython's LRUCache honours each answer's TTL (and caches NXDOMAIN).
        resolver.cache = dns.resolver.LRUCache(cache_size) if cache_size else None
        self._resolver = resolver
        #: Lookups asked (cache hits included); tests and benchmarks read it.
        self.queries = 0

    async def lookup(self, name: str, rdtype: str) -> Answer:
        """Resolve ``name``/``rdtype``; raise :class:`TemporaryDnsError` on a temporary failure."""
        name = name.rstrip(".")
        if not name or len(name) > _MAX_NAME:
            return Answer(exists=False)
        try:
            qname = dns.name.from_text(name)
        except dns.exception.DNSException:
            return Answer(exists=False)  # not a domain name: nothing can exist there
        self.queries += 1
        try:
            answer = await self._resolver.resolve(qname, rdtype, raise_on_no_answer=False)
        except dns.resolver.NXDOMAIN:
            return Answer(exists=False)
        except dns.resolver.YXDOMAIN:
            return Answer(exists=False)
        except (dns.exception.Timeout, dns.resolver.NoNameservers) as error:
            raise TemporaryDnsError(f"{rdtype} {name}: {type(error).__name__}") from error
        except (dns.exception.DNSException, OSError) as error:
            raise TemporaryDnsError(f"{rdtype} {name}: {type(error).__name__}") from error
        rrset = answer.rrset
        if rrset is None:
            return Answer(exists=True)
        if rdtype == "MX":
            mx = tuple(
                sorted(
                    (int(r.preference), str(r.exchange.to_text(omit_final_dot=True)).lower())
                    for r in rrset
                )
            )
            return Answer(exists=True, mx=mx)
        return Answer(exists=True, records=tuple(_text(r) for r in rrset))

    async def addresses(self, name: str) -> tuple[str, ...]:
        """A and AAAA records of ``name`` (both asked; a temporary error raises)."""
        a, aaaa = await asyncio.gather(self.lookup(name, "A"), self.lookup(name, "AAAA"))
        return a.records + aaaa.records

    async def ptr(self, ip: str) -> Answer:
        """PTR records of an address (``in-addr.arpa`` / ``ip6.arpa``)."""
        name = dns.reversename.from_address(ip).to_text(omit_final_dot=True)
        return await self.lookup(name, "PTR")
