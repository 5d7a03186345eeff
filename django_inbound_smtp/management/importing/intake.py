"""Validate, spool and store imported messages the way the SMTP path does.

Each message is spooled as it is read (``Spool``: memory up to ``SPOOL_MEMORY_LIMIT``,
then a spool file), checked against ``MAX_MESSAGE_SIZE``, given our ``Received:``
line and an envelope whose recipients passed the configured validators, and stored
with ``store.store_batch`` (dedupe included) with the lifecycle's ``schedule`` as the
after-commit hook, exactly as ``smtp/_bridge.py`` stores: processing is scheduled
once the batch committed.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from email.utils import format_datetime

from django_inbound_smtp import store, validators
from django_inbound_smtp.conf import get_settings
from django_inbound_smtp.envelope import (
    ReceivedEnvelope,
    RecipientContext,
    ResolvedRecipient,
    address_key,
    address_syntax_error,
)
from django_inbound_smtp.exceptions import Rejected, TemporaryFailure
from django_inbound_smtp.lifecycle import schedule
from django_inbound_smtp.management.importing.outcomes import (
    Refusal,
    SourceError,
    Summary,
    TemporaryFault,
)
from django_inbound_smtp.management.importing.reading import Message, header_recipients
from django_inbound_smtp.models import InboundMessage
from django_inbound_smtp.parsing import MAX_HEADER_BLOCK, summarize_headers
from django_inbound_smtp.smtp._trace import new_queue_id, sanitize_helo
from django_inbound_smtp.spool import Spool, is_disk_full
from django_inbound_smtp.store import files, rows

__all__ = ["Importer"]

logger = logging.getLogger(__name__)


@dataclass
class _Ready:
    envelope: ReceivedEnvelope
    spool: Spool
    label: str


class Importer:
    """Takes messages one by one and stores them ``batch_size`` a transaction.

    ``recipients``: the envelope recipients of every message (all must be accepted),
    or ``None`` to take them from each message's header (``header_recipients``; the
    accepted ones are kept). ``sender``: the envelope sender, or ``None`` for what the
    source says. ``skip_known``: a message stored before is skipped, not recorded as a
    duplicate again (re-running an import). ``via``: ``received_via`` of the rows."""

    def __init__(
        self,
        *,
        sender: str | None,
        recipients: Sequence[str] | None,
        hostname: str,
        skip_known: bool,
        via: str,
        batch_size: int = 100,
    ) -> None:
        self.sender = sender
        self.recipients = list(recipients) if recipients else None
        self.hostname = hostname
        self.skip_known = skip_known
        self.via = via
        self.batch_size = batch_size
        self.summary = Summary()
        self._pending: list[_Ready] = []

    def add(self, message: Message) -> None:
        """Read, check and queue ``message``; store the queue when it is full.

        Raises ``Refusal`` (this message is refused; counted) or ``TemporaryFault``."""
        try:
            ready = self._prepare(message)
        except Refusal as refusal:
            self.summary.refused[refusal.reason] += 1
            raise
        self._pending.append(ready)
        if len(self._pending) >= self.batch_size:
            self.flush()

    def flush(self) -> None:
        """Store what is queued in one transaction. Raises ``TemporaryFault`` if any
        message of the batch could not be stored (the others are)."""
        batch, self._pending = self._pending, []
        try:
            self._store(batch)
        finally:
            for ready in batch:
                ready.spool.discard()

    def _prepare(self, message: Message) -> _Ready:
        config = get_settings()
        queue_id = new_queue_id()
        received_at = datetime.now(UTC)
        spool = Spool(
            files.spool_directory(),
            memory_limit=config.SPOOL_MEMORY_LIMIT,
            head_limit=MAX_HEADER_BLOCK,
            prefix=self._trace(queue_id, received_at),
        )
        try:
            self._read(message, spool, limit=config.MAX_MESSAGE_SIZE)
            mail_from = self._sender(message)
            recipients = self._validated(mail_from, spool.head)
        except BaseException:
            spool.discard()
            raise
        envelope = ReceivedEnvelope(
            queue_id=queue_id,
            mail_from=mail_from,
            recipients=recipients,
            peer_host=None,
            peer_port=None,
            helo="",
            tls=False,
            esmtp=False,
            # The source's delivery time when it has one (an mbox From_ line, a Maildir
            # file's time), so migrated mail keeps its date.
            received_at=message.received_at or received_at,
            received_via=self.via,
        )
        return _Ready(envelope, spool, message.label)

    def _trace(self, queue_id: str, when: datetime) -> bytes:
        return (
            f"Received: by {sanitize_helo(self.hostname)} (django-inbound-smtp) "
            f"with local id {queue_id};\r\n\t{format_datetime(when)}\r\n"
        ).encode("ascii")

    def _read(self, message: Message, spool: Spool, *, limit: int) -> None:
        chunks = iter(message.chunks)
        try:
            while True:
                try:
                    chunk = next(chunks)
                except StopIteration:
                    break
                except OSError as error:
                    raise SourceError(f"{message.label}: {error.strerror or error}") from error
                if spool.size + len(chunk) > limit:
                    detail = f"larger than MAX_MESSAGE_SIZE ({limit} bytes)"
                    raise Refusal("too big", detail, code="dataerr")
                if spool.add(chunk):
                    spool.flush()
            spool.finish()
        except OSError as error:
            kind = "disk full" if is_disk_full(error) else type(error).__name__
            raise TemporaryFault(f"could not spool the message ({kind})") from error
        if spool.size == 0:
            raise Refusal("empty", "the message is empty", code="dataerr")

    def _sender(self, message: Message) -> str:
        sender = self.sender if self.sender is not None else (message.mail_from or "")
        sender = "" if sender == "<>" else sender
        if sender and address_syntax_error(sender):
            raise Refusal("bad sender", f"unusable sender address {sender!r}", code="dataerr")
        return sender

    def _validated(self, mail_from: str, head: bytes) -> tuple[ResolvedRecipient, ...]:
        explicit = self.recipients is not None
        addresses = self.recipients if self.recipients is not None else header_recipients(head)
        unique: list[str] = []
        for address in addresses:  # a repeated address is one recipient, as in RCPT
            if address_key(address) not in {address_key(u) for u in unique}:
                unique.append(address)
        if not unique:
            raise Refusal(
                "no recipient", "no recipient given or found in the header", code="nouser"
            )
        limit = get_settings().MAX_RECIPIENTS
        if explicit and len(unique) > limit:
            # The MTA's recipient limit is above ours: a configuration to fix, not a
            # reason to bounce. The MTA keeps the message meanwhile.
            raise TemporaryFault(
                f"{len(unique)} recipients, more than MAX_RECIPIENTS; lower the transport's "
                "recipient limit"
            )
        context = RecipientContext(mail_from=mail_from, peer_host=None, helo="", tls=False)
        accepted: list[ResolvedRecipient] = []
        unknown: list[str] = []
        for address in unique:
            if address_syntax_error(address):
                unknown.append(address)
                continue
            try:
                # Sync validators run in this (the command's) thread, with its connection.
                accepted.append(validators.validate_recipient_here(address, context=context))
            except Rejected:
                unknown.append(address)
            except TemporaryFailure as failure:
                raise TemporaryFault(
                    f"recipient {address} refused for now ({failure.reply.code})"
                ) from failure
            except Exception as error:
                raise TemporaryFault(f"recipient lookup failed ({type(error).__name__})") from error
        if unknown and (explicit or not accepted):
            # An explicit envelope is taken whole or not at all (see README, "Pipe and
            # import"): accepting part of it would lose the rest without a bounce.
            raise Refusal(
                "unknown recipient", f"not accepted here: {', '.join(unknown)}", code="nouser"
            )
        if len(accepted) > limit:
            detail = f"{len(accepted)} recipients, more than MAX_RECIPIENTS ({limit})"
            raise Refusal("too many recipients", detail, code="dataerr")
        return tuple(accepted)

    def _store(self, batch: list[_Ready]) -> None:
        if self.skip_known:
            batch = self._unknown(batch)
        if not batch:
            return
        outcomes = store.store_batch(
            [(ready.envelope, ready.spool) for ready in batch],
            on_commit=schedule.schedule,
            queued_by=schedule.queue_owner(),
        )
        stored = [pk for pk in outcomes if isinstance(pk, int)]
        repeats = self._duplicates(stored)
        self.summary.duplicates += len(repeats)
        self.summary.stored += len(stored) - len(repeats)
        failures = [outcome for outcome in outcomes if isinstance(outcome, Exception)]
        if failures:
            self.summary.errors += len(failures)
            first = failures[0]
            kind = "disk full" if is_disk_full(first) else type(first).__name__
            raise TemporaryFault(
                f"{len(failures)} message(s) could not be stored ({kind})"
            ) from first

    def _duplicates(self, stored: list[int]) -> set[int]:
        """Which of the messages just committed are duplicates (for the tally only: if
        the database is gone by now, they count as stored; they are stored either way)."""
        try:
            return set(
                InboundMessage.objects.filter(
                    pk__in=stored, status=InboundMessage.Status.DUPLICATE
                ).values_list("pk", flat=True)
            )
        except Exception:
            logger.warning("could not tell duplicates among %d stored message(s)", len(stored))
            return set()

    def _unknown(self, batch: list[_Ready]) -> list[_Ready]:
        """The messages of ``batch`` not stored before; counts the others."""
        keys = {}
        for ready in batch:
            message_id = summarize_headers(ready.spool.head).message_id
            keys[id(ready)] = rows.dedupe_key(ready.envelope, ready.spool.digest, message_id)
        try:
            known = set(
                InboundMessage.objects.filter(
                    dedupe_key__in=set(keys.values()), duplicate_of__isnull=True
                ).values_list("dedupe_key", flat=True)
            )
        except Exception as error:
            self.summary.errors += len(batch)
            raise TemporaryFault(f"dedupe lookup failed ({type(error).__name__})") from error
        fresh = [ready for ready in batch if keys[id(ready)] not in known]
        self.summary.already += len(batch) - len(fresh)
        return fresh
