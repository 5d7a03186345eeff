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
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, BinaryIO, cast

from django.db import router, transaction
from django.utils import timezone

from django_inbound_smtp.conf import get_settings
from django_inbound_smtp.lifecycle.classify import bounce_rows, classify_message
from django_inbound_smtp.models import Attachment, BounceRecipient, InboundMessage
from django_inbound_smtp.parsing import storable
from django_inbound_smtp.parsing.mime import ParsedMessage, ParseLimits, parse_message
from django_inbound_smtp.parsing.quoted import reply_text
from django_inbound_smtp.parsing.quoted_html import html_text, reply_html
from django_inbound_smtp.store import files

__all__ = ["LARGE_MESSAGE", "Extraction", "attachment_file_name", "extract", "extract_many"]

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
        **_reply(parsed),
    }


def _reply(parsed: ParsedMessage) -> dict[str, str]:
    """The new text of a reply (``reply_text``, ``reply_html``), computed once here.

    From the text body when there is one, else from the HTML body's text. Linear in
    the bodies (each at most 1 MiB of characters). A failure here is a bug of ours:
    it leaves the two fields empty, never the message unprocessed."""
    try:
        new_html = reply_html(parsed.html, subject=parsed.subject) if parsed.html else ""
        if parsed.text:
            new_text = reply_text(parsed.text, subject=parsed.subject)
        else:
            new_text = html_text(new_html)
    except Exception:
        logger.exception("the reply text of a message could not be extracted")
        return {"reply_text": "", "reply_html": ""}
    return {"reply_text": storable(new_text), "reply_html": storable(new_html)}


def _fields_and_rows(
    message: InboundMessage, parsed: ParsedMessage, written: list[str]
) -> tuple[dict[str, Any], list[Attachment | BounceRecipient]]:
    fields = _fields(parsed)
    # The kind, and a bounce's recipient rows, from what was just parsed.
    kind = classify_message(message, parsed)
    fields.update(kind=kind.kind, kind_reason=storable(kind.reason)[:200])
    return fields, _attachment_rows(message, parsed, written) + bounce_rows(message, kind)


def _parse(message: InboundMessage) -> ParsedMessage:
    with _one_large_parse if message.size > LARGE_MESSAGE else nullcontext():
        with message.open_raw() as handle:
            return parse_message(cast(BinaryIO, handle), limits=_limits())


def _attachment_rows(
    message: InboundMessage, parsed: ParsedMessage, written: list[str]
) -> list[Attachment | BounceRecipient]:
    # Files first, durably: a row never points at a file that is not on disk.
    rows: list[Attachment | BounceRecipient] = []
    for position, part in enumerate(parsed.attachments):
        name = files.save_durably(attachment_file_name(), content=part.payload)
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
    return rows


def extract(message: InboundMessage) -> bool:
    """Parse ``message`` and store what it holds; ``False`` if it was parsed already.

    Synchronous. Raises on storage or database failure (nothing is kept then: the
    attachment files written so far are removed), so processing is retried."""
    result = extract_many([message])
    if message.pk in result.failures:
        raise result.failures[message.pk]
    return message.pk in result.parsed


@dataclass
class Extraction:
    """What :func:`extract_many` did."""

    #: Messages parsed and stored by this call.
    parsed: set[int] = field(default_factory=set)
    #: Messages that could not be parsed or stored, with the error.
    failures: dict[int, Exception] = field(default_factory=dict)


def extract_many(messages: list[InboundMessage]) -> Extraction:
    """Parse every message of ``messages`` not parsed yet, and store the results of
    all of them in one transaction; the messages whose raw file could not be read or
    whose attachments could not be written get a failure (nothing of theirs is
    kept). The others get their parsed fields set in place. Raises on a database
    failure (nothing is kept then)."""
    outcome = Extraction()
    parsed: list[tuple[InboundMessage, dict[str, Any], list[Attachment | BounceRecipient]]] = []
    written: list[str] = []
    for message in messages:
        if message.parsed_at is not None:
            continue
        mine: list[str] = []
        try:
            result = _parse(message)
            parsed.append((message, *_fields_and_rows(message, result, mine)))
            written.extend(mine)
        except Exception as error:
            for name in mine:
                files.discard(name)
            outcome.failures[message.pk] = error
            continue
        if result.error:
            logger.warning(
                "%s kept raw, not fully parsed: %s",
                message.queue_id,
                result.error,
                extra={"queue_id": message.queue_id},
            )
    if not parsed:
        return outcome
    try:
        first = _write(parsed)
    except BaseException:
        for name in written:
            files.discard(name)
        raise
    for message, _parsed_fields, rows in parsed:
        if message.pk not in first:
            _discard_files(rows)  # another execution parsed it meanwhile
            continue
        outcome.parsed.add(message.pk)
    return outcome


def _discard_files(rows: list[Attachment | BounceRecipient]) -> None:
    for row in rows:
        if isinstance(row, Attachment):
            files.discard(str(row.file))


def _write(
    parsed: list[tuple[InboundMessage, dict[str, Any], list[Attachment | BounceRecipient]]],
) -> set[int]:
    now = timezone.now()
    first: set[int] = set()
    with transaction.atomic(using=router.db_for_write(InboundMessage)):
        for message, fields, _rows in parsed:
            # Only a row nobody parsed meanwhile (a lease taken over): attachments once.
            # One plain UPDATE a message: far cheaper to build than bulk_update's CASE
            # per field, and the condition is the guard (no SELECT ... FOR UPDATE).
            if InboundMessage.objects.filter(pk=message.pk, parsed_at__isnull=True).update(
                parsed_at=now, **fields
            ):
                first.add(message.pk)
                for key, value in fields.items():
                    setattr(message, key, value)
                message.parsed_at = now
        rows = [row for message, _f, rows in parsed if message.pk in first for row in rows]
        attachments = [row for row in rows if isinstance(row, Attachment)]
        if attachments:
            Attachment.objects.bulk_create(attachments)
        bounced = [row for row in rows if isinstance(row, BounceRecipient)]
        if bounced:
            BounceRecipient.objects.bulk_create(bounced)
    return first
