"""Kinds of mail: is a message a bounce, an automatic reply, list mail, a loop? Pure.

Runs in the processing step on what ``parse_message`` read (headers, bodies, parts),
so it costs a few header lookups and, for bounces only, reading the report part.
The rules, first match wins (the order is the precedence):

1. ``loop``: our host names the ``by`` clause of more than ``max_own_hops``
   ``Received:`` fields, or an ``X-Loop:`` field names our host or one of the
   message's envelope recipients. First: whatever else it is, answering it feeds
   the loop.
2. ``bounce``: an RFC 3464 delivery status notification (``multipart/report;
   report-type=delivery-status``, or a ``message/delivery-status`` part anywhere),
   or, from the null sender or a mailer daemon, the subject or body of a known
   non-DSN bounce (qmail, Exim, Sendmail, Exchange, Gmail). Before ``auto_reply``:
   DSNs carry ``Auto-Submitted: auto-replied`` too, and their recipients matter.
3. ``auto_reply``: ``Auto-Submitted`` other than ``no`` (RFC 3834), ``X-Autoreply``,
   ``X-Autorespond``, ``Precedence: auto_reply``, a read receipt (``report-type=
   disposition-notification``), or an out-of-office subject. Before ``list``:
   vacation programs send ``Precedence: bulk`` too.
4. ``list``: ``List-Id``; ``Precedence: bulk``, ``list`` or ``junk``.
5. ``regular``: everything else.
"""

from __future__ import annotations

import re
from collections.abc import Collection
from dataclasses import dataclass, field
from email.message import Message
from email.parser import BytesHeaderParser
from email.policy import compat32

from django_inbound_smtp.parsing import clean_text
from django_inbound_smtp.parsing._bounce_text import BODY_MARKERS, SUBJECT_MARKERS, rows_from_text
from django_inbound_smtp.parsing.dsn import BounceRow, parse_delivery_status
from django_inbound_smtp.parsing.mime import ParsedMessage

__all__ = [
    "AUTO_REPLY",
    "BOUNCE",
    "KINDS",
    "LIST",
    "LOOP",
    "REGULAR",
    "Classification",
    "classify",
]

REGULAR = "regular"
BOUNCE = "bounce"
AUTO_REPLY = "auto_reply"
LIST = "list"
LOOP = "loop"
#: Every kind, in order of precedence (the first that applies is the message's).
KINDS = (LOOP, BOUNCE, AUTO_REPLY, LIST, REGULAR)

_REPORT_PARTS = frozenset(("message/delivery-status", "message/global-delivery-status"))
_RETURNED_PARTS = frozenset(("text/rfc822-headers", "message/rfc822", "message/global"))
_DAEMONS = frozenset(("mailer-daemon", "postmaster", "mail-daemon", "mailerdaemon", "mdaemon"))
_DAEMON_NAMES = ("mail delivery system", "mail delivery subsystem", "mail administrator")
_BY = re.compile(r"\bby\s+([^\s;()\[\]]+)", re.IGNORECASE)
_MESSAGE_ID = re.compile(r"^\s*message-id:\s*(<[^<>\s]+>)", re.IGNORECASE | re.MULTILINE)
# "<[^>]*>" would rescan to the end for each "<" of "<<<<...": quadratic.
_TAGS = re.compile(r"<[^<>]*>")

# Out-of-office subjects, by language. A subject starting with one of these followed
# by a colon (or alone) is an automatic reply; "Re: Out of office party" is not.
_VACATION_PHRASES = (
    # English (Outlook, Exchange, Lotus Notes "AUTO:", Gmail and others)
    "automatic reply", "auto reply", "auto-reply", "autoreply", "auto response",
    "auto-response", "autoresponse", "auto", "out of office", "out of the office",
    "out of office autoreply", "away from the office", "vacation reply", "on vacation",
    # German
    "automatische antwort", "abwesenheitsnotiz", "automatische rückantwort",
    "nicht im büro", "abwesend",
    # French
    "réponse automatique", "absence du bureau", "absent du bureau", "absent",
    # Spanish
    "respuesta automática", "fuera de la oficina", "respuesta de ausencia",
    # Italian
    "risposta automatica", "fuori sede", "fuori ufficio",
    # Dutch
    "automatisch antwoord", "afwezig", "niet aanwezig", "buiten kantoor",
    # Portuguese
    "resposta automática", "ausente do escritório", "fora do escritório",
    "resposta de ausência",
    # Russian
    "автоответ", "автоматический ответ", "нет на месте", "вне офиса",
    # Japanese
    "自動応答", "自動返信", "不在",
)  # fmt: skip
_ALTERNATION = "|".join(re.escape(p) for p in sorted(_VACATION_PHRASES, key=len, reverse=True))
_VACATION_SUBJECT = re.compile(
    rf"^\s*(?:{_ALTERNATION})(?:\s+(?:autoreply|reply|notice|message))?\s*(?:[:：]|$)",
    re.IGNORECASE,
)
# With a hint (X-Auto-Response-Suppress, the null sender), the phrase may be anywhere:
# Lotus Notes writes "John Doe is out of the office (returning 2 May)".
_VACATION_ANYWHERE = re.compile(
    "|".join(re.escape(p) for p in _VACATION_PHRASES if len(p) > 6), re.IGNORECASE
)


@dataclass(frozen=True)
class Classification:
    """The kind of one message, why, and for a bounce what it reports."""

    kind: str
    #: One line saying which rule matched, e.g. ``"Auto-Submitted: auto-replied"``.
    reason: str = ""
    #: A bounce's recipients (empty for other kinds, or when none could be read).
    bounced: list[BounceRow] = field(default_factory=list)
    #: A bounce's returned message's Message-ID, when it quotes one.
    original_message_id: str = ""


class _Headers:
    def __init__(self, parsed: ParsedMessage) -> None:
        self._values: dict[str, list[str]] = {}
        for name, _raw, decoded in parsed.headers:
            self._values.setdefault(name.lower(), []).append(decoded)

    def all(self, name: str) -> list[str]:
        return self._values.get(name, [])

    def first(self, name: str) -> str:
        found = self._values.get(name)
        return found[0].strip() if found else ""


def _content_type(value: str) -> tuple[str, str]:
    """The media type of a Content-Type value and its ``report-type`` parameter."""
    holder = Message(policy=compat32)
    holder["Content-Type"] = value[:1000]
    report = holder.get_param("report-type")
    return holder.get_content_type(), (report if isinstance(report, str) else "").lower()


def _host(name: str) -> str:
    return name.strip().rstrip(".").lower()


def _names(value: str, name: str) -> bool:
    # ``name`` as a whole word of ``value``: "our.test" is not named by "notour.test".
    pattern = rf"(?<![\w.-]){re.escape(name)}(?![\w-])"
    return re.search(pattern, value, re.IGNORECASE) is not None


def _loop(
    headers: _Headers, own_hosts: set[str], own_addresses: Collection[str], limit: int
) -> str:
    hops = 0
    for value in headers.all("received"):
        by = _BY.search(value)
        if by and _host(by.group(1)) in own_hosts:
            hops += 1
    if hops > limit:
        return f"our host in {hops} Received: fields (more than {limit})"
    for value in headers.all("x-loop"):
        for name in [*sorted(own_hosts), *own_addresses]:
            if name and _names(value, name):
                return f"X-Loop: {clean_text(value, limit=100)}"
    return ""


def _from_daemon(headers: _Headers, envelope_from: str) -> bool:
    if not envelope_from:
        return True  # the null sender <>: RFC 5321 §4.5.5, bounces use nothing else
    sender = headers.first("from").lower()
    local = re.findall(r"([^\s<>\"@]{1,64})@", sender)
    if any(part in _DAEMONS or part.startswith("microsoftexchange") for part in local):
        return True
    return any(name in sender for name in _DAEMON_NAMES)


def _returned_message_id(parsed: ParsedMessage, text: str) -> str:
    for part in parsed.attachments:
        if part.content_type in _RETURNED_PARTS:
            head = BytesHeaderParser(policy=compat32).parsebytes(part.payload[:65536])
            found = _MESSAGE_ID.search(f"Message-ID: {head.get('Message-ID', '')}")
            if found:
                return clean_text(found.group(1), limit=512)
    found = _MESSAGE_ID.search(text)
    return clean_text(found.group(1), limit=512) if found else ""


def _body_text(parsed: ParsedMessage) -> str:
    if parsed.text:
        return parsed.text
    return _TAGS.sub(" ", parsed.html[:65536]) if parsed.html else ""


def _bounce(parsed: ParsedMessage, headers: _Headers, envelope_from: str) -> Classification | None:
    media, report = _content_type(headers.first("content-type"))
    reports = [p for p in parsed.attachments if p.content_type in _REPORT_PARTS]
    text = _body_text(parsed)
    if (media == "multipart/report" and report == "delivery-status") or reports:
        rows = [row for part in reports for row in parse_delivery_status(part.payload)]
        reason = "RFC 3464 delivery status notification"
    else:
        subject = parsed.subject.strip().lower()
        start = text[:4096].lower()
        marker = next((m for m in SUBJECT_MARKERS if subject.startswith(m)), "") or next(
            (m for m in BODY_MARKERS if m in start), ""
        )
        if not marker or not _from_daemon(headers, envelope_from):
            return None
        ignore = {address.lower() for _name, address in parsed.from_}
        rows = rows_from_text(text, subject=parsed.subject, ignore=ignore)
        reason = f'non-DSN bounce ("{marker}")'
    return Classification(
        BOUNCE, reason, bounced=rows, original_message_id=_returned_message_id(parsed, text)
    )


def _auto_reply(parsed: ParsedMessage, headers: _Headers, envelope_from: str) -> str:
    submitted = headers.first("auto-submitted")
    token = submitted.split(";", 1)[0].split("(", 1)[0].strip().lower()
    if token and token != "no":
        return f"Auto-Submitted: {clean_text(submitted, limit=60)}"
    for name, shown in (("x-autoreply", "X-Autoreply"), ("x-autorespond", "X-Autorespond")):
        if headers.all(name):
            return f"{shown} header"
    if headers.first("precedence").lower() == "auto_reply":
        return "Precedence: auto_reply"
    media, report = _content_type(headers.first("content-type"))
    if media == "multipart/report" and report == "disposition-notification":
        return "read receipt (RFC 8098 disposition notification)"
    if token == "no":  # the sender says a person wrote it: the subject is theirs
        return ""
    subject = parsed.subject
    if _VACATION_SUBJECT.match(subject):
        return f"out-of-office subject: {clean_text(subject, limit=60)}"
    hinted = bool(headers.all("x-auto-response-suppress")) or not envelope_from
    if hinted and _VACATION_ANYWHERE.search(subject):
        return f"out-of-office subject: {clean_text(subject, limit=60)}"
    return ""


def _list(headers: _Headers) -> str:
    if headers.all("list-id"):
        return f"List-Id: {clean_text(headers.first('list-id'), limit=80)}"
    precedence = headers.first("precedence").lower()
    if precedence in ("bulk", "list", "junk"):
        return f"Precedence: {precedence}"
    return ""


def classify(
    parsed: ParsedMessage,
    *,
    envelope_from: str,
    own_hosts: Collection[str],
    own_addresses: Collection[str] = (),
    max_own_hops: int = 3,
) -> Classification:
    """The kind of ``parsed``, received from ``envelope_from`` (``""``: the null sender).

    ``own_hosts``: the names we receive mail as (``HOSTNAME``, the name in our own
    ``Received:`` line); ``own_addresses``: the message's envelope recipients (an
    ``X-Loop`` naming one is a loop). Never raises on hostile input."""
    headers = _Headers(parsed)
    hosts = {_host(h) for h in own_hosts if h}
    loop = _loop(headers, hosts, [a.lower() for a in own_addresses], max_own_hops)
    if loop:
        return Classification(LOOP, loop)
    bounce = _bounce(parsed, headers, envelope_from)
    if bounce is not None:
        return bounce
    auto = _auto_reply(parsed, headers, envelope_from)
    if auto:
        return Classification(AUTO_REPLY, auto)
    listed = _list(headers)
    if listed:
        return Classification(LIST, listed)
    return Classification(REGULAR)
