"""The only write path: store one accepted message durably, then schedule processing.

Synchronous. The SMTP layer calls :func:`deliver_spool` through its bridge, in the
ORM thread, and answers ``250`` only after it returns. Order (hostile-inputs §4.3):

1. the raw bytes are put into storage and made durable: a small message is written
   from memory, a spooled one (already fsynced) hard-linked in; then the file and
   its folder are fsynced (an acknowledged write for remote storages);
2. one transaction creates the message row and its recipient rows, and registers the
   processing step with ``on_commit``;
3. the primary key is returned.

If step 2 fails the file is deleted (best effort); nothing half-stored is visible.
"""

from __future__ import annotations

import hashlib
import logging
import os
import tempfile
from collections.abc import Iterable
from functools import partial
from typing import Any

from django.core.files.storage import Storage
from django.db import IntegrityError, router, transaction

from django_inbound_smtp import _storage, dispatch
from django_inbound_smtp._db import unit_of_work
from django_inbound_smtp.conf import get_settings
from django_inbound_smtp.envelope import ReceivedEnvelope
from django_inbound_smtp.models import InboundMessage, InboundRecipient, SenderCheck
from django_inbound_smtp.parsing import (
    MAX_HEADER_BLOCK,
    HeaderSummary,
    clean_text,
    storable,
    summarize_headers,
)
from django_inbound_smtp.spool import Spool

__all__ = [
    "dedupe_key",
    "deliver",
    "deliver_spool",
    "message_folders",
    "raw_file_name",
    "spool_directory",
]

logger = logging.getLogger(__name__)


def raw_file_name(envelope: ReceivedEnvelope) -> str:
    """Storage name of the raw message: ``<prefix>/YYYY/MM/DD/<queue id>.eml``.

    Built from our own queue id only, never from anything the client sent.
    """
    day = envelope.received_at.strftime("%Y/%m/%d")
    prefix = get_settings().STORAGE_PREFIX
    return f"{prefix}/{day}/{envelope.queue_id}.eml" if prefix else f"{day}/{envelope.queue_id}.eml"


def spool_directory() -> str:
    """Where messages larger than ``SPOOL_MEMORY_LIMIT`` are written while they arrive.

    ``SPOOL_DIR`` if set; else a ``spool`` folder beside the raw messages in a local
    storage (the same file system, so storing a spooled message is a hard link, not a
    copy); else, for remote storage, one in the system's temporary folder."""
    settings = get_settings()
    if settings.SPOOL_DIR:
        return str(settings.SPOOL_DIR)
    root = _storage.local_path(_storage.inbound_storage(), settings.STORAGE_PREFIX or "")
    if root is None:
        return os.path.join(tempfile.gettempdir(), "django-inbound-smtp-spool")
    return os.path.join(root, "spool")


def message_folders() -> list[str]:
    """The spool folder, then the local storage folder (if the storage is local)."""
    settings = get_settings()
    root = _storage.local_path(_storage.inbound_storage(), settings.STORAGE_PREFIX or "")
    return [spool_directory()] + ([root] if root is not None else [])


def place_raw(envelope: ReceivedEnvelope, spool: Spool, *, storage: Storage) -> str:
    """Put the raw message into ``storage`` without fsync (for a group commit); return
    the name used."""
    return _storage.place(raw_file_name(envelope), storage=storage, **_raw_source(spool))


def _write_raw(envelope: ReceivedEnvelope, spool: Spool) -> str:
    return _storage.save_durably(raw_file_name(envelope), **_raw_source(spool))


def _raw_source(spool: Spool) -> dict[str, Any]:
    # A spooled message is linked in from its file; a small one is written from memory.
    if spool.path is None:
        return {"content": spool.memory()}
    return {"source_path": spool.path}


def _peer_ip(envelope: ReceivedEnvelope) -> str | None:
    host = envelope.peer_host
    if not host:
        return None
    # IPv6 peers may carry a zone id ("fe80::1%eth0"), which the column does not take.
    return host.split("%", 1)[0]


def dedupe_key(envelope: ReceivedEnvelope, content_sha256: str, message_id: str) -> str:
    """SHA-256 over what makes two deliveries the same message: the digest of the
    client's bytes, the Message-ID, the envelope sender and the sorted recipients (not
    our trace line, not the time or the client address, which differ on a retry)."""
    digest = hashlib.sha256(content_sha256.encode("ascii"))
    for part in (message_id, envelope.mail_from, *sorted(a.lower() for a in envelope.rcpt_tos)):
        digest.update(b"\x00" + part.encode("utf-8", "surrogateescape"))
    return digest.hexdigest()


def message_row(
    envelope: ReceivedEnvelope, summary: HeaderSummary, **fields: Any
) -> InboundMessage:
    """The (unsaved) message row for ``envelope``; ``fields`` adds the storage fields."""
    return InboundMessage(
        queue_id=envelope.queue_id,
        envelope_from=envelope.mail_from,
        peer_ip=_peer_ip(envelope),
        peer_port=envelope.peer_port,
        helo=clean_text(envelope.helo, limit=255),
        tls=envelope.tls,
        tls_version=envelope.tls_version[:16],
        tls_cipher=envelope.tls_cipher[:100],
        auth_user=envelope.auth_user[:150],
        bare_newlines=envelope.bare_newlines,
        received_at=envelope.received_at,
        dispatched_at=envelope.received_at,
        message_id=summary.message_id,
        subject=summary.subject,
        from_header=summary.from_header,
        date_header=summary.date,
        **fields,
    )


def recipient_rows(envelope: ReceivedEnvelope, message: InboundMessage) -> list[InboundRecipient]:
    """The (unsaved) recipient rows of ``message``, one per accepted RCPT."""
    return [
        InboundRecipient(
            message=message,
            mailbox_id=recipient.mailbox_id,
            address=recipient.address,
            tag=clean_text(recipient.tag, limit=64),
        )
        for recipient in envelope.recipients
    ]


def sender_check_rows(envelope: ReceivedEnvelope, message: InboundMessage) -> list[SenderCheck]:
    """The (unsaved) sender-check row of ``message``, if the checks ran."""
    if envelope.sender_checks is None:
        return []
    # Reasons, the From domain and DKIM details quote what the sender wrote.
    return [SenderCheck(message=message, **storable(envelope.sender_checks))]


def _row(envelope: ReceivedEnvelope, summary: HeaderSummary, **fields: Any) -> InboundMessage:
    message = message_row(envelope, summary, **fields)
    message.save(force_insert=True)
    InboundRecipient.objects.bulk_create(recipient_rows(envelope, message))
    SenderCheck.objects.bulk_create(sender_check_rows(envelope, message))
    return message


def _store_duplicate(
    envelope: ReceivedEnvelope, summary: HeaderSummary, original: InboundMessage, key: str
) -> int:
    # The client resent a message we already hold (it missed our 250, or a relay
    # retried). It is acknowledged and recorded, shares the original's file, and is
    # never processed (hostile-inputs #95).
    with transaction.atomic(using=router.db_for_write(InboundMessage)):
        message = _row(
            envelope,
            summary,
            status=InboundMessage.Status.DUPLICATE,
            duplicate_of=original,
            dedupe_key=key,
            raw_file=original.raw_file,
            size=original.size,
        )
    logger.info("%s is a duplicate of %s", envelope.queue_id, original.queue_id)
    return message.pk


def originals(keys: Iterable[str]) -> dict[str, InboundMessage]:
    """Stored originals by dedupe key, for any of ``keys``: one query."""
    found = InboundMessage.objects.filter(dedupe_key__in=set(keys), duplicate_of__isnull=True)
    return {m.dedupe_key: m for m in found.only("pk", "queue_id", "raw_file", "size", "dedupe_key")}


def _original(key: str) -> InboundMessage | None:
    return (
        InboundMessage.objects.filter(dedupe_key=key, duplicate_of__isnull=True)
        .only("pk", "queue_id", "raw_file", "size")
        .first()
    )


def deliver(envelope: ReceivedEnvelope, content: bytes, *, trace: bytes = b"") -> int:
    """Store ``trace + content`` with ``envelope``; return the new ``InboundMessage`` pk.

    ``content`` is what the client sent; ``trace`` our ``Received:`` line. The
    in-memory form of :func:`deliver_spool`, for tests and for callers that hold the
    whole message anyway."""
    spool = Spool(None, memory_limit=len(content) + 1, head_limit=MAX_HEADER_BLOCK, prefix=trace)
    spool.add(content)
    spool.finish()
    return deliver_spool(envelope, spool)


def deliver_spool(envelope: ReceivedEnvelope, spool: Spool) -> int:
    """Store the finished ``spool`` with ``envelope``; return the new message's pk.

    Raises on any storage or database failure, after removing what it wrote; the
    caller answers ``451 4.3.0`` (``452 4.3.1`` when the disk is full) then.
    Processing is scheduled for after the commit and never runs if the transaction
    rolls back. A repeat of a stored message is recorded as its duplicate, without a
    second file and without processing. The caller discards the spool afterwards.
    """
    summary = summarize_headers(spool.head)
    key = dedupe_key(envelope, spool.digest, summary.message_id)
    using = router.db_for_write(InboundMessage)
    committed: list[int] = []
    size = len(spool.prefix) + spool.size
    with unit_of_work():
        original = _original(key)
        if original is not None:
            return _store_duplicate(envelope, summary, original, key)
        name = _write_raw(envelope, spool)
        try:
            with transaction.atomic(using=using):
                message = _row(envelope, summary, dedupe_key=key, raw_file=name, size=size)
                transaction.on_commit(lambda: committed.append(1), using=using)
                # robust: after the commit the message is ours and the reply is 250,
                # whatever scheduling its processing does (the sweeper catches up).
                transaction.on_commit(
                    partial(dispatch.message_committed, message.pk), using=using, robust=True
                )
        except IntegrityError:
            # An identical delivery committed first (the partial unique index).
            _storage.discard(name)
            original = _original(key)
            if original is None:
                raise
            return _store_duplicate(envelope, summary, original, key)
        except BaseException as error:
            if committed and isinstance(error, Exception):
                # Committed means stored: the client gets its 250 (RFC 5321 §4.2.5).
                logger.exception("error after storing %s", envelope.queue_id)
            else:
                if not committed:
                    _storage.discard(name)
                raise
    return message.pk
