"""Group commit: store the messages accepted at the same time with one transaction.

Synchronous, in the ORM thread, like :func:`delivery.deliver_spool`. The SMTP layer
hands over every message that finished DATA while the previous group was being
stored (see ``smtp/_group.py``); each gets its own outcome, and its ``250`` only once
the transaction holding its rows has committed. Per group, instead of per message:

1. one query finds the stored originals of all dedupe keys (hostile-inputs #95);
2. the new files are written, fsynced in parallel threads, and each folder fsynced
   once (``_storage.make_durable_many``); duplicates write no file;
3. one transaction inserts every message row, then every recipient row (bulk), and
   registers processing with ``on_commit`` for each original; one commit.

Anything that makes the group fail as a whole (a recipient's mailbox deleted since
RCPT, the dedupe index raced by another process, a database error) rolls it back and
stores its messages one by one with :func:`delivery.deliver_spool`, so each gets the
reply it would have had alone, and only a message that cannot be stored is refused.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from functools import partial

from django.db import router, transaction

from django_inbound_smtp import _storage, delivery, dispatch
from django_inbound_smtp._db import unit_of_work
from django_inbound_smtp.envelope import ReceivedEnvelope
from django_inbound_smtp.models import InboundMessage, InboundRecipient, SenderCheck
from django_inbound_smtp.parsing import HeaderSummary, summarize_headers
from django_inbound_smtp.spool import Spool

__all__ = ["Outcome", "deliver_batch"]

logger = logging.getLogger(__name__)

#: A stored message's pk, or why it was not stored (the caller answers 451 / 452).
Outcome = int | Exception


@dataclass(eq=False)
class _Item:
    envelope: ReceivedEnvelope
    spool: Spool
    summary: HeaderSummary | None = None
    key: str = ""
    stored_original: InboundMessage | None = None  # set: a repeat of a stored message
    twin: _Item | None = None  # set: a repeat of an earlier message of this group
    name: str = ""  # the file written for this message (originals only)
    row: InboundMessage | None = None
    outcome: Outcome | None = None
    alone: bool = False  # to be stored by itself, after the group

    @property
    def is_original(self) -> bool:
        return self.stored_original is None and self.twin is None


def deliver_batch(batch: Sequence[tuple[ReceivedEnvelope, Spool]]) -> list[Outcome]:
    """Store every finished ``(envelope, spool)``; return one outcome per message, in order.

    Never raises for one message's fault: that message's outcome is the exception.
    A group of one takes exactly the single-message path."""
    if len(batch) == 1:
        return [_alone(*batch[0])]
    items = [_Item(envelope, spool) for envelope, spool in batch]
    with unit_of_work():
        _prepare(items)
        try:
            _classify(items)
            _write_files(items)
        except Exception:
            # The dedupe query failed (the database is gone, say): nothing committed,
            # so remove what was written and let each message try (and answer) alone.
            logger.exception("group delivery failed before its transaction")
            for item in items:
                if item.outcome is None:
                    if item.name:
                        _storage.discard(item.name)
                    item.name, item.alone = "", True
        _commit(items)
    for item in items:
        if item.alone:
            item.outcome = _alone(item.envelope, item.spool)
    return [item.outcome if item.outcome is not None else _missing() for item in items]


def _missing() -> Exception:
    return RuntimeError("group delivery left a message without an outcome")


def _alone(envelope: ReceivedEnvelope, spool: Spool) -> Outcome:
    try:
        return delivery.deliver_spool(envelope, spool)
    except Exception as error:
        return error


def _prepare(items: list[_Item]) -> None:
    for item in items:
        try:
            item.summary = summarize_headers(item.spool.head)
            message_id = item.summary.message_id
            item.key = delivery.dedupe_key(item.envelope, item.spool.digest, message_id)
        except Exception as error:
            item.outcome = error


def _classify(items: list[_Item]) -> None:
    pending = [item for item in items if item.outcome is None]
    stored = delivery.originals(item.key for item in pending)
    first: dict[str, _Item] = {}
    for item in pending:
        if item.key in stored:
            item.stored_original = stored[item.key]
        elif item.key in first:
            item.twin = first[item.key]
        else:
            first[item.key] = item


def _write_files(items: list[_Item]) -> None:
    storage = _storage.inbound_storage()
    written: list[_Item] = []
    # Written one after the other (page cache, fast) so that a disk filling up fails
    # the message that did not fit, not a small one racing it; fsynced in parallel.
    for item in items:
        if item.outcome is None and item.is_original:
            try:
                item.name = delivery.place_raw(item.envelope, item.spool, storage=storage)
            except Exception as error:
                item.outcome = error
            else:
                written.append(item)
    failed = _storage.make_durable_many(storage, [item.name for item in written])
    for item in written:
        if item.name in failed:
            item.outcome, item.name = _as_exception(failed[item.name]), ""
    for item in items:
        if item.twin is not None and item.twin.outcome is not None and item.outcome is None:
            item.alone = True  # its first copy failed: it may still be stored by itself


def _as_exception(error: BaseException) -> Exception:
    return error if isinstance(error, Exception) else RuntimeError(repr(error))


def _commit(items: list[_Item]) -> None:
    group = [item for item in items if item.outcome is None and not item.alone]
    if not group:
        return
    using = router.db_for_write(InboundMessage)
    committed: list[int] = []
    try:
        with transaction.atomic(using=using):
            _insert(group)
            transaction.on_commit(lambda: committed.append(1), using=using)
            for item in group:
                if item.is_original:
                    assert item.row is not None
                    # robust: after the commit the message is ours and the reply is
                    # 250, whatever scheduling its processing does (the sweeper
                    # catches up).
                    transaction.on_commit(
                        partial(dispatch.message_committed, item.row.pk), using=using, robust=True
                    )
    except Exception:
        if not committed:
            logger.warning("group of %d failed; storing one by one", len(group), exc_info=True)
            _fall_back(group)
            return
        # Committed means stored: each client gets its 250 (RFC 5321 §4.2.5).
        logger.exception("error after storing a group of %d", len(group))
    except BaseException:
        if not committed:
            for item in group:
                if item.name:
                    _storage.discard(item.name)
        raise
    for item in group:
        item.outcome = _row(item).pk
        if not item.is_original:
            logger.info("%s is a duplicate", item.envelope.queue_id)
    logger.debug("stored %d messages in one transaction", len(group), extra={"group": len(group)})


def _insert(group: list[_Item]) -> None:
    # Originals first: an in-group duplicate needs its original's pk.
    for item in group:
        assert item.summary is not None
        if item.is_original:
            size = len(item.spool.prefix) + item.spool.size
            item.row = delivery.message_row(
                item.envelope, item.summary, dedupe_key=item.key, raw_file=item.name, size=size
            )
    InboundMessage.objects.bulk_create(_rows(item for item in group if item.is_original))
    for item in group:
        assert item.summary is not None
        if not item.is_original:
            original = item.stored_original or (item.twin.row if item.twin else None)
            assert original is not None
            # Shares the original's file and is never processed (delivery._store_duplicate).
            item.row = delivery.message_row(
                item.envelope,
                item.summary,
                status=InboundMessage.Status.DUPLICATE,
                duplicate_of=original,
                dedupe_key=item.key,
                raw_file=original.raw_file,
                size=original.size,
            )
    InboundMessage.objects.bulk_create(_rows(item for item in group if not item.is_original))
    InboundRecipient.objects.bulk_create(
        [row for item in group for row in delivery.recipient_rows(item.envelope, _row(item))]
    )
    SenderCheck.objects.bulk_create(
        [row for item in group for row in delivery.sender_check_rows(item.envelope, _row(item))]
    )


def _row(item: _Item) -> InboundMessage:
    assert item.row is not None
    return item.row


def _rows(items: Iterable[_Item]) -> list[InboundMessage]:
    return [_row(item) for item in items]


def _fall_back(group: list[_Item]) -> None:
    """After a group failed: keep what committed after all, retry the rest one by one."""
    stored = _stored(group)
    for item in group:
        if stored is not None and item.envelope.queue_id in stored:
            # The COMMIT was reported lost but happened (a dropped connection): stored.
            # Its on_commit never ran; the sweeper schedules its processing.
            item.outcome = stored[item.envelope.queue_id]
            continue
        if item.name and stored is not None:
            _storage.discard(item.name)
        # Unknown whether it committed (stored is None): the file stays; if no row
        # points at it the orphan sweeper removes it (never acknowledged, so no loss).
        item.name = ""
        item.alone = True


def _stored(group: list[_Item]) -> dict[str, int] | None:
    try:
        with unit_of_work():
            rows = InboundMessage.objects.filter(
                queue_id__in=[item.envelope.queue_id for item in group]
            ).values_list("queue_id", "pk")
            return dict(rows)
    except Exception:
        logger.exception("could not tell whether a failed group committed")
        return None
