"""Mailbox quotas (``Mailbox.quota_messages`` / ``quota_bytes``) and the recipient
checks made again after DATA on the LMTP listener.

A mailbox holds the messages stored for it (one of its addresses among the recipients),
duplicates not counted; deleting messages frees room. Quotas are soft: they are checked
before storing, not in the storing transaction, so deliveries in flight at the same
moment may each take the last room (the overshoot is bounded by those deliveries).

- At ``RCPT`` (SMTP and LMTP): a mailbox already full (messages or bytes at or over
  its quota) refuses the recipient with ``452 4.2.2``. The message's size is not known
  yet, so in SMTP a message may take a mailbox over its byte quota by one message.
- After ``DATA`` (LMTP only, one reply per recipient): each recipient's mailbox is read
  again; deleted since RCPT gives ``550 5.1.1``, disabled ``550 5.2.1``, and no room for
  this message (its size counted) ``452 4.2.2``, for that recipient alone.

Synchronous: the SMTP layer runs these in a database thread.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from django.db.models import Count, Sum

from django_inbound_smtp import replies
from django_inbound_smtp._db import unit_of_work
from django_inbound_smtp.envelope import ResolvedRecipient
from django_inbound_smtp.models import InboundMessage, InboundRecipient, Mailbox
from django_inbound_smtp.replies import Reply
from django_inbound_smtp.validators.directory import directory

__all__ = ["Usage", "may_skip", "refusal_at_rcpt", "refusals_at_data", "usage"]


@dataclass(frozen=True, slots=True)
class Usage:
    """What a mailbox holds: messages and their bytes."""

    messages: int = 0
    size: int = 0


@dataclass(frozen=True, slots=True)
class _Box:
    active: bool
    quota_messages: int | None
    quota_bytes: int | None

    @property
    def limited(self) -> bool:
        return self.quota_messages is not None or self.quota_bytes is not None

    def full(self, used: Usage, *, incoming: int | None) -> bool:
        """No room for one more message (of ``incoming`` bytes, if known)."""
        if self.quota_messages is not None and used.messages + 1 > self.quota_messages:
            return True
        if self.quota_bytes is None:
            return False
        if incoming is None:
            return used.size >= self.quota_bytes
        return used.size + incoming > self.quota_bytes


def usage(mailbox_ids: Iterable[int]) -> dict[int, Usage]:
    """Messages and bytes held by each mailbox (original messages only: a duplicate
    shares its original's file). One query per mailbox."""
    found: dict[int, Usage] = {}
    for pk in set(mailbox_ids):
        held = InboundRecipient.objects.filter(mailbox_id=pk).values("message_id")
        totals = InboundMessage.objects.filter(pk__in=held, duplicate_of__isnull=True).aggregate(
            messages=Count("pk"), size=Sum("size")
        )
        found[pk] = Usage(int(totals["messages"] or 0), int(totals["size"] or 0))
    return found


def may_skip(recipient: ResolvedRecipient) -> bool:
    """Whether RCPT may skip the quota query for ``recipient``: no mailbox, or the
    directory knows its mailbox has no quota. Never does I/O (event loop)."""
    if recipient.mailbox_id is None:
        return True
    return directory.has_quota(recipient.mailbox_id) is False


def _boxes(ids: Iterable[int]) -> dict[int, _Box]:
    rows = Mailbox.objects.filter(pk__in=list(ids)).values_list(
        "pk", "is_active", "quota_messages", "quota_bytes"
    )
    return {pk: _Box(active, messages, size) for pk, active, messages, size in rows}


def refusal_at_rcpt(recipient: ResolvedRecipient) -> Reply | None:
    """``452 4.2.2`` if the recipient's mailbox is already full, else ``None``."""
    if recipient.mailbox_id is None:
        return None
    # Taken before the query: a remembered answer's age is never understated.
    read_at = time.monotonic()
    with unit_of_work():
        box = _boxes([recipient.mailbox_id]).get(recipient.mailbox_id)
        limited = box is not None and box.limited
        directory.note_quota(recipient.mailbox_id, limited=limited, read_at=read_at)
        if box is None or not box.limited:
            return None
        used = usage([recipient.mailbox_id])[recipient.mailbox_id]
    if box.full(used, incoming=None):
        return replies.MAILBOX_FULL.about(recipient.address)
    return None


def refusals_at_data(recipients: Sequence[ResolvedRecipient], *, size: int) -> list[Reply | None]:
    """After DATA (LMTP): per recipient, in order, why it may not have this message of
    ``size`` bytes now, or ``None`` when it may."""
    ids = {r.mailbox_id for r in recipients if r.mailbox_id is not None}
    with unit_of_work():
        boxes = _boxes(ids)
        used = usage(pk for pk, box in boxes.items() if box.active and box.limited)
    verdicts: list[Reply | None] = []
    for recipient in recipients:
        verdicts.append(_verdict(recipient, boxes, used, size=size))
    return verdicts


def _verdict(
    recipient: ResolvedRecipient, boxes: dict[int, _Box], used: dict[int, Usage], *, size: int
) -> Reply | None:
    if recipient.mailbox_id is None:
        return None  # accepted by a custom validator, or the bare postmaster
    box = boxes.get(recipient.mailbox_id)
    if box is None:
        return replies.MAILBOX_UNKNOWN.about(recipient.address)  # deleted since RCPT
    if not box.active:
        return replies.MAILBOX_DISABLED.about(recipient.address)
    if box.limited and box.full(used[recipient.mailbox_id], incoming=size):
        return replies.MAILBOX_FULL.about(recipient.address)
    return None
