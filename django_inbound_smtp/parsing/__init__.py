"""Reading stored messages: the cheap header summary taken before ``250``, and the
stdlib ``EmailMessage`` view used afterwards.

Pure (stdlib ``email`` only), so it can be fuzzed and reused without Django. Every
value that leaves this module for a text column is cleaned of control characters and
bounded in length: received mail is hostile input (hostile-inputs §3 E).
"""

from __future__ import annotations

import email.policy
import re
import unicodedata
from dataclasses import dataclass
from datetime import UTC, datetime
from email.header import decode_header, make_header
from email.message import EmailMessage, Message
from email.parser import BytesHeaderParser, BytesParser
from email.policy import compat32
from email.utils import parsedate_to_datetime
from typing import Any

__all__ = [
    "HeaderSummary",
    "clean_text",
    "storable",
    "header_block",
    "parse",
    "summarize_headers",
    "text_body",
]

# Only the header block is read before the 250. Postfix caps it at 100 KiB
# (header_size_limit); we read up to 256 KiB and ignore the rest here.
MAX_HEADER_BLOCK = 256 * 1024
# Stored summary fields are display data, not the source of truth (the raw bytes are).
MAX_FIELD_LENGTH = 998
# A summarized header value is cut to this many characters before it is decoded.
MAX_RAW_VALUE = 4096
_EARLIEST = datetime(1970, 1, 1, tzinfo=UTC)
_LATEST = datetime(2100, 1, 1, tzinfo=UTC)
_SURROGATES = re.compile("[\udc80-\udcff]")
# An RFC 2047 encoded word (no "?" inside its parts: one scan, linear in the value).
_ENCODED_WORD = re.compile(r"=\?[^?]*\?[qQbB]\?[^?]*\?=")

# C0/C1 controls (NUL, CR, LF included) and bidi overrides (U+202A-202E, U+2066-2069),
# which can make "invoice\u202Efdp.exe" display as "invoiceexe.pdf"; and lone
# surrogates, which no database column can store ("=?unicode_escape?q?=5Cud800?=").
_UNSAFE = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f\u202a-\u202e\u2066-\u2069\ud800-\udfff]")
# Line and paragraph separators (U+2028/2029) break lines too: one line means none.
_WHITESPACE_RUN = re.compile("[\t\n \u2028\u2029]+")


def clean_text(value: str, *, limit: int = MAX_FIELD_LENGTH) -> str:
    """One line of display-safe text: controls removed, white space folded, NFC, bounded."""
    # Controls out first, then white space folded, so nothing leaves a double space;
    # cut, then strip again, so the result is a fixed point (cleaning twice = once).
    value = _UNSAFE.sub("", value)
    value = _WHITESPACE_RUN.sub(" ", unicodedata.normalize("NFC", value))
    return value.strip()[:limit].rstrip()


# PostgreSQL text and jsonb cannot hold NUL, and no database takes lone surrogates.
_NOT_STORABLE = re.compile("[\x00\ud800-\udfff]")


def storable(value: Any) -> Any:
    """``value`` with NUL and lone surrogates replaced by U+FFFD, in strings and in the
    lists, tuples (as lists) and dicts holding them; for any text or JSON column."""
    if isinstance(value, str):
        return _NOT_STORABLE.sub("\ufffd", value)
    if isinstance(value, list | tuple):
        return [storable(item) for item in value]
    if isinstance(value, dict):
        return {storable(key): storable(item) for key, item in value.items()}
    return value


def header_block(raw: bytes, *, limit: int = MAX_HEADER_BLOCK) -> bytes:
    """The bytes of the header section (up to the first empty line), at most ``limit``."""
    head = raw[:limit]
    end = head.find(b"\r\n\r\n")
    return head if end < 0 else head[: end + 2]


@dataclass(frozen=True, slots=True)
class HeaderSummary:
    """The few header fields stored in columns for listing and search."""

    message_id: str = ""
    subject: str = ""
    from_header: str = ""
    date: datetime | None = None
    #: ``UndeclaredHeaderCharset`` defects of Subject and From (as the parse words them).
    defects: tuple[str, ...] = ()


def _first_raw(headers: Message, name: str) -> str:
    # First value wins when a singular header is repeated (hostile-inputs #83). Raw
    # items: no structured parsing (the stdlib's is quadratic on some inputs, CPython
    # gh-136063, and raises on others), and cut before any decoding (one character
    # over: the decoding then knows it was cut).
    wanted = name.lower()
    for key, value in headers.raw_items():
        if key.lower() == wanted:
            return str(value)[: MAX_RAW_VALUE + 1]
    return ""


def _decode_words(value: str) -> str:
    """RFC 2047-decode ``value`` (``value`` if that fails)."""
    try:
        return str(make_header(decode_header(value)))
    except Exception:  # unknown charset, broken encoded word: keep the text as sent
        return value


def _decode(value: str) -> str:
    if _SURROGATES.search(value):
        # Callers decode 8-bit bytes first (``_headers``); should one not, UTF-8 with
        # U+FFFD rather than a failure.
        value = value.encode("ascii", "surrogateescape").decode("utf-8", "replace")
    if value.isascii():
        return _decode_words(value)
    # Text from 8-bit bytes around encoded words, which decode_header cannot mix (it
    # reads unencoded runs as ASCII): each word alone; white space between two
    # adjacent words goes (RFC 2047 §6.2).
    pieces: list[str] = []
    end, after_word = 0, False
    for word in _ENCODED_WORD.finditer(value):
        between = value[end : word.start()]
        if not (after_word and not between.strip()):
            pieces.append(between)
        pieces.append(_decode_words(word.group()))
        end, after_word = word.end(), True
    pieces.append(value[end:])
    return "".join(pieces)


def _date(value: str) -> datetime | None:
    try:
        parsed = parsedate_to_datetime(value[:200])
        if parsed.tzinfo is None:
            parsed = parsed.replace(tzinfo=UTC)  # "-0000": time zone unknown (RFC 5322)
        parsed = parsed.astimezone(UTC)
    except (TypeError, ValueError, IndexError, OverflowError):
        return None
    # A sender can write any year; outside this range it cannot be stored everywhere
    # (SQLite overflows, PostgreSQL stores what it cannot read back) and means nothing.
    return parsed if _EARLIEST <= parsed <= _LATEST else None


def summarize_headers(raw: bytes) -> HeaderSummary:
    """Extract Message-ID, Subject, From and Date from the header block of ``raw``.

    Never raises: a field that cannot be read is left empty. Cost is bounded by
    ``MAX_HEADER_BLOCK`` and ``MAX_RAW_VALUE``, whatever the input. 8-bit bytes in
    Subject and From are decoded as the full parse decodes them (see ``_headers``):
    only when they are not UTF-8 is the message's charset looked for, in the start of
    ``raw`` (the whole message, or at least its first ``MAX_HEADER_BLOCK`` bytes).
    """
    # Imported here: these modules use this one's helpers.
    from django_inbound_smtp.parsing._headers import HeaderText, undeclared_defect
    from django_inbound_smtp.parsing.mime import declared_charset

    try:
        headers = BytesHeaderParser(policy=compat32).parsebytes(header_block(raw))
        text = HeaderText(lambda: declared_charset(headers, raw))
        defects: list[str] = []

        def decoded(name: str) -> str:
            value, used = text.decode(_first_raw(headers, name), limit=MAX_RAW_VALUE)
            if used:
                defects.append("part 1: " + undeclared_defect(name, used))
            return clean_text(_decode(value))

        return HeaderSummary(
            message_id=clean_text(_first_raw(headers, "Message-ID"), limit=512),
            subject=decoded("Subject"),
            from_header=decoded("From"),
            date=_date(_first_raw(headers, "Date")),
            defects=tuple(defects),
        )
    except Exception:  # a summary is a convenience; storing the message is not optional
        return HeaderSummary()


def parse(raw: bytes) -> EmailMessage:
    """The whole message as a stdlib ``EmailMessage`` (``policy.default``).

    Runs in a worker thread, never on the event loop. Parsing limits for hostile
    structure (nesting, part count) belong to the caller until the storage issue adds
    them here.
    """
    message = BytesParser(policy=email.policy.default).parsebytes(raw)
    assert isinstance(message, EmailMessage)
    return message


def text_body(message: EmailMessage, *, limit: int = 1024 * 1024) -> str:
    """The plain-text body (or ``""``), decoded with replacement characters on bad bytes."""
    try:
        part = message.get_body(preferencelist=("plain",))
    except (Exception, RecursionError):  # a broken or hostile MIME tree
        return ""
    if part is None:
        return ""
    payload = part.get_payload(decode=True)
    if not isinstance(payload, bytes):
        return ""
    charset = part.get_content_charset() or "utf-8"
    try:
        text = payload[:limit].decode(charset, errors="replace")
    except LookupError:
        text = payload[:limit].decode("utf-8", errors="replace")
    return text
