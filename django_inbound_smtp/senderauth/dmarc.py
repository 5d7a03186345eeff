"""DMARC (RFC 7489): record discovery, identifier alignment and the sender's policy.
Pure: no Django; the resolver is passed in. The organizational domain comes from the
Public Suffix List bundled with ``publicsuffixlist`` (the ``auth`` extra; without it
the organizational domain is the last two labels).
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from django_inbound_smtp.senderauth.resolver import Resolver, TemporaryDnsError

__all__ = ["DmarcOutcome", "aligned", "evaluate", "organizational_domain"]


@dataclass(frozen=True, slots=True)
class DmarcOutcome:
    """``result`` is ``pass fail none temperror permerror``. ``policy`` is the published
    ``p=`` (or ``sp=``) that applies, ``""`` without a record. ``dkim_aligned`` and
    ``spf_aligned`` are computed with or without a record (relaxed by default)."""

    result: str
    reason: str
    policy: str = ""
    dkim_aligned: bool = False
    spf_aligned: bool = False

    @property
    def verified(self) -> bool:
        """The From domain is authenticated: an aligned SPF or DKIM pass."""
        return self.dkim_aligned or self.spf_aligned


@functools.cache
def _psl() -> Any:
    try:
        from publicsuffixlist import PublicSuffixList
    except ImportError:  # pragma: no cover - the auth extra is not installed
        return None
    return PublicSuffixList()  # the bundled list: no download, ~30 ms once


def warm_up() -> None:
    """Load the suffix list (call it off the event loop, once)."""
    _psl()


def loaded() -> bool:
    """Whether :func:`warm_up` has run (later calls cost nothing)."""
    return bool(_psl.cache_info().currsize)


def organizational_domain(domain: str) -> str:
    """RFC 7489 §3.2: the registered domain (``a.b.example.co.uk`` → ``example.co.uk``)."""
    domain = domain.lower().rstrip(".")
    psl = _psl()
    if psl is None:
        return ".".join(domain.split(".")[-2:])
    return str(psl.privatesuffix(domain) or domain)


def aligned(a: str, b: str, *, strict: bool) -> bool:
    """Identifier alignment (§3.1): equal (strict) or same organizational domain (relaxed)."""
    a, b = a.lower().rstrip("."), b.lower().rstrip(".")
    if strict or not a or not b:
        return bool(a) and a == b
    return organizational_domain(a) == organizational_domain(b)


def _tags(record: str) -> dict[str, str]:
    tags: dict[str, str] = {}
    for part in record.split(";"):
        key, sep, value = part.partition("=")
        if sep:
            tags.setdefault(key.strip().lower(), value.strip())
    return tags


async def _record(resolver: Resolver, domain: str) -> tuple[dict[str, str] | None, str]:
    """The DMARC tags for ``domain`` (§6.6.3: the domain, then its organizational domain)."""
    org = organizational_domain(domain)
    for candidate in dict.fromkeys((domain, org)):
        records = [
            r
            for r in (await resolver.lookup(f"_dmarc.{candidate}", "TXT")).records
            if r.replace(" ", "").lower().startswith("v=dmarc1")
        ]
        if len(records) == 1:
            return _tags(records[0]), candidate
        # none, or more than one (§6.6.3: then no DMARC record): try the next.
    return None, ""


async def evaluate(
    resolver: Resolver,
    *,
    from_domain: str,
    spf_result: str,
    spf_domain: str,
    dkim_passed: Sequence[str],
) -> DmarcOutcome:
    """DMARC for a message whose RFC 5322.From domain is ``from_domain``."""
    if not from_domain:
        return DmarcOutcome("permerror", "no single From address to check")
    try:
        tags, found_at = await _record(resolver, from_domain)
    except TemporaryDnsError as error:
        return DmarcOutcome("temperror", str(error))
    tags = tags or {}
    strict_dkim, strict_spf = tags.get("adkim") == "s", tags.get("aspf") == "s"
    dkim_ok = any(aligned(d, from_domain, strict=strict_dkim) for d in dkim_passed)
    spf_ok = spf_result == "pass" and aligned(spf_domain, from_domain, strict=strict_spf)
    if not found_at:
        return DmarcOutcome(
            "none", f"no DMARC record for {from_domain}", dkim_aligned=dkim_ok, spf_aligned=spf_ok
        )
    policy = tags.get("p", "").lower()
    if found_at != from_domain and tags.get("sp"):
        policy = tags["sp"].lower()  # §6.3: sp= applies to subdomains
    if policy not in ("none", "quarantine", "reject"):
        return DmarcOutcome(
            "permerror", f"bad p= in _dmarc.{found_at}", dkim_aligned=dkim_ok, spf_aligned=spf_ok
        )
    if policy == "reject" and tags.get("pct", "100").strip() != "100":
        # §6.6.4: messages outside the sampled percentage get the next policy down; we do
        # not sample, so a partial reject is never a reject.
        policy = "quarantine"
    if dkim_ok or spf_ok:
        how = "DKIM" if dkim_ok else "SPF"
        return DmarcOutcome(
            "pass",
            f"{from_domain}: aligned {how} pass",
            policy,
            dkim_aligned=dkim_ok,
            spf_aligned=spf_ok,
        )
    return DmarcOutcome("fail", f"{from_domain}: no aligned SPF or DKIM pass (p={policy})", policy)
