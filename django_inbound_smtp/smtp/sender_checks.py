"""Sender checks at their SMTP phases (``INBOUND_SMTP["SENDER_CHECKS"]``).

- EHLO/HELO: the client's DNSBL score and reverse DNS are looked up in the background
  (:func:`start`), overlapping the client's next round trip;
- MAIL (:func:`at_mail`): those results are collected, the sender domain and SPF
  (envelope sender and HELO) are checked; a refusal is the MAIL reply, as Postfix's
  ``smtpd_delay_reject`` does, so every client sees it;
- after DATA (:func:`at_data`): DKIM (with ARC) in a worker thread, then DMARC; our
  ``Authentication-Results`` field is built and forged ones are renamed.

Independent checks run concurrently, and each phase has one time budget
(``SENDER_CHECKS_TIMEOUT``): what has not finished by then is a ``temperror``.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict
from typing import Any

from django_inbound_smtp import metrics
from django_inbound_smtp.conf import DnsOptions, get_settings
from django_inbound_smtp.replies import Reply
from django_inbound_smtp.senderauth import dkim, dmarc, network, policy, spf
from django_inbound_smtp.senderauth.resolver import Resolver
from django_inbound_smtp.senderauth.results import (
    METHODS,
    Verdict,
    Verdicts,
    authentication_results,
    from_domain,
    rename_forged,
)
from django_inbound_smtp.spool import Spool

__all__ = ["at_data", "at_mail", "resolver", "start"]

logger = logging.getLogger(__name__)

_CONNECT = "_inbound_connect_checks"  # on the aiosmtpd Session: (peer, task)
_VERDICTS = "_inbound_verdicts"  # on the Envelope: this transaction's Verdicts
_resolvers: dict[DnsOptions, Resolver] = {}
# DKIM verification threads, apart from the loop's default executor (spool writes,
# statvfs): hostile signatures must not hold up other sessions' file I/O. Bounded:
# more messages to verify at once wait their turn (within their phase budget).
_scanners = ThreadPoolExecutor(max_workers=2, thread_name_prefix="inbound-dkim")


def resolver() -> Resolver:
    """The shared resolver for the current ``DNS`` setting (one per distinct value)."""
    options = get_settings().DNS
    if options not in _resolvers:
        _resolvers[options] = Resolver(
            nameservers=options.nameservers, timeout=options.timeout, cache_size=options.cache_size
        )
    return _resolvers[options]


def active() -> bool:
    """Whether any sender check is on."""
    return any(policy.enabled(check) for check in policy.SETTING_KEYS)


async def _bounded(checks: Mapping[str, Awaitable[Any]], budget: float) -> dict[str, Verdict]:
    """Run ``checks`` concurrently for at most ``budget`` seconds; convert outcomes."""
    tasks = {name: asyncio.ensure_future(check) for name, check in checks.items()}
    if not tasks:
        return {}
    await asyncio.wait(tasks.values(), timeout=budget)
    verdicts: dict[str, Verdict] = {}
    for name, task in tasks.items():
        if not task.done():
            task.cancel()
            verdicts[name] = Verdict("temperror", "time budget exceeded")
            continue
        outcome = task.result()  # a fault of ours propagates: the hook answers 451 4.3.0
        verdicts[name] = Verdict(outcome.result, outcome.reason, getattr(outcome, "detail", ""))
    return verdicts


def _retrieve(task: asyncio.Task[Any]) -> None:
    if not task.cancelled() and task.exception() is not None:
        logger.error("connect-time sender checks failed", exc_info=task.exception())


def start(session: Any, peer: str | None) -> None:
    """Start the client checks (DNSBL, iprev) once per session, in the background."""
    if peer is None or getattr(session, _CONNECT, None) is not None:
        return
    settings = get_settings()
    checks: dict[str, Awaitable[Any]] = {}
    if policy.enabled("dnsbl") and settings.DNSBL_ZONES:
        zones = [network.parse_zone(zone) for zone in settings.DNSBL_ZONES]
        checks["dnsbl"] = network.dnsbl(resolver(), peer, zones, threshold=settings.DNSBL_THRESHOLD)
    if policy.enabled("iprev"):
        checks["iprev"] = network.iprev(resolver(), peer)
    if checks:
        task = asyncio.ensure_future(_bounded(checks, settings.SENDER_CHECKS_TIMEOUT))
        task.add_done_callback(_retrieve)
        setattr(session, _CONNECT, (peer, task))


async def at_mail(
    session: Any, envelope: Any, *, mail_from: str, helo: str, peer: str | None
) -> Reply | None:
    """Check the client and the sender at MAIL; the refusal to answer, or ``None``."""
    setattr(envelope, _VERDICTS, None)
    if peer is None or not active():
        return None
    verdicts = Verdicts()
    setattr(envelope, _VERDICTS, verdicts)
    domain = mail_from.rpartition("@")[2].lower() if mail_from else ""
    checks: dict[str, Awaitable[Any]] = {}
    if policy.enabled("sender_domain") and domain:
        checks["sender_domain"] = network.sender_domain(resolver(), domain)
    if policy.enabled("spf") or policy.enabled("dmarc"):
        # RFC 7208 §2.4: for the null sender, the HELO identity is checked instead.
        sender = mail_from or f"postmaster@{helo}"
        checks["spf"] = spf.check_host(
            resolver(), ip=peer, domain=domain or helo, sender=sender, helo=helo
        )
        if mail_from and helo:
            checks["spf_helo"] = spf.check_host(
                resolver(), ip=peer, domain=helo, sender=f"postmaster@{helo}", helo=helo
            )
    connect = getattr(session, _CONNECT, None)
    results, earlier = await asyncio.gather(
        _bounded(checks, get_settings().SENDER_CHECKS_TIMEOUT),
        connect[1] if connect is not None and connect[0] == peer else _nothing(),
    )
    verdicts.values.update(earlier)
    verdicts.values.update(results)
    for check, found in verdicts.values.items():
        metrics.sender_check(check, found.result)
    for check in ("dnsbl", "iprev", "sender_domain", "spf"):
        if (verdict := verdicts.values.get(check)) and (reply := policy.refusal(check, verdict)):
            logger.info("MAIL refused by %s (%s): %s", check, verdict.result, verdict.reason)
            return reply
    return None


async def _nothing() -> dict[str, Verdict]:
    return {}


def _scan(
    spool: Spool, authserv_id: str, dnsfunc: dkim.DnsFunc | None
) -> tuple[tuple[int, bytes] | None, str, dkim.DkimOutcome | None]:
    # One worker-thread hop for the CPU and file work on the message: DKIM (its key
    # lookups come back to the loop; the body is read only for signed mail), the From
    # domain, forged fields. Headers come from the spool's head, never the whole file.
    block = _header_block(spool)
    outcome = None
    if dnsfunc is not None:
        if b"dkim-signature" in block.lower() or b"arc-seal" in block.lower():
            try:
                outcome = dkim.verify_sync(spool.content(), dnsfunc)
            except Exception as error:  # a verifier bug must not refuse the message
                logger.exception("DKIM verification failed unexpectedly")
                outcome = dkim.DkimOutcome("temperror", f"verifier error: {type(error).__name__}")
        else:
            outcome = dkim.DkimOutcome("none", "message not signed")
    return (*_headers_only(block, authserv_id), outcome)


def _header_block(spool: Spool) -> bytes:
    end = spool.head.find(b"\r\n\r\n")
    return spool.head if end < 0 else spool.head[: end + 2]


def _headers_only(block: bytes, authserv_id: str) -> tuple[tuple[int, bytes] | None, str]:
    renamed, count = rename_forged(block, authserv_id)
    return ((len(block), renamed) if count else None), from_domain(block)


async def at_data(
    envelope: Any, spool: Spool, *, authserv_id: str, mail_from: str, helo: str, peer: str
) -> tuple[tuple[int, bytes] | None, bytes, dict[str, Any] | None, Reply | None]:
    """Check the spooled message after DATA. Returns the header block to put in place
    of the received one (``(old length, new block)``: forged Authentication-Results
    renamed) or ``None``, our header, the record to store, and a refusal."""
    verdicts: Verdicts | None = getattr(envelope, _VERDICTS, None)
    if verdicts is None:
        return None, b"", None, None
    budget = get_settings().SENDER_CHECKS_TIMEOUT
    loop = asyncio.get_running_loop()
    deadline = loop.time() + budget
    dnsfunc = None
    if policy.enabled("dkim") or policy.enabled("dmarc"):
        dnsfunc = dkim.bridged_dnsfunc(
            resolver(), loop, get_settings().DNS.timeout, deadline=time.monotonic() + budget
        )
    scan = loop.run_in_executor(_scanners, _scan, spool, authserv_id, dnsfunc)
    try:
        rewrite, author, outcome = await asyncio.wait_for(asyncio.shield(scan), timeout=budget)
    except TimeoutError:
        # The verifier ends soon (its lookups fail past the deadline); the header
        # fields are cheap to read here (at most MAX_HEADER_BLOCK bytes).
        rewrite, author = _headers_only(_header_block(spool), authserv_id)
        outcome = dkim.DkimOutcome("temperror", "time budget exceeded")
    if dnsfunc is not None and outcome is not None:
        verdicts.values["dkim"] = Verdict(outcome.result, outcome.reason)
        verdicts.values["arc"] = Verdict(outcome.arc, outcome.arc_reason)
        verdicts.dkim_signatures = [asdict(signature) for signature in outcome.signatures]
    verdicts.from_domain = author
    await _dmarc(verdicts, author, mail_from or f"postmaster@{helo}", deadline - loop.time())
    header = authentication_results(
        authserv_id, verdicts, mail_from=mail_from, helo=helo, peer=peer
    )
    for check in ("dkim", "arc", "dmarc"):
        if check in verdicts.values:
            metrics.sender_check(check, verdicts.values[check].result)
    verdicts.values = {m: verdicts.values[m] for m in METHODS if m in verdicts.values}
    record = verdicts.record(header.decode("ascii").removesuffix("\r\n"))
    for check in ("dkim", "dmarc"):
        verdict = verdicts.values.get(check)
        if verdict and (
            reply := policy.refusal(check, verdict, dmarc_policy=verdicts.dmarc_policy)
        ):
            logger.info("DATA refused by %s (%s): %s", check, verdict.result, verdict.reason)
            return rewrite, header, record, reply
    return rewrite, header, record, None


async def _dmarc(verdicts: Verdicts, author: str, sender: str, remaining: float) -> None:
    passed = [s["domain"] for s in verdicts.dkim_signatures if s["result"] == "pass"]
    spf_verdict = verdicts.values.get("spf")
    spf_result = spf_verdict.result if spf_verdict else "none"
    spf_domain = sender.rpartition("@")[2]
    if author:
        if not dmarc.loaded():
            await asyncio.to_thread(dmarc.warm_up)
        # Without a DMARC lookup: relaxed alignment of a passing DKIM or SPF identity.
        verdicts.sender_verified = any(dmarc.aligned(d, author, strict=False) for d in passed) or (
            spf_result == "pass" and dmarc.aligned(spf_domain, author, strict=False)
        )
    if not policy.enabled("dmarc"):
        return
    try:
        outcome = await asyncio.wait_for(
            dmarc.evaluate(
                resolver(),
                from_domain=author,
                spf_result=spf_result,
                spf_domain=spf_domain,
                dkim_passed=passed,
            ),
            timeout=max(remaining, 0.001),
        )
    except TimeoutError:
        verdicts.values["dmarc"] = Verdict("temperror", "time budget exceeded")
        return
    verdicts.values["dmarc"] = Verdict(outcome.result, outcome.reason)
    verdicts.dmarc_policy = outcome.policy
    verdicts.sender_verified = outcome.verified
