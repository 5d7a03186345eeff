"""The store: the only write path. Accepted messages go in durably, in batches.

Synchronous; the SMTP layer calls :func:`store_batch` through its bridge with every
message that finished DATA while the previous batch was being stored, and answers
each message's ``250`` only after the call returned its primary key. A single message
is a batch of one. Per batch (hostile-inputs §4.3):

1. one query finds the stored originals of all dedupe keys (hostile-inputs #95);
2. the new raw files are written, fsynced in parallel threads, and each folder
   fsynced once (``files.make_durable_many``); a repeat writes no file;
3. one transaction inserts every message row, then every recipient and sender-check
   row (bulk), and registers ``on_commit`` to hand the originals' primary keys to the
   hook the caller gave; one commit.

The store never schedules anything itself: what happens after the commit is the
caller's ``on_commit`` (the lifecycle's scheduler, in ``smtpd``).

A batch that fails as a whole (a recipient's mailbox deleted since RCPT, the dedupe
index raced by another process, a database error) is rolled back and each of its
messages is stored once more by itself, so each gets the reply it would have had
alone and only a message that cannot be stored is refused (``451`` / ``452``).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import partial

from django.db import IntegrityError, connections, router, transaction

from django_inbound_smtp._db import unit_of_work
from django_inbound_smtp.envelope import ReceivedEnvelope
from django_inbound_smtp.models import InboundMessage, InboundRecipient, SenderCheck
from django_inbound_smtp.parsing import MAX_HEADER_BLOCK, HeaderSummary, summarize_headers
from django_inbound_smtp.spool import Spool
from django_inbound_smtp.store import files, rows

__all__ = ["OnCommit", "Outcome", "store_batch", "store_message"]

logger = logging.getLogger(__name__)

#: A stored message's pk, or why it was not stored (the caller answers 451 / 452).
Outcome = int | Exception
#: Called after the commit with the primary keys of the new originals (never with
#: duplicates, which are not processed). It must not raise; if it does, the messages
#: are stored all the same and the sweeper schedules them.
OnCommit = Callable[[list[int]], None]


@dataclass(eq=False)
class _Item:
    envelope: ReceivedEnvelope
    spool: Spool
    summary: HeaderSummary | None = None
    key: str = ""
    stored_original: InboundMessage | None = None  # set: a repeat of a stored message
    twin: _Item | None = None  # set: a repeat of an earlier message of this batch
    name: str = ""  # the file written for this message (originals only)
    row: InboundMessage | None = None
    outcome: Outcome | None = None
    again: bool = False  # to be stored once more by itself, after the batch

    @property
    def is_original(self) -> bool:
        return self.stored_original is None and self.twin is None


def store_message(
    envelope: ReceivedEnvelope,
    content: bytes,
    *,
    trace: bytes = b"",
    on_commit: OnCommit | None = None,
    queued_by: str = "",
) -> int:
    """Store ``trace + content`` with ``envelope``; return the new ``InboundMessage`` pk.

    ``content`` is what the client sent; ``trace`` our ``Received:`` line. The
    in-memory form of :func:`store_batch` for one message, for the test kit and for
    callers that hold the whole message anyway. Raises what storing it raised."""
    spool = Spool(None, memory_limit=len(content) + 1, head_limit=MAX_HEADER_BLOCK, prefix=trace)
    spool.add(content)
    spool.finish()
    (outcome,) = store_batch([(envelope, spool)], on_commit=on_commit, queued_by=queued_by)
    if isinstance(outcome, Exception):
        raise outcome
    return outcome


def store_batch(
    batch: Sequence[tuple[ReceivedEnvelope, Spool]],
    *,
    on_commit: OnCommit | None = None,
    queued_by: str = "",
) -> list[Outcome]:
    """Store every finished ``(envelope, spool)``; return one outcome per message, in order.

    ``queued_by`` names who ``on_commit`` hands the new messages to (recorded as their
    holder, so that if it dies another process can tell at once). Never raises for one
    message's fault: that message's outcome is the exception. The caller discards the
    spools afterwards."""
    items = [_Item(envelope, spool) for envelope, spool in batch]
    hook = _Hook(on_commit, queued_by)
    _attempt(items, hook)
    for item in items:
        if item.again:
            alone = _Item(item.envelope, item.spool)
            _attempt([alone], hook, last_try=True)
            item.outcome = alone.outcome if not alone.again else _lost()
    return [item.outcome if item.outcome is not None else _lost() for item in items]


@dataclass(frozen=True)
class _Hook:
    on_commit: OnCommit | None
    queued_by: str


def _lost() -> Exception:
    return RuntimeError("the store left a message without an outcome")


def _attempt(items: list[_Item], hook: _Hook, *, last_try: bool = False) -> None:
    with unit_of_work():
        _prepare(items)
        try:
            _classify(items)
            _write_files(items)
        except Exception as error:
            # The dedupe query failed (the database is gone, say): nothing committed,
            # so remove what was written; in a batch, each message tries once alone.
            logger.exception("storing a batch of %d failed before its transaction", len(items))
            for item in items:
                if item.outcome is None:
                    if item.name:
                        files.discard(item.name)
                    item.name = ""
                    if len(items) > 1 and not last_try:
                        item.again = True
                    else:
                        item.outcome = error
        _commit(items, hook, last_try=last_try)


def _prepare(items: list[_Item]) -> None:
    for item in items:
        try:
            item.summary = summarize_headers(item.spool.head)
            message_id = item.summary.message_id
            item.key = rows.dedupe_key(item.envelope, item.spool.digest, message_id)
        except Exception as error:
            item.outcome = error


def _classify(items: list[_Item]) -> None:
    pending = [item for item in items if item.outcome is None]
    keys = {item.key for item in pending}
    found = InboundMessage.objects.filter(dedupe_key__in=keys, duplicate_of__isnull=True)
    stored = {
        m.dedupe_key: m for m in found.only("pk", "queue_id", "raw_file", "size", "dedupe_key")
    }
    first: dict[str, _Item] = {}
    for item in pending:
        if item.key in stored:
            item.stored_original = stored[item.key]
        elif item.key in first:
            item.twin = first[item.key]
        else:
            first[item.key] = item


def _write_files(items: list[_Item]) -> None:
    storage = files.inbound_storage()
    written: list[_Item] = []
    # Written one after the other (page cache, fast) so that a disk filling up fails
    # the message that did not fit, not a small one racing it; fsynced in parallel.
    for item in items:
        if item.outcome is None and item.is_original:
            try:
                item.name = files.place_raw(item.envelope, item.spool, storage=storage)
            except Exception as error:
                item.outcome = error
            else:
                written.append(item)
    failed = files.make_durable_many(storage, [item.name for item in written])
    for item in written:
        if item.name in failed:
            item.outcome, item.name = _as_exception(failed[item.name]), ""
    for item in items:
        if item.twin is not None and item.twin.outcome is not None and item.outcome is None:
            item.again = True  # its first copy failed: it may still be stored by itself


def _as_exception(error: BaseException) -> Exception:
    return error if isinstance(error, Exception) else RuntimeError(repr(error))


def _commit(items: list[_Item], hook: _Hook, *, last_try: bool) -> None:
    group = [item for item in items if item.outcome is None and not item.again]
    if not group:
        return
    using = router.db_for_write(InboundMessage)
    committed: list[int] = []
    at_commit: list[int] = []  # set: the body ran, only the COMMIT itself can fail now
    try:
        with transaction.atomic(using=using):
            _insert(group, queued_by=hook.queued_by)
            transaction.on_commit(lambda: committed.append(1), using=using)
            originals = [_row(item).pk for item in group if item.is_original]
            if hook.on_commit is not None and originals:
                # robust: after the commit the message is ours and the reply is 250,
                # whatever scheduling its processing does (the sweeper catches up).
                transaction.on_commit(partial(hook.on_commit, originals), using=using, robust=True)
            at_commit.append(1)
    except Exception as error:
        if not committed:
            if at_commit and _reply_lost(error, using):
                _commit_unknown(group, error, retry=len(group) > 1 and not last_try)
            else:
                _failed(group, error, last_try=last_try)
            return
        # Committed means stored: each client gets its 250 (RFC 5321 §4.2.5).
        logger.exception("error after storing a batch of %d", len(group))
    except BaseException:
        if not committed and not at_commit:  # an interrupted COMMIT may have happened
            for item in group:
                if item.name:
                    files.discard(item.name)
        raise
    for item in group:
        item.outcome = _row(item).pk
        if not item.is_original:
            logger.info("%s is a duplicate", item.envelope.queue_id)
    logger.debug("stored %d messages in one transaction", len(group), extra={"group": len(group)})


def _failed(group: list[_Item], error: Exception, *, last_try: bool) -> None:
    """The batch's transaction did not commit."""
    if not last_try and (len(group) > 1 or isinstance(error, IntegrityError)):
        # A batch, or one message whose dedupe key was raced: once more, alone (an
        # identical delivery that committed first makes it a duplicate).
        logger.warning("batch of %d failed; storing one by one", len(group), exc_info=True)
        _fall_back(group)
        return
    for item in group:
        if item.name:
            files.discard(item.name)
        item.name, item.outcome = "", error


def _reply_lost(error: Exception, using: str) -> bool:
    """Whether a failed COMMIT may have happened all the same. Not when the server
    answered it with an error (a deferred constraint: SQLSTATE set; rolled back), nor
    on SQLite (a library in this process: a failed commit did not happen). When the
    reply was lost (a dropped connection: no SQLSTATE), it may have."""
    if connections[using].vendor == "sqlite":
        return False
    cause = error.__cause__ or error
    return not (getattr(cause, "sqlstate", None) or getattr(cause, "pgcode", None))


def _commit_unknown(group: list[_Item], error: Exception, *, retry: bool) -> None:
    """The COMMIT failed without a reply (a dropped connection): it may have happened,
    or may still happen (a server waiting for a replica commits after the client is
    gone, so a query now can miss it). A row that is there is stored (its client gets
    250). No file is removed here: the orphan sweeper removes it later if no row
    points at it; removing it now could leave a committed row without its file."""
    stored = _stored(group)
    for item in group:
        if stored is not None and item.envelope.queue_id in stored:
            item.outcome = stored[item.envelope.queue_id]
            continue
        item.name = ""  # kept on disk (see above)
        if retry:
            item.again = True
        else:
            item.outcome = error


def _insert(group: list[_Item], *, queued_by: str) -> None:
    # Originals first: an in-batch duplicate needs its original's pk.
    for item in group:
        assert item.summary is not None
        if item.is_original:
            size = len(item.spool.prefix) + item.spool.size
            item.row = rows.message_row(
                item.envelope,
                item.summary,
                dedupe_key=item.key,
                raw_file=item.name,
                size=size,
                claimed_by=queued_by,
            )
    InboundMessage.objects.bulk_create([_row(item) for item in group if item.is_original])
    for item in group:
        assert item.summary is not None
        if not item.is_original:
            original = item.stored_original or (item.twin.row if item.twin else None)
            assert original is not None
            # The client resent a message we already hold (it missed our 250, or a
            # relay retried). It is acknowledged and recorded, shares the original's
            # file, and is never processed (hostile-inputs #95).
            item.row = rows.message_row(
                item.envelope,
                item.summary,
                status=InboundMessage.Status.DUPLICATE,
                duplicate_of=original,
                dedupe_key=item.key,
                raw_file=original.raw_file,
                size=original.size,
            )
    InboundMessage.objects.bulk_create([_row(item) for item in group if not item.is_original])
    InboundRecipient.objects.bulk_create(
        [row for item in group for row in rows.recipient_rows(item.envelope, _row(item))]
    )
    SenderCheck.objects.bulk_create(
        [row for item in group for row in rows.sender_check_rows(item.envelope, _row(item))]
    )


def _row(item: _Item) -> InboundMessage:
    assert item.row is not None
    return item.row


def _fall_back(group: list[_Item]) -> None:
    """After a batch failed: keep what committed after all, store the rest alone."""
    stored = _stored(group)
    for item in group:
        if stored is not None and item.envelope.queue_id in stored:
            # The COMMIT was reported lost but happened (a dropped connection): stored.
            # Its on_commit never ran; the sweeper schedules its processing.
            item.outcome = stored[item.envelope.queue_id]
            continue
        if item.name and stored is not None:
            files.discard(item.name)
        # Unknown whether it committed (stored is None): the file stays; if no row
        # points at it the orphan sweeper removes it (never acknowledged, so no loss).
        item.name = ""
        item.again = True


def _stored(group: list[_Item]) -> dict[str, int] | None:
    try:
        with unit_of_work():
            found = InboundMessage.objects.filter(
                queue_id__in=[item.envelope.queue_id for item in group]
            ).values_list("queue_id", "pk")
            return dict(found)
    except Exception:
        logger.exception("could not tell whether a failed batch committed")
        return None
