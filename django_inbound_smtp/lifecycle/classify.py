"""The kind of a stored message, in the parse step: what the pure classifier needs
from the row and the settings, and a bounce's recipient rows.

See ``parsing.kinds`` for the rules. Runs inside ``extract_many`` for each message it
parses: a few header lookups, plus reading the report part of a bounce.
"""

from __future__ import annotations

import functools
import re
import socket

from django_inbound_smtp.conf import get_settings
from django_inbound_smtp.models import BounceRecipient, InboundMessage
from django_inbound_smtp.parsing.kinds import BOUNCE, Classification, classify
from django_inbound_smtp.parsing.mime import ParsedMessage

__all__ = ["bounce_rows", "classify_message", "own_hosts"]

# Our own Received: line (smtp/_trace.py): "... by HOST (django-inbound-smtp) with ...".
_OUR_LINE = re.compile(r"\bby\s+(\S+)\s+\(django-inbound-smtp\)", re.IGNORECASE)


@functools.cache
def _fqdn() -> str:
    # Looked up once per process, as smtpd does: getfqdn() may ask the resolver.
    return socket.getfqdn()


def own_hosts(parsed: ParsedMessage) -> set[str]:
    """The names we receive mail as: ``HOSTNAME`` (or the machine's name) and the
    host named by our own ``Received:`` line on this message (``smtpd --hostname``
    may have given another)."""
    hosts = {get_settings().HOSTNAME or _fqdn()}
    for name, _raw, decoded in parsed.headers[:3]:
        if name.lower() == "received" and (ours := _OUR_LINE.search(decoded)):
            hosts.add(ours.group(1))
            break
    return hosts


def classify_message(message: InboundMessage, parsed: ParsedMessage) -> Classification:
    """The kind of ``message``, from its envelope and what was parsed from it."""
    return classify(
        parsed,
        envelope_from=message.envelope_from,
        own_hosts=own_hosts(parsed),
        own_addresses=[r.address for r in message.recipients.all()],
        max_own_hops=get_settings().LOOP_MAX_OWN_HOPS,
    )


def bounce_rows(message: InboundMessage, kind: Classification) -> list[BounceRecipient]:
    """Unsaved ``BounceRecipient`` rows for a bounce (none for other kinds)."""
    if kind.kind != BOUNCE:
        return []
    return [
        BounceRecipient(
            message=message,
            position=position,
            original_recipient=row.original_recipient,
            final_recipient=row.final_recipient,
            action=row.action,
            status=row.status,
            diagnostic_code=row.diagnostic_code,
            remote_mta=row.remote_mta,
            original_message_id=kind.original_message_id,
        )
        for position, row in enumerate(kind.bounced)
    ]
