"""Per-recipient rows of a bounce: RFC 3464 delivery status notifications. Pure.

A DSN's ``message/delivery-status`` part (``message/global-delivery-status``,
RFC 6533, alike) is blocks of header-like fields separated by empty lines: the first
block is about the message (``Reporting-MTA``, ``Arrival-Date``), each following one
about one recipient (``Final-Recipient``, ``Action``, ``Status``, ``Diagnostic-Code``,
``Remote-MTA``, ...). The bounces that are not DSNs are read by ``_bounce_text``.
Everything here is hostile input: values are cleaned, bounded, and never trusted.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from django_inbound_smtp.parsing import clean_text

__all__ = ["ACTIONS", "BounceRow", "address_of", "parse_delivery_status", "status_of"]

#: RFC 3464 §2.3.3: what the reporting MTA did for the recipient.
ACTIONS = ("failed", "delayed", "delivered", "relayed", "expanded")
# A DSN part is read up to this many bytes, and at most this many recipients: a bounce
# with more rows than that is not one we can act on recipient by recipient anyway.
MAX_DSN_BYTES = 256 * 1024
MAX_ROWS = 500
_ADDRESS_LENGTH = 254
_TEXT_LENGTH = 1000
# RFC 3463 enhanced status code: class.subject.detail.
_STATUS = re.compile(r"\b([245])\.(\d{1,3})\.(\d{1,3})\b")
_FIELD = re.compile(r"^([A-Za-z0-9-]+)\s*:\s?(.*)$")


@dataclass(frozen=True, slots=True)
class BounceRow:
    """One recipient of a bounce: what happened to the mail sent to it."""

    #: The address the mail was sent to as the sender gave it (ORCPT), if reported.
    original_recipient: str = ""
    #: The address the reporting MTA tried to deliver to.
    final_recipient: str = ""
    #: ``failed``, ``delayed``, ``delivered``, ``relayed``, ``expanded``, or ``""``.
    action: str = ""
    #: RFC 3463 enhanced status code, e.g. ``5.1.1`` (``""`` when none was found).
    status: str = ""
    #: What the remote server said, e.g. ``smtp; 550 5.1.1 User unknown``.
    diagnostic_code: str = ""
    #: The server that refused or accepted it, e.g. ``mx.example.org``.
    remote_mta: str = ""

    @property
    def recipient(self) -> str:
        """The address to act on: the original recipient when known, else the final one."""
        return self.original_recipient or self.final_recipient

    @property
    def failed(self) -> bool:
        """The mail will never reach this recipient (``Action: failed``)."""
        return self.action == "failed"


def status_of(text: str) -> str:
    """The first RFC 3463 enhanced status code in ``text`` (``"5.1.1"``), or ``""``."""
    found = _STATUS.search(text)
    return ".".join(found.groups()) if found else ""


def address_of(value: str) -> str:
    """The address of an RFC 3464 address field, ``"rfc822; <user@example.org>"`` →
    ``"user@example.org"``: the address type dropped, angle brackets removed."""
    _type, semicolon, rest = value.partition(";")
    text = (rest if semicolon else value).strip().strip("<>").strip()
    return clean_text(text, limit=_ADDRESS_LENGTH) if "@" in text else ""


def _mta_name(value: str) -> str:
    # "dns; mx.example.org" or "dns; mx.example.org. (192.0.2.1, ...)": the name alone.
    _type, semicolon, rest = value.partition(";")
    words = (rest if semicolon else value).split()
    return clean_text(words[0].rstrip("."), limit=255) if words else ""


def _blocks(text: str) -> list[dict[str, str]]:
    """The field blocks of a delivery-status body, each as lower-cased name → value
    (continuation lines unfolded; the first field of a name wins)."""
    blocks: list[dict[str, str]] = []
    current: dict[str, str] = {}
    last = ""
    for line in text.splitlines():
        if not line.strip():
            if current:
                blocks.append(current)
            current, last = {}, ""
            continue
        if line[0] in " \t" and last:
            current[last] += " " + line.strip()
            continue
        match = _FIELD.match(line)
        if match is None:
            continue
        last = match.group(1).lower()
        if last in current:  # a repeated field: keep the first, ignore the repeat
            last = ""
            continue
        current[last] = match.group(2).strip()
    if current:
        blocks.append(current)
    return blocks


def _row(block: dict[str, str]) -> BounceRow:
    action = block.get("action", "").strip().lower().split(" ", 1)[0]
    status = status_of(block.get("status", ""))
    diagnostic = clean_text(block.get("diagnostic-code", ""), limit=_TEXT_LENGTH)
    if not status:  # some MTAs leave Status empty and put the code in the diagnostic
        status = status_of(diagnostic)
    if action not in ACTIONS:
        action = {"5": "failed", "4": "delayed"}.get(status[:1], "")
    return BounceRow(
        original_recipient=address_of(block.get("original-recipient", "")),
        final_recipient=address_of(block.get("final-recipient", "")),
        action=action,
        status=status,
        diagnostic_code=diagnostic,
        remote_mta=_mta_name(block.get("remote-mta", "")),
    )


def parse_delivery_status(payload: bytes) -> list[BounceRow]:
    """The recipient rows of a ``message/delivery-status`` body (its bytes as sent).

    Never raises. A block without ``Final-Recipient`` and ``Original-Recipient`` is the
    per-message block (or noise) and gives no row. At most ``MAX_ROWS`` rows."""
    text = payload[:MAX_DSN_BYTES].decode("utf-8", "replace").replace("\r", "")
    rows: list[BounceRow] = []
    for block in _blocks(text):
        if "final-recipient" not in block and "original-recipient" not in block:
            continue
        row = _row(block)
        if row.recipient:
            rows.append(row)
        if len(rows) == MAX_ROWS:
            break
    return rows
