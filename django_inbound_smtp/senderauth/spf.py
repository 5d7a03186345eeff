"""SPF (RFC 7208): ``check_host()`` over the async resolver. Pure: no Django.

Implemented: every mechanism (``all include a mx ptr ip4 ip6 exists``), ``redirect``,
the macro language of §7 for domain-specs (letters ``s l o d i h v``, transformers
and delimiters), the 10-lookup limit (§4.6.4), the void-lookup limit of 2, the limits
of 10 MX and 10 PTR names. Not implemented: the ``exp=`` explanation (we never quote
it to the client) and the ``%{p}`` macro, which expands to ``unknown`` as §7.3 allows.
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass, field

from django_inbound_smtp.senderauth.resolver import Answer, Resolver, TemporaryDnsError

__all__ = ["MAX_LOOKUPS", "MAX_VOID_LOOKUPS", "SpfResult", "check_host"]

MAX_LOOKUPS = 10  # §4.6.4: include, a, mx, ptr, exists and redirect
MAX_VOID_LOOKUPS = 2  # §4.6.4: lookups answering NXDOMAIN or nothing
_MAX_NAMES = 10  # §4.6.4: MX exchanges per "mx", PTR names per "ptr"
_QUALIFIERS = {"+": "pass", "-": "fail", "~": "softfail", "?": "neutral"}
_MECHANISMS = ("all", "include", "a", "mx", "ptr", "ip4", "ip6", "exists")
_MACRO = re.compile(r"%(?:\{([slodiphcrtv])(\d*)(r?)([.\-+,/_=]*)\}|(.))", re.IGNORECASE)
_LABEL = re.compile(r"^(?!-)[A-Za-z0-9_-]{1,63}(?<!-)$")


@dataclass(frozen=True, slots=True)
class SpfResult:
    """One of ``pass fail softfail neutral none permerror temperror`` and why."""

    result: str
    reason: str


class _PermError(Exception):
    pass


@dataclass
class _State:
    resolver: Resolver
    ip: ipaddress.IPv4Address | ipaddress.IPv6Address
    sender: str
    helo: str
    lookups: int = 0
    voids: int = 0
    trail: list[str] = field(default_factory=list)

    def count(self) -> None:
        self.lookups += 1
        if self.lookups > MAX_LOOKUPS:
            raise _PermError(f"more than {MAX_LOOKUPS} DNS lookups")

    async def lookup(self, name: str, rdtype: str) -> Answer:
        answer = await self.resolver.lookup(name, rdtype)
        if answer.void:
            self.voids += 1
            if self.voids > MAX_VOID_LOOKUPS:
                raise _PermError(f"more than {MAX_VOID_LOOKUPS} void lookups")
        return answer


def _valid_domain(domain: str) -> bool:
    labels = domain.rstrip(".").split(".")
    return len(labels) > 1 and all(_LABEL.match(label) for label in labels)


def _macro_value(letter: str, state: _State, domain: str) -> str:
    local, _, sender_domain = state.sender.rpartition("@")
    ip = state.ip
    values = {
        "s": state.sender,
        "l": local or "postmaster",
        "o": sender_domain,
        "d": domain,
        "i": ip.exploded if ip.version == 4 else ".".join(ip.exploded.replace(":", "")),
        "p": "unknown",
        "h": state.helo,
        "v": "in-addr" if ip.version == 4 else "ip6",
    }
    if letter not in values:
        raise _PermError(f"macro %{{{letter}}} is only allowed in exp=")
    return values[letter]


def expand(spec: str, state: _State, domain: str) -> str:
    """The domain-spec with its macros expanded (§7), at most 253 characters."""

    def one(match: re.Match[str]) -> str:
        letter, digits, reverse, delimiters, escape = match.groups()
        if escape is not None:
            if escape in "%_-":
                return {"%": "%", "_": " ", "-": "%20"}[escape]
            raise _PermError(f"bad macro %{escape}")
        parts = re.split(
            "[" + re.escape(delimiters or ".") + "]", _macro_value(letter.lower(), state, domain)
        )
        if reverse:
            parts.reverse()
        if digits:
            if int(digits) == 0:
                raise _PermError("macro with zero labels")
            parts = parts[-int(digits) :]
        return ".".join(parts)

    if "%" in spec and re.sub(_MACRO, "", spec).count("%"):
        raise _PermError(f"bad macro in {spec!r}")
    expanded = _MACRO.sub(one, spec)
    while len(expanded) > 253 and "." in expanded:  # §7.3: drop labels from the left
        expanded = expanded.split(".", 1)[1]
    return expanded


def _split_cidr(value: str) -> tuple[str, int | None, int | None]:
    match = re.match(r"^(.*?)(?:/(\d{1,2}))?(?://(\d{1,3}))?$", value)
    if match is None:
        raise _PermError(f"bad CIDR in {value!r}")
    spec, v4, v6 = match.groups()
    v4_len = int(v4) if v4 is not None else None
    v6_len = int(v6) if v6 is not None else None
    if (v4_len is not None and v4_len > 32) or (v6_len is not None and v6_len > 128):
        raise _PermError(f"bad CIDR length in {value!r}")
    return spec, v4_len, v6_len


def _in_network(state: _State, address: str, v4: int | None, v6: int | None) -> bool:
    try:
        candidate = ipaddress.ip_address(address)
    except ValueError:
        return False
    if candidate.version != state.ip.version:
        return False
    length = (
        (v4 if v4 is not None else 32)
        if candidate.version == 4
        else (v6 if v6 is not None else 128)
    )
    return state.ip in ipaddress.ip_network(f"{candidate}/{length}", strict=False)


def _ip_mechanism(state: _State, name: str, arg: str) -> bool:
    try:
        network = ipaddress.ip_network(arg, strict=False)
    except ValueError as error:
        raise _PermError(f"bad {name}:{arg}") from error
    if network.version != (4 if name == "ip4" else 6):
        raise _PermError(f"bad {name}:{arg}")
    return network.version == state.ip.version and state.ip in network


async def _include(state: _State, target: str) -> bool:
    result = await _check(state, target)
    if result.result in ("permerror", "none"):
        raise _PermError(f"include:{target} gave {result.result}")
    if result.result == "temperror":
        raise TemporaryDnsError(result.reason)
    return result.result == "pass"


async def _mx(state: _State, target: str, v4: int | None, v6: int | None) -> bool:
    exchanges = (await state.lookup(target, "MX")).mx
    if len(exchanges) > _MAX_NAMES:
        raise _PermError(f"more than {_MAX_NAMES} MX records for {target}")
    rdtype = "A" if state.ip.version == 4 else "AAAA"
    for _preference, exchange in exchanges:
        records = (await state.lookup(exchange, rdtype)).records
        if any(_in_network(state, a, v4, v6) for a in records):
            return True
    return False


async def _ptr(state: _State, target: str) -> bool:
    # §5.5 ("do not use"): a name of the client that forward-confirms and ends in target.
    names = (await state.resolver.ptr(str(state.ip))).records[:_MAX_NAMES]
    for name in names:
        if name == target or name.endswith("." + target):
            if str(state.ip) in await state.resolver.addresses(name):
                return True
    return False


async def _mechanism(state: _State, name: str, arg: str, domain: str) -> bool:
    """Whether the mechanism matches; raises _PermError or TemporaryDnsError."""
    if name == "all":
        return True
    if name in ("ip4", "ip6"):
        return _ip_mechanism(state, name, arg)
    spec, v4, v6 = _split_cidr(arg) if name in ("a", "mx") else (arg, None, None)
    if name not in ("a", "mx", "ptr") and not spec:
        raise _PermError(f"{name} needs a domain")
    target = expand(spec, state, domain) if spec else domain
    state.count()
    if name == "include":
        return await _include(state, target)
    if name == "exists":
        return bool((await state.lookup(target, "A")).records)
    if name == "a":
        rdtype = "A" if state.ip.version == 4 else "AAAA"
        records = (await state.lookup(target, rdtype)).records
        return any(_in_network(state, a, v4, v6) for a in records)
    if name == "mx":
        return await _mx(state, target, v4, v6)
    return await _ptr(state, target)


def _terms(record: str) -> tuple[list[tuple[str, str, str]], str | None]:
    directives: list[tuple[str, str, str]] = []
    redirect: str | None = None
    seen: set[str] = set()
    for term in record.split()[1:]:
        modifier = re.match(r"^([A-Za-z][A-Za-z0-9_.-]*)=(.*)$", term)
        if modifier:
            key = modifier.group(1).lower()
            if key in seen and key in ("redirect", "exp"):
                raise _PermError(f"{key}= given twice")
            seen.add(key)
            if key == "redirect":
                redirect = modifier.group(2)
            continue  # exp= and unknown modifiers are ignored (§6)
        qualifier = term[0] if term[0] in _QUALIFIERS else "+"
        body = term[1:] if term[0] in _QUALIFIERS else term
        name, _, arg = _name_arg(body)
        if name not in _MECHANISMS:
            raise _PermError(f"unknown mechanism {term!r}")
        directives.append((qualifier, name, arg))
    return directives, redirect


def _name_arg(body: str) -> tuple[str, str, str]:
    match = re.match(r"^([A-Za-z0-9]+)(?::(.*)|(/.*))?$", body)
    if match is None:
        raise _PermError(f"bad term {body!r}")
    name, colon_arg, cidr = match.groups()
    return name.lower(), "", colon_arg if colon_arg is not None else (cidr or "")


async def _check(state: _State, domain: str) -> SpfResult:
    if not _valid_domain(domain):
        return SpfResult("none", f"{domain!r} is not a domain name")
    records = [
        r
        for r in (await state.resolver.lookup(domain, "TXT")).records
        if r.lower() == "v=spf1" or r.lower().startswith("v=spf1 ")
    ]
    if not records:
        return SpfResult("none", f"no SPF record at {domain}")
    if len(records) > 1:
        raise _PermError(f"more than one SPF record at {domain}")
    state.trail.append(domain)
    directives, redirect = _terms(records[0])
    for qualifier, name, arg in directives:
        if await _mechanism(state, name, arg, domain):
            verdict = _QUALIFIERS[qualifier]
            return SpfResult(
                verdict, f"{domain}: {qualifier}{name}{':' + arg if arg else ''} matched"
            )
    if redirect is not None:
        state.count()
        target = expand(redirect, state, domain)
        result = await _check(state, target)
        if result.result == "none":
            raise _PermError(f"redirect={target} has no SPF record")
        return result
    return SpfResult("neutral", f"{domain}: no mechanism matched")


async def check_host(
    resolver: Resolver, *, ip: str, domain: str, sender: str, helo: str = ""
) -> SpfResult:
    """The SPF result for ``ip`` sending as ``sender`` (``postmaster@helo`` for ``<>``)."""
    state = _State(
        resolver=resolver, ip=ipaddress.ip_address(ip.split("%", 1)[0]), sender=sender, helo=helo
    )
    if isinstance(state.ip, ipaddress.IPv6Address) and state.ip.ipv4_mapped is not None:
        state.ip = state.ip.ipv4_mapped
    try:
        return await _check(state, domain.lower().rstrip("."))
    except _PermError as error:
        return SpfResult("permerror", str(error))
    except TemporaryDnsError as error:
        return SpfResult("temperror", str(error))
