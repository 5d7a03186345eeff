"""Full MIME parsing of a received message, under limits: bodies, attachments, defects.

Pure (stdlib ``email`` only), runs in a worker after the raw bytes are stored, never on
the event loop. The tree is built by the stdlib feed parser with ``compat32`` (raw
header strings, no structured header objects: ``policy.default`` parses some headers
in quadratic time, CPython gh-136063), under the limits of ``ParseLimits`` enforced
while it parses (see ``_bounded``); the bodies the walker reads bypass its lines and
are decoded as they are read (``_bodies``), with the stdlib's results. Header values
are then decoded here, each cut before decoding. Received mail is hostile input
(hostile-inputs §3 E): nothing in a ``ParsedMessage`` is trusted, and every text field
is cleaned of controls and bounded.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import datetime
from email.message import Message
from email.utils import getaddresses
from typing import BinaryIO

from django_inbound_smtp.parsing import _date, clean_text
from django_inbound_smtp.parsing._bounded import LimitBroken, Limiter, new_parser
from django_inbound_smtp.parsing._headers import HeaderText, message_charset, undeclared_defect
from django_inbound_smtp.parsing._walk import MAX_TEXT, Walker, decoded
from django_inbound_smtp.parsing.attachments import AttachmentPart

__all__ = ["ParseLimits", "ParsedMessage", "declared_charset", "parse_message"]

# Input is fed to the parser in pieces this big, from bytes or from a file alike.
_CHUNK = 64 * 1024
# A raw header value is kept up to this many characters (headers list, address lists
# and References are parsed from this much).
_RAW_VALUE = 16 * 1024
# Message-ID, In-Reply-To and each References entry: the size of the stored column.
_ID_LENGTH = 512
_MAX_ADDRESSES = 1000
_MAX_REFERENCES = 1000
_MESSAGE_ID = re.compile(r"<[^<>\s]+>")
# RFC 5322 §3.6 allows each of these at most once; when repeated, the first is used
# (hostile-inputs #83) and the repeat is reported as a defect.
_SINGULAR = frozenset(
    "from sender reply-to to cc bcc message-id in-reply-to references subject date".split()
)
# UndeclaredHeaderCharset defects, one per header name, at most this many.
_MAX_UNDECLARED = 20


@dataclass(frozen=True, slots=True)
class ParseLimits:
    """Bounds on the structure ``parse_message`` accepts; beyond them it reports an error."""

    max_depth: int = 100  # nesting of multipart and message/* (Postfix mime_nesting_limit)
    max_parts: int = 1000  # MIME parts in total, the message itself included (Haraka)
    # Bytes of one part's header lines, line ends included (Postfix header_size_limit).
    max_header_bytes: int = 102400


_DEFAULT_LIMITS = ParseLimits()


@dataclass
class ParsedMessage:
    """What ``parse_message`` read from one message. All text is cleaned and bounded.

    ``headers`` holds the top-level headers in order, repeats kept, as ``(name, raw,
    decoded)``: ``raw`` is the value as sent (folding kept, NUL removed, at most 16 KiB,
    8-bit bytes decoded as UTF-8, else in the message's declared charset, else
    windows-1252, with an ``UndeclaredHeaderCharset`` defect for those two); ``decoded``
    is RFC 2047-decoded, one line, at most 998 characters. Singular fields use the
    first header of the name. ``text`` and ``html`` are the first text/plain and
    text/html parts that are not attachments (at most 1 MiB of characters each,
    ``\\n`` line ends, NUL removed); every other leaf, and each ``message/*`` part
    as a whole, is in ``attachments`` in document order. ``defects`` describes, per
    part (numbered in document order from 1, the message itself), what was malformed
    or repaired. ``error`` is non-empty when a limit was broken or the structure could
    not be parsed: bodies and attachments are then empty, and the headers (and their
    defects) are those read before the failure.
    """

    headers: list[tuple[str, str, str]] = field(default_factory=list)
    subject: str = ""
    from_: list[tuple[str, str]] = field(default_factory=list)
    to: list[tuple[str, str]] = field(default_factory=list)
    cc: list[tuple[str, str]] = field(default_factory=list)
    reply_to: list[tuple[str, str]] = field(default_factory=list)
    date: datetime | None = None
    message_id: str = ""
    in_reply_to: str = ""
    references: list[str] = field(default_factory=list)
    text: str = ""
    html: str = ""
    attachments: list[AttachmentPart] = field(default_factory=list)
    defects: list[str] = field(default_factory=list)
    error: str = ""

    @property
    def cid_map(self) -> dict[str, AttachmentPart]:
        """Parts with a Content-ID by that id (without ``<>``); the first one wins."""
        found: dict[str, AttachmentPart] = {}
        for part in self.attachments:
            if part.content_id:
                found.setdefault(part.content_id, part)
        return found


def parse_message(
    source: bytes | BinaryIO, *, limits: ParseLimits = _DEFAULT_LIMITS
) -> ParsedMessage:
    """Parse ``source`` (the message bytes, or a binary file read to its end) fully.

    Synchronous and CPU-bound: call it off the event loop. Never raises, whatever the
    input (a failure to read ``source`` included): what went wrong is in ``.error``
    and ``.defects``. Time and memory are linear in the input size, with factors
    bounded by ``limits``; parsing stops at the first limit broken. Memory is mostly
    the decoded attachments: a text body keeps at most 4 MiB, the input is read in
    64 KiB pieces (parts inside an attached message are still held as text, and
    serialized whole).
    """
    result = ParsedMessage()
    limiter = Limiter(
        max_depth=limits.max_depth,
        max_parts=limits.max_parts,
        max_header_bytes=limits.max_header_bytes,
        # A body is decoded up to 4 * MAX_TEXT bytes; one more says it was longer.
        text_cap=4 * MAX_TEXT + 1,
    )
    root: Message | None = None
    try:
        root = _feed(source, limiter)
    except LimitBroken as broken:
        result.error = str(broken)
    except Exception as exc:  # RecursionError, MemoryError, a failing read, a bug
        result.error = f"the message could not be parsed ({type(exc).__name__})"
    try:
        # After a failure, the headers read so far; the root exists once any byte came.
        top = root if root is not None else limiter.root
        text = HeaderText(lambda: None if top is None else message_charset(top))
        if top is not None:
            _read_headers(top, result, text)
        if root is not None:
            walker = Walker(limiter.slots, text)
            walker.walk(root)
            result.text, result.html = walker.text, walker.html
            result.attachments = walker.attachments
            result.defects.extend(walker.defects)
    except Exception as exc:
        result.error = f"the message could not be read ({type(exc).__name__})"
        result.text, result.html, result.attachments = "", "", []
    return result


def _feed(source: bytes | BinaryIO, limiter: Limiter) -> Message:
    parser = new_parser(limiter)
    limiter.start()
    # Chunks for bytes too: both inputs give the same result, and the reader's buffer
    # holds at most a chunk and the line it ends in.
    if isinstance(source, bytes | bytearray | memoryview):
        view = memoryview(source)
        for offset in range(0, len(view), _CHUNK):
            parser.feed(view[offset : offset + _CHUNK])
    else:
        while chunk := source.read(_CHUNK):
            parser.feed(chunk)
    return parser.close()


def declared_charset(headers: Message, raw: bytes) -> str | None:
    """The charset of the message starting with ``raw`` (see ``message_charset``), whose
    header block is ``headers``: its Content-Type's, else (a multipart) the first text
    part's within ``raw``, parsed under the default limits."""
    charset = headers.get_content_charset()
    if charset or headers.get_content_maintype() != "multipart":
        return str(charset) if charset else None
    limiter = Limiter(
        max_depth=_DEFAULT_LIMITS.max_depth,
        max_parts=_DEFAULT_LIMITS.max_parts,
        max_header_bytes=_DEFAULT_LIMITS.max_header_bytes,
        text_cap=0,  # only the parts' headers are wanted
    )
    root: Message | None
    try:
        root = _feed(raw, limiter)
    except Exception:  # a limit broken in what was read: the parts read so far
        root = limiter.root
    return None if root is None else message_charset(root)


def _read_headers(root: Message, result: ParsedMessage, text: HeaderText) -> None:
    first: dict[str, str] = {}
    seen: dict[str, tuple[str, int]] = {}
    undeclared: dict[str, str] = {}
    for name, value in root.raw_items():
        key, shown = name.strip().lower(), clean_text(name, limit=100)
        spelled, count = seen.get(key, (shown, 0))  # the first spelling names repeats
        seen[key] = (spelled, count + 1)
        raw, used = text.decode(str(value), limit=_RAW_VALUE)
        raw = raw.replace("\x00", "")
        if used and key not in undeclared and len(undeclared) < _MAX_UNDECLARED:
            undeclared[key] = undeclared_defect(spelled, used)
        first.setdefault(key, raw)
        result.headers.append((shown, raw, decoded(raw)))
    result.defects.extend(f"part 1: {defect}" for defect in undeclared.values())
    result.subject = decoded(first.get("subject", ""))
    result.from_, result.to, result.cc, result.reply_to = (
        _addresses(first.get(key, ""), key, result.defects)
        for key in ("from", "to", "cc", "reply-to")
    )
    try:
        result.date = _date(first.get("date", ""))
    except Exception:  # _date catches what parsedate raises today; a date is optional
        result.date = None
    result.message_id = clean_text(first.get("message-id", ""), limit=_ID_LENGTH)
    result.in_reply_to = clean_text(first.get("in-reply-to", ""), limit=_ID_LENGTH)
    found = _MESSAGE_ID.findall(first.get("references", ""))[:_MAX_REFERENCES]
    result.references = [clean_text(mid, limit=_ID_LENGTH) for mid in found]
    for key, (shown, count) in seen.items():
        if key in _SINGULAR and count > 1:
            result.defects.append(f"part 1: {count} {shown} headers, the first is used")


def _addresses(raw: str, key: str, defects: list[str]) -> list[tuple[str, str]]:
    pairs: list[tuple[str, str]] = []
    try:
        found = getaddresses([raw])
    except Exception as exc:  # RecursionError on ~1,000 nested "(" (comments recurse)
        defects.append(f"part 1: {key} header not parsed ({type(exc).__name__})")
        return pairs
    for name, address in found:
        pair = (decoded(name), clean_text(address))
        if pair != ("", ""):
            pairs.append(pair)
        if len(pairs) == _MAX_ADDRESSES:
            break
    return pairs
