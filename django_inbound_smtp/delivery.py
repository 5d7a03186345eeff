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

import logging
import os
from functools import partial

from django.core.files.base import ContentFile
from django.core.files.storage import Storage, storages
from django.db import transaction

from django_inbound_smtp import dispatch
from django_inbound_smtp._db import unit_of_work
from django_inbound_smtp.conf import get_settings
from django_inbound_smtp.envelope import ReceivedEnvelope
from django_inbound_smtp.models import InboundMessage, InboundRecipient
from django_inbound_smtp.parsing import clean_text, summarize_headers

__all__ = ["deliver", "raw_file_name"]

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


def _make_durable(storage: Storage, name: str) -> None:
    # Django's FileSystemStorage writes without fsync; a power cut after our 250 could
    # lose the file. Flush the file, then its folder (so the new entry survives too).
    try:
        path = storage.path(name)
    except NotImplementedError:
        return  # remote storage: its acknowledged write is the durability point
    _fsync_path(path)
    _fsync_path(os.path.dirname(path))


def _write_raw(envelope: ReceivedEnvelope, raw: bytes) -> tuple[Storage, str]:
    storage = storages[get_settings().STORAGE]
    name = storage.save(raw_file_name(envelope), ContentFile(raw))
    _make_durable(storage, name)
    return storage, name


def _discard(storage: Storage, name: str) -> None:
    try:
        storage.delete(name)
    except Exception:
        # The orphan is harmless (no row points at it); the sweeper will remove it.
        logger.exception("could not delete orphaned raw file %s", name)


def _peer_ip(envelope: ReceivedEnvelope) -> str | None:
    host = envelope.peer_host
    if not host:
        return None
    # IPv6 peers may carry a zone id ("fe80::1%eth0"), which the column does not take.
    return host.split("%", 1)[0]


def deliver(envelope: ReceivedEnvelope, raw: bytes) -> int:
    """Store ``raw`` with ``envelope``; return the new ``InboundMessage`` primary key.

    Raises on any storage or database failure, after removing what it wrote; the
    caller answers ``451 4.3.0`` then. Processing (the ``message_received`` signal) is
    scheduled for after the commit and never runs if the transaction rolls back.
    """
    summary = summarize_headers(raw)
    with unit_of_work():
        storage, name = _write_raw(envelope, raw)
        try:
            with transaction.atomic():
                message = InboundMessage.objects.create(
                    queue_id=envelope.queue_id,
                    envelope_from=envelope.mail_from,
                    peer_ip=_peer_ip(envelope),
                    peer_port=envelope.peer_port,
                    helo=clean_text(envelope.helo, limit=255),
                    tls=envelope.tls,
                    size=len(raw),
                    received_at=envelope.received_at,
                    raw_file=name,
                    message_id=summary.message_id,
                    subject=summary.subject,
                    from_header=summary.from_header,
                    date_header=summary.date,
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
                transaction.on_commit(partial(dispatch.message_committed, message.pk))
        except BaseException:
            _discard(storage, name)
            raise
    return message.pk
