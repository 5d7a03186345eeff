"""Every SMTP reply the server sends: codes, RFC 3463 enhanced status codes and texts.

Pure (stdlib only). Replies are values; code never builds a reply string by hand, so
the wire format, the enhanced status and the wording stay consistent and testable.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from enum import IntEnum

__all__ = [
    "AUTH_INVALID",
    "AUTH_NOT_OFFERED",
    "AUTH_THROTTLED",
    "BAD_HELO",
    "BARE_NEWLINE",
    "BAD_RECIPIENT_SYNTAX",
    "BAD_SENDER_SYNTAX",
    "BAD_UTF8",
    "DATA_TOO_SLOW",
    "INSUFFICIENT_STORAGE",
    "LOOKUP_FAILURE",
    "MAILBOX_DISABLED",
    "MAILBOX_FULL",
    "MAILBOX_UNKNOWN",
    "LINE_TOO_LONG",
    "MESSAGE_TOO_BIG",
    "NEEDS_SMTPUTF8",
    "NEED_LHLO",
    "NEED_RCPT",
    "NOT_LMTP_GREETING",
    "OUT_OF_SYNC",
    "RECIPIENT_OK",
    "RELAY_DENIED",
    "SENDER_OK",
    "SHUTTING_DOWN",
    "TEMPORARY_AUTH_FAILURE",
    "TEMPORARY_FAILURE",
    "TIMEOUT",
    "TLS_ON_PLAIN_PORT",
    "NOT_SMTP",
    "TOO_MANY_AUTH_FAILURES",
    "TOO_MANY_ERRORS",
    "TOO_MANY_FROM_CLIENT",
    "TOO_MANY_RECIPIENTS",
    "TOO_MANY_SESSIONS",
    "TOO_MUCH_DATA",
    "Reply",
    "ReplyCode",
    "queued",
]


class ReplyCode(IntEnum):
    """The basic reply codes we send (RFC 5321 §4.2.2)."""

    SERVICE_READY = 220
    CLOSING = 221
    OK = 250
    START_MAIL_INPUT = 354
    SERVICE_UNAVAILABLE = 421
    LOCAL_ERROR = 451
    INSUFFICIENT_STORAGE = 452
    SYNTAX_ERROR = 500
    PARAMETER_SYNTAX_ERROR = 501
    NOT_IMPLEMENTED = 502
    BAD_SEQUENCE = 503
    MAILBOX_UNAVAILABLE = 550
    EXCEEDED_STORAGE = 552
    TRANSACTION_FAILED = 554


@dataclass(frozen=True, slots=True)
class Reply:
    """One SMTP reply: basic code, enhanced status code and human text.

    ``str(reply)`` is the line sent on the wire (without CRLF). ``text`` must never
    contain CR or LF; replies carrying client data go through :meth:`about`.
    """

    code: int
    status: str
    text: str

    def __str__(self) -> str:
        return f"{self.code} {self.status} {self.text}"

    @property
    def is_permanent(self) -> bool:
        """True for 5xx: the client must not retry."""
        return self.code >= 500

    @property
    def is_temporary(self) -> bool:
        """True for 4xx: the client keeps the message and retries later."""
        return 400 <= self.code < 500

    def about(self, address: str) -> Reply:
        """The same reply naming ``address`` the way Postfix does (``<addr>: text``).

        The address must already have passed syntax validation (no CR, LF or NUL).
        """
        return replace(self, text=f"<{address}>: {self.text}")

    def from_host(self, hostname: str) -> Reply:
        """The same reply naming our host first, as 421s do (RFC 5321 §4.2: ``421 <domain>``)."""
        return replace(self, text=f"{hostname} {self.text}")

    def with_reference(self, reference: str) -> Reply:
        """The same reply with a correlation id, so a log line can be found from a bounce."""
        return replace(self, text=f"{self.text} (ref {reference})")


# RFC 5321 §4.2.5 / RFC 3463 X.0.0: the message is ours now.
def queued(queue_id: str) -> Reply:
    """``250 2.0.0 Ok: queued as <id>``, sent only after the message is durable."""
    return Reply(ReplyCode.OK, "2.0.0", f"Ok: queued as {queue_id}")


# RFC 3463 X.1.0 / X.1.5: sender and destination address valid.
SENDER_OK = Reply(ReplyCode.OK, "2.1.0", "Ok")
RECIPIENT_OK = Reply(ReplyCode.OK, "2.1.5", "Ok")

# RFC 3463 X.1.1: bad destination mailbox address (the user does not exist).
MAILBOX_UNKNOWN = Reply(
    ReplyCode.MAILBOX_UNAVAILABLE, "5.1.1", "Recipient address rejected: User unknown"
)
# RFC 3463 X.2.1: mailbox disabled, not accepting messages (LMTP, after DATA: the
# mailbox was switched off after RCPT accepted it). Permanent, as at RCPT time.
MAILBOX_DISABLED = Reply(
    ReplyCode.MAILBOX_UNAVAILABLE, "5.2.1", "Mailbox disabled, not accepting messages"
)
# RFC 3463 X.2.2: mailbox full. Temporary (RFC 5321 §4.2.5): the sender keeps the
# message and retries, so it lands once room is made or the quota is raised.
MAILBOX_FULL = Reply(ReplyCode.INSUFFICIENT_STORAGE, "4.2.2", "Mailbox full, try again later")
# RFC 3463 X.7.1: delivery not authorized. We answer 550, not 554, so a client that
# only looks at the basic code still treats it as a recipient failure (RFC 5321 §4.2.2).
RELAY_DENIED = Reply(ReplyCode.MAILBOX_UNAVAILABLE, "5.7.1", "Relay access denied")
# RFC 5321 §4.1.1.1: the HELO/EHLO argument must be a domain or an address literal.
BAD_HELO = Reply(
    ReplyCode.PARAMETER_SYNTAX_ERROR, "5.5.2", "Syntactically invalid EHLO argument(s)"
)
# RFC 6531 §3.4 / RFC 3463 X.6.7: non-ASCII address without SMTPUTF8; bytes that are
# not UTF-8 at all (Postfix's wording).
NEEDS_SMTPUTF8 = Reply(553, "5.6.7", "Error: non-ASCII address needs SMTPUTF8")
BAD_UTF8 = Reply(ReplyCode.PARAMETER_SYNTAX_ERROR, "5.5.2", "Error: bad UTF-8 syntax")
# Directory harvesting (hostile-inputs #47): too many refused recipients in a session.
TOO_MANY_ERRORS = Reply(ReplyCode.SERVICE_UNAVAILABLE, "4.7.0", "Error: too many errors")
# RFC 3463 X.1.3 / X.1.7: bad destination / sender mailbox address syntax.
BAD_RECIPIENT_SYNTAX = Reply(
    ReplyCode.PARAMETER_SYNTAX_ERROR, "5.1.3", "Bad recipient address syntax"
)
BAD_SENDER_SYNTAX = Reply(ReplyCode.PARAMETER_SYNTAX_ERROR, "5.1.7", "Bad sender address syntax")
# RFC 5321 §4.5.3.1.8 (at least 100 must be accepted) / RFC 3463 X.5.3.
TOO_MANY_RECIPIENTS = Reply(ReplyCode.INSUFFICIENT_STORAGE, "4.5.3", "Error: too many recipients")
# RFC 1870 §6.1 / RFC 3463 X.3.4: message too big for system.
MESSAGE_TOO_BIG = Reply(
    ReplyCode.EXCEEDED_STORAGE, "5.3.4", "Message size exceeds fixed maximum message size"
)
# hostile-inputs #55: a client still sending long after the size limit is cut off.
TOO_MUCH_DATA = Reply(
    ReplyCode.SERVICE_UNAVAILABLE, "4.3.4", "Error: too much mail data, closing connection"
)
# Bare CR/LF in DATA under BARE_NEWLINES = "reject" (Postfix's wording; CVE-2023-51764).
BARE_NEWLINE = Reply(ReplyCode.MAILBOX_UNAVAILABLE, "5.5.2", "Error: bare <LF> received")
# A DATA line over DATA_LINE_LIMIT (RFC 5322 §2.1.1: 998 octets), when one is set.
LINE_TOO_LONG = Reply(ReplyCode.SYNTAX_ERROR, "5.5.2", "Error: line too long")
# Early talkers (hostile-inputs #11, #12) under EARLY_TALKERS = "reject" (Postfix's words).
OUT_OF_SYNC = Reply(ReplyCode.TRANSACTION_FAILED, "5.5.0", "Error: SMTP protocol synchronization")
# RFC 2033 §4.1: an LMTP server must refuse HELO and EHLO; LHLO comes first.
NOT_LMTP_GREETING = Reply(
    ReplyCode.SYNTAX_ERROR, "5.5.1", "Error: command not recognized; this is LMTP, send LHLO"
)
NEED_LHLO = Reply(ReplyCode.BAD_SEQUENCE, "5.5.1", "Error: send LHLO first")
# RFC 5321 §3.3: DATA with no accepted recipient.
NEED_RCPT = Reply(ReplyCode.BAD_SEQUENCE, "5.5.1", "Error: need RCPT command")
# RFC 3463 X.3.0: other or undefined mail system status. Our own faults are always
# temporary (RFC 5321 §4.2.5): the client keeps the message and retries.
TEMPORARY_FAILURE = Reply(
    ReplyCode.LOCAL_ERROR, "4.3.0", "Error: temporary local problem, try again later"
)
LOOKUP_FAILURE = Reply(ReplyCode.LOCAL_ERROR, "4.3.0", "Temporary lookup failure")
# RFC 3463 X.3.1: mail system full.
INSUFFICIENT_STORAGE = Reply(ReplyCode.INSUFFICIENT_STORAGE, "4.3.1", "Insufficient system storage")
# RFC 5321 §3.8: try to send 421 before a forced shutdown. RFC 3463 X.3.2: system not
# accepting network messages.
SHUTTING_DOWN = Reply(
    ReplyCode.SERVICE_UNAVAILABLE, "4.3.2", "Service shutting down, closing transmission channel"
)
# Session caps (hostile-inputs #65-#66): RFC 3463 X.7.0 (policy) per client, X.3.2
# (system not accepting messages) in total, as Postfix and Exim answer.
TOO_MANY_FROM_CLIENT = Reply(
    ReplyCode.SERVICE_UNAVAILABLE, "4.7.0", "Error: too many connections from your address"
)
TOO_MANY_SESSIONS = Reply(
    ReplyCode.SERVICE_UNAVAILABLE,
    "4.3.2",
    "Too many concurrent SMTP connections; please try again later",
)
# A TLS handshake where plain SMTP is spoken (hostile-inputs #23; Haraka answers 501).
TLS_ON_PLAIN_PORT = Reply(
    ReplyCode.PARAMETER_SYNTAX_ERROR, "5.5.1", "Error: TLS handshake on a plain-text port"
)
# An HTTP request on the SMTP port: a scanner or a misdirected client (Postfix's words).
NOT_SMTP = Reply(ReplyCode.CLOSING, "2.7.0", "Error: I can break rules, too. Goodbye.")
# RFC 4954 §6: authentication failed / temporarily unavailable; RFC 3463 X.7.0 for
# the brute-force brakes (Postfix answers the same).
AUTH_INVALID = Reply(535, "5.7.8", "Error: authentication failed")
TEMPORARY_AUTH_FAILURE = Reply(454, "4.7.0", "Temporary authentication failure")
TOO_MANY_AUTH_FAILURES = Reply(
    ReplyCode.SERVICE_UNAVAILABLE, "4.7.0", "Error: too many failed authentications"
)
AUTH_THROTTLED = Reply(454, "4.7.0", "Too many failed authentications; try again later")
AUTH_NOT_OFFERED = Reply(ReplyCode.NOT_IMPLEMENTED, "5.5.1", "Error: authentication not offered")
# RFC 5321 §4.5.3.2.6: a whole DATA transfer that takes too long, however steady.
DATA_TOO_SLOW = Reply(ReplyCode.SERVICE_UNAVAILABLE, "4.4.2", "Error: DATA took too long")
# RFC 3463 X.4.2: bad connection (timeout).
TIMEOUT = Reply(ReplyCode.SERVICE_UNAVAILABLE, "4.4.2", "Error: timeout exceeded")

# Sender checks (INBOUND_SMTP["SENDER_CHECKS"] set to "reject" or "tempfail"). RFC 7372
# registers the X.7.20-X.7.27 codes; the 4xx twins keep the detail of the 5xx ones.
__all__ += [
    "DMARC_REJECT",
    "DMARC_TEMPFAIL",
    "DKIM_REJECT",
    "DKIM_TEMPFAIL",
    "DNSBL_REJECT",
    "DNSBL_TEMPFAIL",
    "IPREV_REJECT",
    "IPREV_TEMPFAIL",
    "NULL_MX_REJECT",
    "SENDER_DOMAIN_REJECT",
    "SENDER_DOMAIN_TEMPFAIL",
    "SPF_REJECT",
    "SPF_TEMPFAIL",
    "TEMPORARY_DNS_FAILURE",
]
# RFC 3463 X.7.1: delivery not authorized (a DNS blocklist lists the client).
DNSBL_REJECT = Reply(ReplyCode.MAILBOX_UNAVAILABLE, "5.7.1", "Service unavailable; client listed")
DNSBL_TEMPFAIL = Reply(ReplyCode.LOCAL_ERROR, "4.7.1", "Service unavailable; client listed")
# RFC 7372 X.7.25: reverse DNS validation failed.
IPREV_REJECT = Reply(
    ReplyCode.MAILBOX_UNAVAILABLE, "5.7.25", "Reverse DNS validation failed for your address"
)
IPREV_TEMPFAIL = Reply(ReplyCode.LOCAL_ERROR, "4.7.25", "Reverse DNS validation failed")
# RFC 3463 X.1.8: bad sender's system address; RFC 7505 §4.2 / RFC 7372 X.7.27: the
# sender domain publishes a null MX, so it cannot receive the bounces it would get.
SENDER_DOMAIN_REJECT = Reply(
    ReplyCode.MAILBOX_UNAVAILABLE, "5.1.8", "Sender address rejected: Domain cannot receive mail"
)
SENDER_DOMAIN_TEMPFAIL = Reply(
    ReplyCode.LOCAL_ERROR, "4.1.8", "Sender address rejected: Domain cannot receive mail"
)
NULL_MX_REJECT = Reply(ReplyCode.MAILBOX_UNAVAILABLE, "5.7.27", "Sender address has null MX")
# RFC 7372 X.7.23: SPF validation failed (RFC 7208 §8.4: "fail" may be refused).
SPF_REJECT = Reply(ReplyCode.MAILBOX_UNAVAILABLE, "5.7.23", "SPF validation failed")
SPF_TEMPFAIL = Reply(ReplyCode.LOCAL_ERROR, "4.7.23", "SPF validation failed")
# RFC 7372 X.7.20: no passing DKIM signature found.
DKIM_REJECT = Reply(ReplyCode.MAILBOX_UNAVAILABLE, "5.7.20", "No passing DKIM signature found")
DKIM_TEMPFAIL = Reply(ReplyCode.LOCAL_ERROR, "4.7.20", "No passing DKIM signature found")
# RFC 7372 X.7.26: multiple authentication checks failed (DMARC, as Gmail answers).
DMARC_REJECT = Reply(
    ReplyCode.MAILBOX_UNAVAILABLE, "5.7.26", "Unauthenticated mail refused by the DMARC policy"
)
DMARC_TEMPFAIL = Reply(
    ReplyCode.LOCAL_ERROR, "4.7.26", "Unauthenticated mail refused by the DMARC policy"
)
# RFC 3463 X.4.3: directory server failure. A lookup a refusing check needs did not
# answer: never a permanent refusal (RFC 7208 §2.6.6).
TEMPORARY_DNS_FAILURE = Reply(
    ReplyCode.LOCAL_ERROR, "4.4.3", "Temporary DNS failure, try again later"
)
