"""The only write path: store one accepted message durably, then schedule processing.

Synchronous. The SMTP layer calls :func:`deliver` through its bridge, in the ORM
thread, and answers ``250`` only after it returns. Order (hostile-inputs §4.3):

1. the raw bytes are written to storage and made durable (fsync of file and folder
   for local files; an acknowledged write for remote storages);
2. one transaction creates the message row and its recipient rows, and registers the
   processing step with ``on_commit``;
3. the primary key is returned.

If step 2 fails the file is deleted (best effort); nothing half-stored is visible.
"""

from __future__ import annotations

import hashlib
import logging
import os
from functools import partial
from typing import Any

from django.core.files.base import ContentFile
from django.core.files.storage import Storage, storages
from django.db import IntegrityError, router, transaction

from django_inbound_smtp import dispatch
from django_inbound_smtp._db import unit_of_work
from django_inbound_smtp.conf import get_settings
from django_inbound_smtp.envelope import ReceivedEnvelope
from django_inbound_smtp.models import InboundMessage, InboundRecipient, SenderCheck
from django_inbound_smtp.parsing import HeaderSummary, clean_text, summarize_headers

__all__ = ["dedupe_key", "deliver", "raw_file_name"]

logger = logging.getLogger(__name__)


def raw_file_name(envelope: ReceivedEnvelope) -> str:
    """Storage name of the raw message: ``<prefix>/YYYY/MM/DD/<queue id>.eml``.

    Built from our own queue id only, never from anything the client sent.
    """
    day = envelope.received_at.strftime("%Y/%m/%d")
    prefix = get_settings().STORAGE_PREFIX
    return f"{prefix}/{day}/{envelope.queue_id}.eml" if prefix else f"{day}/{envelope.queue_id}.eml"


def _fsync_path(path: str) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


# Folders whose own entry in their parent is known to be on disk (fsynced once).
_durable_folders: set[str] = set()


def _make_durable(storage: Storage, name: str) -> None:
    # Django's FileSystemStorage writes without fsync; a power cut after our 250 could
    # lose the file. Flush the file, then its folder (so the new entry survives), and
    # once per process each new folder up to the storage root (a new day's folder).
    try:
        path = storage.path(name)
        root = os.path.realpath(storage.path(""))
    except NotImplementedError:
        return  # remote storage: its acknowledged write is the durability point
    _fsync_path(path)
    folder = os.path.dirname(path)
    _fsync_path(folder)
    while folder not in _durable_folders and os.path.realpath(folder) != root:
        parent = os.path.dirname(folder)
        _fsync_path(parent)
        _durable_folders.add(folder)
        folder = parent


def _write_raw(envelope: ReceivedEnvelope, raw: bytes) -> tuple[Storage, str]:
    storage = storages[get_settings().STORAGE]
    name = storage.save(raw_file_name(envelope), ContentFile(raw))
    try:
        _make_durable(storage, name)
    except BaseException:
        _discard(storage, name)
        raise
    return storage, name


def _discard(storage: Storage, name: str) -> None:
    try:
        storage.delete(name)
    except Exception:
        # Harmless: no row points at it. Logged so an operator can remove it.
        logger.exception("could not delete orphaned raw file %s", name)


def _peer_ip(envelope: ReceivedEnvelope) -> str | None:
    host = envelope.peer_host
    if not host:
        return None
    # IPv6 peers may carry a zone id ("fe80::1%eth0"), which the column does not take.
    return host.split("%", 1)[0]


def dedupe_key(envelope: ReceivedEnvelope, content: bytes, message_id: str) -> str:
    """SHA-256 over what makes two deliveries the same message: the client's bytes, the
    Message-ID, the envelope sender and the sorted recipients (not our trace line, not
    the time or the client address, which differ on a retry)."""
    digest = hashlib.sha256(content)
    for part in (message_id, envelope.mail_from, *sorted(a.lower() for a in envelope.rcpt_tos)):
        digest.update(b"\x00" + part.encode("utf-8", "surrogateescape"))
    return digest.hexdigest()


def _row(envelope: ReceivedEnvelope, summary: HeaderSummary, **fields: Any) -> InboundMessage:
    message = InboundMessage.objects.create(
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
    InboundRecipient.objects.bulk_create(
        InboundRecipient(
            message=message,
            mailbox_id=recipient.mailbox_id,
            address=recipient.address,
            tag=clean_text(recipient.tag, limit=64),
        )
        for recipient in envelope.recipients
    )
    if envelope.sender_checks is not None:
        SenderCheck.objects.create(message=message, **envelope.sender_checks)
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


def _original(key: str) -> InboundMessage | None:
    return (
        InboundMessage.objects.filter(dedupe_key=key, duplicate_of__isnull=True)
        .only("pk", "queue_id", "raw_file", "size")
        .first()
    )


def deliver(envelope: ReceivedEnvelope, content: bytes, *, trace: bytes = b"") -> int:
    """Store ``trace + content`` with ``envelope``; return the new ``InboundMessage`` pk.

    ``content`` is what the client sent; ``trace`` our ``Received:`` line. Raises on any
    storage or database failure, after removing what it wrote; the caller answers
    ``451 4.3.0`` then. Processing is scheduled for after the commit and never runs if
    the transaction rolls back. A repeat of a stored message is recorded as its
    duplicate, without a second file and without processing.
    """
    raw = trace + content
    summary = summarize_headers(content)
    key = dedupe_key(envelope, content, summary.message_id)
    using = router.db_for_write(InboundMessage)
    committed: list[int] = []
    with unit_of_work():
        original = _original(key)
        if original is not None:
            return _store_duplicate(envelope, summary, original, key)
        storage, name = _write_raw(envelope, raw)
        try:
            with transaction.atomic(using=using):
                message = _row(envelope, summary, dedupe_key=key, raw_file=name, size=len(raw))
                transaction.on_commit(lambda: committed.append(1), using=using)
                # robust: after the commit the message is ours and the reply is 250,
                # whatever scheduling its processing does (the sweeper catches up).
                transaction.on_commit(
                    partial(dispatch.message_committed, message.pk), using=using, robust=True
                )
        except IntegrityError:
            # An identical delivery committed first (the partial unique index).
            _discard(storage, name)
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
                    _discard(storage, name)
                raise
    return message.pk
