"""What we correct in aiosmtpd 1.4.x's own behaviour: reply texts without RFC 3463
enhanced codes, client bytes echoed into replies, and command length limits shared by
every connection. Pure (aiosmtpd's strings only)."""

from __future__ import annotations

import re

from django_inbound_smtp import replies

__all__ = ["CommandSizeLimits", "enhance"]

# aiosmtpd's own replies lack RFC 3463 enhanced status codes (RFC 2034 makes them
# mandatory once ENHANCEDSTATUSCODES is advertised, and they tell clients *why*).
# Mapped by exact text so an aiosmtpd upgrade that changes wording is caught by tests.
_ENHANCED: dict[str, str] = {
    "250 OK": "250 2.0.0 OK",
    "221 Bye": "221 2.0.0 Bye",
    "252 Cannot VRFY user, but will accept message and attempt delivery": (
        "252 2.0.0 Cannot VRFY user, but will accept message and attempt delivery"
    ),
    "502 EXPN not implemented": "502 5.5.1 EXPN not implemented",
    "501 Error: SMTPUTF8 disabled": "501 5.5.4 Error: SMTPUTF8 not offered",
    "220 Ready to start TLS": "220 2.0.0 Ready to start TLS",
    "454 TLS not available": "454 4.7.0 TLS not available",
    "530 Must issue a STARTTLS command first": "530 5.7.0 Must issue a STARTTLS command first",
    "554 Command refused due to lack of security": (
        "554 5.7.0 Command refused due to lack of security"
    ),
    "501 Error: SMTPUTF8 takes no arguments": "501 5.5.4 Error: SMTPUTF8 takes no arguments",
    "503 Error: need MAIL command": "503 5.5.1 Error: need MAIL command",
    "503 Error: need RCPT command": "503 5.5.1 Error: need RCPT command",
    "503 Error: nested MAIL command": "503 5.5.1 Error: nested MAIL command",
    "503 Error: send HELO first": "503 5.5.1 Error: send HELO first",
    "500 Error: bad syntax": "500 5.5.2 Error: bad syntax",
    '500 Error: command "" not recognized': "500 5.5.2 Error: bad syntax",  # a line of spaces
    "500 Command line too long": "500 5.5.2 Error: command line too long",
    "500 Error: strict ASCII mode": "500 5.5.2 Error: non-ASCII command (SMTPUTF8 not enabled)",
    "552 Error: message size exceeds fixed maximum message size": str(replies.MESSAGE_TOO_BIG),
    "555 MAIL FROM parameters not recognized or not implemented": (
        "555 5.5.4 MAIL FROM parameters not recognized or not implemented"
    ),
    "555 RCPT TO parameters not recognized or not implemented": (
        "555 5.5.4 RCPT TO parameters not recognized or not implemented"
    ),
    "501 Error: BODY can only be one of 7BIT, 8BITMIME": (
        "501 5.5.4 Error: BODY can only be one of 7BIT, 8BITMIME"
    ),
}


_CONTROLS = re.compile("[\x00-\x1f\x7f]")


def enhance(status: str) -> str:
    """aiosmtpd's reply ``status`` with an enhanced code and no control bytes."""
    return _CONTROLS.sub("?", _enhanced(status))


def _enhanced(status: str) -> str:
    mapped = _ENHANCED.get(status)
    if mapped is not None:
        return mapped
    if status.startswith("501 Syntax:"):
        return "501 5.5.4 " + status[4:]
    if status.startswith("500 Error: command ") and status.endswith("not recognized"):
        return "500 5.5.1 " + status[4:]
    return status


class CommandSizeLimits(dict[str, int]):
    """Per-connection, fixed command length limits.

    aiosmtpd keeps these in a class attribute shared by every connection and adds 26
    (SIZE) and 10 (SMTPUTF8) to MAIL's limit on *every* EHLO, so limits drift upwards
    (hostile-inputs #51). Here MAIL's limit is fixed at 512 + 36 and writes are ignored.
    """

    def __init__(self, base: int) -> None:
        super().__init__()
        self._base = base

    def __missing__(self, command: str) -> int:
        return self._base + (36 if command == "MAIL" else 0)

    def __setitem__(self, command: str, value: int) -> None:
        pass  # aiosmtpd's increments
