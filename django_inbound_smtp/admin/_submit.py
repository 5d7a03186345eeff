"""A message put in from the admin: the same bytes, policy, store and processing as SMTP.

What an SMTP client and our DATA reader would do to a message, and nothing more:

- a file whose lines all end in LF (a Unix file) is sent as a client sends it, each
  line ending in CRLF (RFC 5321 §2.3.8); a file that ends without a line end gets one
  (a client ends the data with CRLF before the dot, as ``smtplib`` does);
- then the server's own policies: ``MAX_MESSAGE_SIZE``, ``BARE_NEWLINES`` (the same
  :class:`~django_inbound_smtp.smtp._data.BareNewlines` object the DATA reader uses)
  and ``DATA_LINE_LIMIT``;
- the recipients go through ``RECIPIENT_VALIDATORS`` exactly as at RCPT time;
- the bytes are stored by the one write path (``store``), dedupe included, and
  processing is scheduled after the commit by the lifecycle, as for SMTP mail.

Our ``Received:`` line goes on top, as on every stored message; it says the message
came from the admin (``from admin … with HTTP``), never a client address.
"""

from __future__ import annotations

import re
import socket
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

from django_inbound_smtp import replies, store, validators
from django_inbound_smtp.conf import get_settings
from django_inbound_smtp.envelope import ReceivedEnvelope, RecipientContext, ResolvedRecipient
from django_inbound_smtp.lifecycle import schedule
from django_inbound_smtp.parsing import header_block
from django_inbound_smtp.smtp._data import BareNewlines, longest_line
from django_inbound_smtp.smtp._trace import new_queue_id, received_field

__all__ = ["HELO", "NotAMessage", "Prepared", "Refused", "prepare", "resolve", "submit"]

#: The HELO name recorded for injected mail: there is no client to name itself.
HELO = "admin"

# RFC 5322 §2.2: a field name is printable US-ASCII except the colon.
_FIELD = re.compile(rb"^[\x21-\x39\x3b-\x7e]+[ \t]*:")


class NotAMessage(ValueError):
    """The bytes are not an Internet message (empty, binary, an mbox file)."""


class Refused(ValueError):
    """The server would have refused the message; ``reply`` is what SMTP would answer."""

    def __init__(self, reply: replies.Reply) -> None:
        super().__init__(str(reply))
        self.reply = reply


@dataclass(frozen=True)
class Prepared:
    """Message bytes ready for the store, and whether they held bare CR or LF."""

    content: bytes
    bare_newlines: bool


def as_a_client_sends_it(raw: bytes) -> bytes:
    """``raw`` with the line ends an SMTP client would send (see the module docstring)."""
    if b"\r" not in raw:
        raw = raw.replace(b"\n", b"\r\n")
    if not raw.endswith(b"\r\n"):
        raw += b"\r\n"
    return raw


def _looks_like_a_message(raw: bytes) -> None:
    if not raw.strip():
        raise NotAMessage("The message is empty.")
    if raw.startswith(b"From "):
        raise NotAMessage(
            "This starts with an mbox 'From ' line, not a header field: remove that first "
            "line (one message per upload)."
        )
    if not _FIELD.match(raw):
        raise NotAMessage("This is not a mail message: it must start with a header field.")
    if b"\x00" in header_block(raw):
        raise NotAMessage("This is not a mail message: its header holds NUL bytes (binary).")


def prepare(raw: bytes) -> Prepared:
    """Check and normalize uploaded or pasted message bytes as SMTP would.

    Raises :class:`NotAMessage`, or :class:`Refused` with the reply SMTP would give
    (``552 5.3.4`` too big, ``550 5.5.2`` bare newline, ``500 5.5.2`` line too long)."""
    settings = get_settings()
    _looks_like_a_message(raw)
    sent = as_a_client_sends_it(raw)
    limit = settings.MAX_MESSAGE_SIZE
    if limit and len(sent) > limit:
        raise Refused(replies.MESSAGE_TOO_BIG)
    newlines = BareNewlines(settings.BARE_NEWLINES)
    content = newlines.apply(sent)
    if newlines.seen and newlines.policy == "reject":
        raise Refused(replies.BARE_NEWLINE)
    line_limit = settings.DATA_LINE_LIMIT
    if line_limit and longest_line(sent, 0)[0] > line_limit:
        raise Refused(replies.LINE_TOO_LONG)
    return Prepared(content=content, bare_newlines=newlines.seen)


def resolve(address: str, *, mail_from: str, secure: bool) -> ResolvedRecipient:
    """Run the RCPT-time validator chain for ``address``; raises ``Rejected`` /
    ``TemporaryFailure`` with the reply SMTP would give. Synchronous."""
    context = RecipientContext(mail_from=mail_from, peer_host=None, helo=HELO, tls=secure)
    return validators.validate_recipient_here(address, context=context)


def _hostname() -> str:
    return get_settings().HOSTNAME or socket.getfqdn()


def trace_header(
    *, queue_id: str, recipients: Sequence[str], when: datetime, secure: bool
) -> bytes:
    """Our ``Received:`` line for an injected message: no client, the admin over HTTP."""
    return received_field(
        ["Received: from admin (message put in from the Django admin)"],
        hostname=_hostname(),
        protocol="HTTPS" if secure else "HTTP",
        queue_id=queue_id,
        recipients=recipients,
        when=when,
    )


def submit(
    prepared: Prepared,
    *,
    mail_from: str,
    recipients: Sequence[ResolvedRecipient],
    user_id: int | None,
    secure: bool,
) -> int:
    """Store the message and schedule its processing after the commit; return its pk.

    A repeat of a stored message (same bytes, Message-ID, sender and recipients) is
    stored as its duplicate and not processed, as over SMTP. Raises what storing
    raised (nothing is stored then)."""
    envelope = ReceivedEnvelope(
        queue_id=new_queue_id(),
        mail_from=mail_from,
        recipients=tuple(recipients),
        peer_host=None,
        peer_port=None,
        helo=HELO,
        tls=secure,
        esmtp=True,
        received_at=datetime.now(UTC),
        bare_newlines=prepared.bare_newlines,
        received_via="admin",
        injected_by=user_id,
    )
    trace = trace_header(
        queue_id=envelope.queue_id,
        recipients=envelope.rcpt_tos,
        when=envelope.received_at,
        secure=secure,
    )
    return store.store_message(
        envelope,
        prepared.content,
        trace=trace,
        on_commit=schedule.schedule,
        queued_by=schedule.queue_owner(),
    )
