"""Bounces that are not RFC 3464 DSNs: what they look like, and their recipients. Pure.

Best effort: each MTA writes its own prose. Known shapes (written from their
documentation and observed output, not copied mail):

- **qmail**: "Hi. This is the qmail-send program at HOST." then one paragraph per
  recipient, ``<user@example.org>:`` and the remote server's words;
- **Exim** (without ``dsn_advertise_hosts`` style reports, or old versions): "This
  message was created automatically by mail delivery software." then the failed
  addresses, indented, each followed by the more indented reason;
- **Sendmail** (old): subject "Returned mail: ...", sections "----- The following
  addresses had permanent fatal errors -----" (or "transient non-fatal errors");
- **Exchange** 2003-style: "The following recipient(s) cannot be reached:" then
  ``user@example.org on DATE`` and ``<host #5.1.1 smtp;550 ...>``;
- anything else marked as a bounce: paragraphs naming one address and a status code.
"""

from __future__ import annotations

import re

from django_inbound_smtp.parsing import clean_text
from django_inbound_smtp.parsing.dsn import MAX_ROWS, BounceRow, status_of

__all__ = ["BODY_MARKERS", "SUBJECT_MARKERS", "rows_from_text"]

# Only the start of a body is read: the copy of the returned message follows.
MAX_TEXT = 64 * 1024
# Every repeat is bounded (RFC 5321 §4.5.3.1: local part 64, domain 255): an unbounded
# one makes a search over a long run of letters quadratic (hostile-inputs: ReDoS).
_ADDRESS = r"[^\s<>@\"',;:()]{1,64}@[A-Za-z0-9.-]{1,252}\.[A-Za-z]{2,63}"
_ANGLED = re.compile(rf"^<({_ADDRESS})>:\s*$")
_INDENTED = re.compile(rf"^ {{1,4}}({_ADDRESS})\s*$")
_EXCHANGE = re.compile(rf"^\s+({_ADDRESS}) on .+$")
# The last line of an entry: "<mx.example.org #5.1.1 smtp;550 5.1.1 <user@...>... User unknown>".
_EXCHANGE_TAIL = re.compile(r"<([^\s#<>]{1,255}) #(\d\.\d{1,3}\.\d{1,3})\s*(?:smtp;\s*(.*))?>\s*$")
# qmail's first words about the remote server: "192.0.2.1 does not like recipient.",
# "Connected to 192.0.2.1 but sender was rejected."
_QMAIL_HOST = re.compile(r"^(?:Connected to )?(\S{1,255}?)(?: does not like| but )")
_HOST = re.compile(r"\bhost ([A-Za-z0-9.-]{1,252}\.[A-Za-z]{2,63}|\[?[0-9.]{7,15}\]?)")
_SMTP_REPLY = re.compile(r"\b[45]\d\d\b")
_SENDMAIL_SECTION = re.compile(
    r"-+ The following addresses had (permanent fatal|transient non-fatal)"
)
_ADDRESS_ANYWHERE = re.compile(_ADDRESS)

# Where a non-DSN bounce says what it is. Lower case; matched against the start of the
# body (BODY_MARKERS, anywhere in it) and the subject (SUBJECT_MARKERS, at its start).
BODY_MARKERS = (
    "this is the qmail-send program",
    "this message was created automatically by mail delivery software",
    "the following addresses had permanent fatal errors",
    "the following addresses had transient non-fatal errors",
    "delivery has failed to these recipients or groups",
    "your message did not reach some or all of the intended recipients",
    "the following recipient(s) cannot be reached",
    "i'm afraid i wasn't able to deliver your message",
    "this is the mail system at host",
    "delivery to the following recipient failed permanently",
    "delivery to the following recipients failed",
    "your message wasn't delivered to",
    "couldn't be delivered",
)
SUBJECT_MARKERS = (
    "returned mail:",
    "undelivered mail returned to sender",
    "undeliverable:",
    "undeliverable mail",
    "undelivered mail",
    "mail delivery failed",
    "delivery status notification (failure)",
    "delivery status notification (delay)",
    "delivery failure",
    "failure notice",
    "mail system error - returned mail",
    "warning: message",  # Exim's "Warning: message 1abc-000 delayed 24 hours"
    "non remis :",  # Exchange, French
    "unzustellbar:",  # Exchange, German
    "no se puede entregar:",  # Exchange, Spanish
    "non recapitabile:",  # Exchange, Italian
    "onbestelbaar:",  # Exchange, Dutch
    "não entregue:",  # Exchange, Portuguese
    "не доставлено:",  # Exchange, Russian
    "配信不能:",  # Exchange, Japanese
)
# Words that mark a delay notice rather than a failure.
_DELAYED = (
    "has not yet been delivered",
    "transient non-fatal",
    "delivery status notification (delay)",
    "this is a warning message only",
    "will retry",
    "delivery incomplete",
)


def _row(address: str, text: str, *, action: str) -> BounceRow:
    diagnostic = clean_text(text, limit=1000)
    host = _HOST.search(text)
    status = status_of(text)
    if not status and (reply := _SMTP_REPLY.search(text)):
        status = f"{reply.group()[0]}.0.0"  # only the basic code: its class
    return BounceRow(
        final_recipient=clean_text(address, limit=254),
        action=action,
        status=status,
        diagnostic_code=diagnostic,
        remote_mta=host.group(1).strip("[]") if host else "",
    )


def _paragraphs(lines: list[str], start: re.Pattern[str]) -> list[tuple[str, list[str]]]:
    """``(address, following lines)`` for each line matching ``start``, up to the next
    such line or an empty one."""
    found: list[tuple[str, list[str]]] = []
    for line in lines:
        match = start.match(line)
        if match:
            found.append((match.group(1), []))
        elif found and line.strip():
            if not found[-1][1] or line[:1] in " \t" or start is _ANGLED:
                found[-1][1].append(line.strip())
        elif found and found[-1][1] and start is not _ANGLED:
            found.append(("", []))  # an empty line ends an indented paragraph
    return [(address, body) for address, body in found if address]


def _qmail(lines: list[str], action: str) -> list[BounceRow]:
    rows = []
    for address, body in _paragraphs(lines, _ANGLED):
        row = _row(address, " ".join(body), action=action)
        host = _QMAIL_HOST.match(body[0]) if body else None
        if host and not row.remote_mta:
            row = BounceRow(
                final_recipient=row.final_recipient,
                action=action,
                status=row.status,
                diagnostic_code=row.diagnostic_code,
                remote_mta=clean_text(host.group(1), limit=255),
            )
        rows.append(row)
    return rows


def _exim(lines: list[str], action: str) -> list[BounceRow]:
    return [_row(a, " ".join(body), action=action) for a, body in _paragraphs(lines, _INDENTED)]


def _exchange(lines: list[str], action: str) -> list[BounceRow]:
    rows = []
    for address, body in _paragraphs(lines, _EXCHANGE):
        text = " ".join(body)
        tail = next((t for line in body if (t := _EXCHANGE_TAIL.search(line))), None)
        row = _row(address, text, action=action)
        if tail:
            diagnostic = tail.group(3) or text
            row = BounceRow(
                final_recipient=row.final_recipient,
                action=action,
                status=tail.group(2),
                diagnostic_code=clean_text(diagnostic, limit=1000),
                remote_mta=tail.group(1),
            )
        rows.append(row)
    return rows


def _sendmail(lines: list[str], action: str) -> list[BounceRow]:
    rows: list[BounceRow] = []
    section = ""
    # The transcript names the remote server ("... while talking to mx.example.org.:").
    talking = next((t for t in lines if "while talking to" in t), "")
    host = talking.split("while talking to", 1)[1].strip().rstrip(".:") if talking else ""
    for index, line in enumerate(lines):
        marker = _SENDMAIL_SECTION.search(line)
        if marker:
            section = "failed" if marker.group(1) == "permanent fatal" else "delayed"
            continue
        if line.strip().startswith("-----"):
            section = ""
        if not section or not line.strip() or line[:1] in " \t":
            continue
        address = _ADDRESS_ANYWHERE.search(line)
        if address is None:
            continue
        reason = ""
        if index + 1 < len(lines) and lines[index + 1].strip().startswith("(reason:"):
            reason = lines[index + 1].strip().removeprefix("(reason:").rstrip(")").strip()
        rows.append(
            BounceRow(
                final_recipient=clean_text(address.group(), limit=254),
                action=section,
                status=status_of(reason),
                diagnostic_code=clean_text(reason, limit=1000),
                remote_mta=clean_text(host, limit=255),
            )
        )
    return rows


def _generic(lines: list[str], action: str, ignore: set[str]) -> list[BounceRow]:
    # A paragraph naming exactly one address (not the bounce's own) and an SMTP code.
    rows: list[BounceRow] = []
    for paragraph in "\n".join(lines).split("\n\n"):
        addresses = {a.lower() for a in _ADDRESS_ANYWHERE.findall(paragraph)} - ignore
        if len(addresses) == 1 and (status_of(paragraph) or _SMTP_REPLY.search(paragraph)):
            rows.append(_row(addresses.pop(), paragraph, action=action))
    return rows


def _before_copy(text: str) -> list[str]:
    # The returned message (its headers name addresses too) is not the report.
    lower = text.lower()
    for marker in (
        "--- below this line is a copy of the message",
        "------ this is a copy of the message",
        "----- original message follows -----",
        "----- transcript of session follows -----",
        "original message headers:",
    ):
        cut = lower.find(marker)
        if cut != -1:
            text = text[:cut]
            lower = lower[:cut]
    return text.splitlines()


def rows_from_text(
    text: str, *, subject: str = "", ignore: set[str] | None = None
) -> list[BounceRow]:
    """The recipients a non-DSN bounce names in its ``text`` (best effort; may be
    empty). ``ignore``: lower-cased addresses never taken for a recipient (the
    bounce's own From, for the generic reading)."""
    text = text[:MAX_TEXT]
    lower = (subject + "\n" + text).lower()
    action = "delayed" if any(word in lower for word in _DELAYED) else "failed"
    transcript = text.splitlines()
    lines = _before_copy(text)
    if "qmail-send program" in lower:
        rows = _qmail(lines, action)
    elif "following addresses had" in lower:
        rows = _sendmail(transcript, action)
    elif "recipient(s) cannot be reached" in lower:
        rows = _exchange(lines, action)
    elif "created automatically by mail delivery software" in lower:
        rows = _exim(lines, action)
    else:
        rows = []
    return (rows or _generic(lines, action, ignore or set()))[:MAX_ROWS]
