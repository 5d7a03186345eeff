"""Export selected messages as one mbox file (mboxrd), streamed.

Format (what an mbox reader, and our import, expects):

- each message starts with ``From <envelope sender> <received time, asctime, UTC>``;
  the null sender ``<>`` (and a sender that cannot stand in that line: spaces,
  control characters) is written ``MAILER-DAEMON``;
- mbox is a Unix format: every CRLF of the stored message becomes LF; a lone CR or LF
  stays as stored. Nothing else changes;
- mboxrd quoting: a line that starts with ``From ``, after any number of ``>``, gets
  one more ``>`` (readers remove one), so a body line "From here" survives;
- a message that does not end in a line end gets one, and an empty line follows
  every message.

The envelope recipients have no place in mbox and are not exported. The response is
streamed: messages are read from storage one at a time, in chunks, and rows fetched
in small batches, so an export of thousands of messages holds only one chunk.
"""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Iterator, Sequence
from datetime import UTC, datetime
from typing import Any

from django.contrib import admin
from django.db.models import QuerySet
from django.http import HttpRequest, StreamingHttpResponse
from django.utils import timezone
from django.utils.translation import gettext_lazy as _

from django_inbound_smtp.models import InboundMessage

__all__ = ["export_mbox", "from_line", "mbox_response", "mbox_stream"]

logger = logging.getLogger(__name__)

CHUNK = 64 * 1024
ROWS = 100
_QUOTE = re.compile(rb"^(>*From )", re.MULTILINE)
_UNFIT_SENDER = re.compile(r"[\s\x00-\x1f\x7f]")


def from_line(message: InboundMessage) -> bytes:
    """The ``From `` separator line that opens ``message`` in the mbox."""
    sender = message.envelope_from
    if not sender or _UNFIT_SENDER.search(sender):
        sender = "MAILER-DAEMON"
    when = time.asctime(message.received_at.astimezone(UTC).timetuple())
    return f"From {sender} {when}\n".encode("utf-8", "surrogateescape")


def _unix_lines(block: bytes) -> bytes:
    # ``block`` holds whole lines only, so every CRLF and every line start is in it.
    return _QUOTE.sub(rb">\1", block.replace(b"\r\n", b"\n"))


def _entry(message: InboundMessage) -> Iterator[bytes]:
    with message.open_raw() as handle:
        yield from_line(message)
        carry = b""
        while chunk := handle.read(CHUNK):
            data = carry + chunk
            cut = data.rfind(b"\n") + 1
            carry = data[cut:]
            if cut:
                yield _unix_lines(data[:cut])
        last = _unix_lines(carry) if carry else b""
        yield last + (b"\n\n" if carry else b"\n")


def mbox_stream(pks: Sequence[int]) -> Iterator[bytes]:
    """The mbox of messages ``pks``, in that order, as a stream of byte chunks.

    A message whose raw file is gone is left out (logged)."""
    for start in range(0, len(pks), ROWS):
        batch = list(pks[start : start + ROWS])
        rows = InboundMessage.objects.filter(pk__in=batch).only(
            "pk", "queue_id", "envelope_from", "received_at", "raw_file"
        )
        by_pk = {row.pk: row for row in rows}
        for pk in batch:
            message = by_pk.get(pk)
            if message is None:
                continue  # deleted since it was selected
            try:
                yield from _entry(message)
            except FileNotFoundError:
                logger.warning("export: raw file of %s is missing", message.queue_id)


def mbox_response(pks: Sequence[int], *, now: datetime | None = None) -> StreamingHttpResponse:
    """A download of the mbox of ``pks`` (``application/mbox``, RFC 4155)."""
    stamp = (now or timezone.now()).strftime("%Y%m%d-%H%M%S")
    response = StreamingHttpResponse(mbox_stream(pks), content_type="application/mbox")
    response["Content-Disposition"] = f'attachment; filename="messages-{stamp}.mbox"'
    response["X-Content-Type-Options"] = "nosniff"
    return response


@admin.action(description=_("Export as mbox"), permissions=["view"])
def export_mbox(
    modeladmin: Any, request: HttpRequest, queryset: QuerySet[InboundMessage]
) -> StreamingHttpResponse:
    """Admin action: the selected messages as one mbox download, oldest first."""
    pks = list(queryset.order_by("received_at", "pk").values_list("pk", flat=True))
    return mbox_response(pks)
