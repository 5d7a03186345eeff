"""The parse step: headers, bodies and attachments of a stored message into the database.

Runs in the processing step, after the ``250`` and before ``message_received`` (so
receivers always find the parsed fields and attachment rows), in a worker thread or
a Celery worker, never on the event loop. Idempotent: a message is parsed once; a
retry after a crash finds ``parsed_at`` set and skips. A message that breaks a
parsing limit or cannot be parsed keeps its raw bytes and gets ``parse_error``; its
processing goes on, with whatever could be read.
"""

from __future__ import annotations

import logging
import secrets
import threading
from contextlib import nullcontext
from datetime import UTC, datetime
from typing import Any, BinaryIO, cast

from django.db import router, transaction
from django.utils import timezone

from django_inbound_smtp import _storage
from django_inbound_smtp.conf import get_settings
from django_inbound_smtp.models import Attachment, InboundMessage
from django_inbound_smtp.parsing import storable
from django_inbound_smtp.parsing.mime import ParsedMessage, ParseLimits, parse_message

__all__ = ["LARGE_MESSAGE", "attachment_file_name", "extract"]

logger = logging.getLogger(__name__)

# Parsing holds about one copy of the largest attachment (bodies stream into bytes
# sinks), but some shapes still cost more (an attached message/rfc822: about three
# times its size; uuencode more). Messages above this size are parsed one at a time
# per process, so inline processing in smtpd does not multiply that by
# PROCESSING_CONCURRENCY.
LARGE_MESSAGE = 1024 * 1024
_one_large_parse = threading.Lock()


def attachment_file_name() -> str:
    """Storage name for an attachment: ``<prefix>/attachments/YYYY/MM/DD/<random>``.

    Random, never derived from the sender's filename (hostile-inputs §3 E)."""
    day = datetime.now(UTC).strftime("%Y/%m/%d")
    prefix = get_settings().STORAGE_PREFIX
    name = f"attachments/{day}/{secrets.token_hex(16)}"
    return f"{prefix}/{name}" if prefix else name


def _limits() -> ParseLimits:
    settings = get_settings()
    return ParseLimits(
        max_depth=settings.PARSE_MAX_DEPTH,
        max_parts=settings.PARSE_MAX_PARTS,
        max_header_bytes=settings.PARSE_MAX_HEADER_BYTES,
    )


def _fields(parsed: ParsedMessage) -> dict[str, Any]:
    return {
        "parse_error": storable(parsed.error),
        "defects": storable(parsed.defects),
        "headers": storable(parsed.headers),
        "addresses": storable(
            {
                "from": parsed.from_,
                "to": parsed.to,
                "cc": parsed.cc,
                "reply_to": parsed.reply_to,
            }
        ),
        "in_reply_to": storable(parsed.in_reply_to),
        "references": storable(parsed.references),
        "text": storable(parsed.text),
        "html": storable(parsed.html),
    }


def extract(message: InboundMessage) -> bool:
    """Parse ``message`` and store what it holds; ``False`` if it was parsed already.

    Synchronous. Raises on storage or database failure (nothing is kept then: the
    attachment files written so far are removed), so processing is retried."""
    if message.parsed_at is not None:
        return False
    with _one_large_parse if message.size > LARGE_MESSAGE else nullcontext():
        with message.open_raw() as handle:
            parsed = parse_message(cast(BinaryIO, handle), limits=_limits())
        return _store(message, parsed)


def _store(message: InboundMessage, parsed: ParsedMessage) -> bool:
    written: list[str] = []
    try:
        rows = []
        for position, part in enumerate(parsed.attachments):
            name = _storage.save_durably(attachment_file_name(), content=part.payload)
            written.append(name)
            rows.append(
                Attachment(
                    message=message,
                    position=position,
                    filename=storable(part.filename)[:255],
                    file=name,
                    content_type=storable(part.content_type)[:255],
                    size=part.size,
                    sha256=part.sha256,
                    content_id=storable(part.content_id)[:255],
                    inline=part.inline,
                )
            )
        fields = _fields(parsed)
        with transaction.atomic(using=router.db_for_write(InboundMessage)):
            now = timezone.now()
            first = InboundMessage.objects.filter(pk=message.pk, parsed_at__isnull=True).update(
                parsed_at=now, **fields
            )
            if first:
                Attachment.objects.bulk_create(rows)
    except BaseException:
        for name in written:
            _storage.discard(name)
        raise
    if not first:
        for name in written:  # another execution parsed it meanwhile
            _storage.discard(name)
        return False
    for key, value in fields.items():
        setattr(message, key, value)
    message.parsed_at = now
    if parsed.error:
        logger.warning(
            "%s kept raw, not fully parsed: %s",
            message.queue_id,
            parsed.error,
            extra={"queue_id": message.queue_id},
        )
    return True
