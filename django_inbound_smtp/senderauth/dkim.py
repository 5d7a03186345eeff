"""DKIM (RFC 6376) and ARC (RFC 8617) verification with dkimpy, DNS through our resolver.

The hashing and RSA work runs in a worker thread (:func:`verify_in_thread`), never on
the event loop; the key lookups it needs are sent back to the loop's resolver. No
Django. dkimpy is the optional ``auth`` extra: without it the result is ``none``.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass

from django_inbound_smtp.senderauth.resolver import Resolver, TemporaryDnsError

try:
    import dkim as _dkim
except ImportError:  # pragma: no cover - the auth extra is not installed
    _dkim = None

__all__ = ["AVAILABLE", "DkimOutcome", "DkimSignature", "verify"]

AVAILABLE = _dkim is not None
MAX_SIGNATURES = 5  # checked per message: each costs a lookup and an RSA operation
_ORDER = ("pass", "temperror", "fail", "permerror", "neutral")


@dataclass(frozen=True, slots=True)
class DkimSignature:
    """One ``DKIM-Signature`` field: its ``d=``, ``s=``, result and reason."""

    domain: str
    selector: str
    result: str
    reason: str


@dataclass(frozen=True, slots=True)
class DkimOutcome:
    result: str
    reason: str
    signatures: tuple[DkimSignature, ...] = ()
    arc: str = "none"
    arc_reason: str = ""


DnsFunc = Callable[..., bytes | None]


def _one(message: bytes, index: int, dnsfunc: DnsFunc) -> DkimSignature:
    assert _dkim is not None
    verifier = _dkim.DKIM(message, minkey=1024)
    try:
        prepared = verifier.verify_headerprep(index)
    except _dkim.DKIMException as error:
        return DkimSignature("", "", "neutral", f"unusable signature: {error}")
    sig, include_headers, headers = prepared
    domain = sig[b"d"].decode("ascii", "replace").lower()
    selector = sig[b"s"].decode("ascii", "replace")
    name = sig[b"s"] + b"._domainkey." + sig[b"d"] + b"."
    try:
        record = dnsfunc(name)
    except TemporaryDnsError as error:
        return DkimSignature(domain, selector, "temperror", f"key lookup failed: {error}")
    if not record:
        return DkimSignature(domain, selector, "permerror", "no key published for the selector")
    try:
        tags = _dkim.util.parse_tag_value(record) if b"p=" in record else {}
    except _dkim.util.InvalidTagValueList as error:
        # A typo in the sender's DNS is permanent for this message, not our fault.
        return DkimSignature(domain, selector, "permerror", f"unusable key record: {error}")
    if not tags.get(b"p"):
        return DkimSignature(domain, selector, "permerror", "key revoked (empty p=)")
    try:
        pk, keysize, ktag, tlsrpt = _dkim.load_pk_from_dns(name, lambda *a, **k: record)
        verifier.pk, verifier.keysize, verifier.ktag, verifier.seqtlsrpt = pk, keysize, ktag, tlsrpt
        valid = verifier.verify_sig_process(sig, include_headers, headers[index], dnsfunc)
    except _dkim.ValidationError as error:
        text = str(error)
        reason = "body hash did not verify" if "body hash" in text else text[:200]
        return DkimSignature(domain, selector, "fail", reason)
    except _dkim.DKIMException as error:
        return DkimSignature(domain, selector, "permerror", str(error)[:200])
    if valid:
        return DkimSignature(domain, selector, "pass", "signature verified")
    return DkimSignature(domain, selector, "fail", "signature did not verify")


def _arc(message: bytes, dnsfunc: DnsFunc) -> tuple[str, str]:
    assert _dkim is not None
    try:
        cv, _results, comment = _dkim.arc_verify(message, dnsfunc=dnsfunc, minkey=1024)
    except TemporaryDnsError as error:
        return "temperror", str(error)
    except (_dkim.DKIMException, _dkim.util.InvalidTagValueList, IndexError) as error:
        return "fail", str(error)[:200]
    return cv.decode("ascii", "replace").lower(), str(comment)[:200]


def verify_sync(message: bytes, dnsfunc: DnsFunc) -> DkimOutcome:
    """Every DKIM signature (up to :data:`MAX_SIGNATURES`) and the ARC chain; blocking."""
    if _dkim is None:
        return DkimOutcome("none", "dkimpy is not installed (extra 'auth')")
    end = message.find(b"\r\n\r\n")
    head = (message if end < 0 else message[:end]).lower()
    if b"dkim-signature" not in head and b"arc-seal" not in head:
        return DkimOutcome("none", "message not signed")  # no parsing, no lookups
    try:
        count = sum(
            1 for name, _value in _dkim.DKIM(message).headers if name.lower() == b"dkim-signature"
        )
    except (_dkim.DKIMException, IndexError) as error:
        # dkimpy cannot even split the header (a line without a colon, a folded first
        # line): no signature can verify. Permanent, and never a reason for a 4xx.
        return DkimOutcome("permerror", f"malformed header: {str(error)[:150]}")
    signatures = tuple(_one(message, index, dnsfunc) for index in range(min(count, MAX_SIGNATURES)))
    arc, arc_reason = _arc(message, dnsfunc) if b"arc-seal" in head else ("none", "")
    if not signatures:
        return DkimOutcome("none", "message not signed", (), arc, arc_reason)
    best = min(signatures, key=lambda s: _ORDER.index(s.result))
    reason = f"{best.domain}: {best.reason}" if best.domain else best.reason
    return DkimOutcome(best.result, reason, signatures, arc, arc_reason)


def bridged_dnsfunc(
    resolver: Resolver,
    loop: asyncio.AbstractEventLoop,
    lookup_timeout: float,
    *,
    deadline: float | None = None,
) -> DnsFunc:
    """A dkimpy ``dnsfunc`` for a worker thread: each TXT lookup runs on ``loop``.

    ``deadline`` (``time.monotonic()``) ends the whole verification: past it every
    lookup fails at once, so five signatures and an ARC chain on names that never
    answer cost the phase's budget, not five times a lookup timeout."""

    def dnsfunc(name: bytes, timeout: float = lookup_timeout) -> bytes | None:
        text = name.decode("ascii", "replace")
        if deadline is not None:
            timeout = min(timeout, deadline - time.monotonic())
            if timeout <= 0:
                raise TemporaryDnsError(f"TXT {text}: the time budget is spent")
        future = asyncio.run_coroutine_threadsafe(resolver.lookup(text, "TXT"), loop)
        try:
            answer = future.result(timeout=timeout)
        except TimeoutError as error:
            future.cancel()
            raise TemporaryDnsError(f"TXT {text}: no answer in time") from error
        return answer.records[0].encode("utf-8") if answer.records else None

    return dnsfunc


async def verify(resolver: Resolver, message: bytes, *, lookup_timeout: float) -> DkimOutcome:
    """:func:`verify_sync` in a worker thread; its key lookups run on this loop."""
    dnsfunc = bridged_dnsfunc(resolver, asyncio.get_running_loop(), lookup_timeout)
    return await asyncio.to_thread(verify_sync, message, dnsfunc)
