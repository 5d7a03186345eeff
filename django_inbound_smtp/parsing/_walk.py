"""Walking a parsed MIME tree into bodies, attachments and defects.

Private to ``parsing.mime``. The tree comes from a parse under ``ParseLimits``, so its
size and depth are bounded; the walk is iterative anyway (an explicit stack), so no
depth a caller allows can overflow the Python stack here.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from email.message import Message
from typing import NamedTuple

from django_inbound_smtp.parsing import MAX_RAW_VALUE, _decode, clean_text
from django_inbound_smtp.parsing._bodies import BodySlots
from django_inbound_smtp.parsing._bounded import serialize_body
from django_inbound_smtp.parsing._charsets import decode_text
from django_inbound_smtp.parsing._headers import HeaderText, undeclared_defect
from django_inbound_smtp.parsing.attachments import AttachmentPart, sanitize_filename

__all__ = ["MAX_TEXT", "Walker", "decoded"]

# Each body is kept up to this many characters (and at most four times as many bytes
# are decoded to get them): bodies are display data, the raw message is the record.
MAX_TEXT = 1024 * 1024
_MAX_DEFECTS = 100
# RFC 6838 §4.2 type and subtype names; anything else is stored as an octet stream.
_MEDIA_TYPE = re.compile(r"[a-z0-9][a-z0-9!#$&^_.+-]{0,126}/[a-z0-9][a-z0-9!#$&^_.+-]{0,126}")
_ANGLED = re.compile(r"<([^<>]*)>")
_LINE_END = re.compile(r"\r\n?")
_SURROGATE = re.compile("[\ud800-\udfff]")
_MESSAGE_TYPES = frozenset(("message/rfc822", "message/global"))


def decoded(value: str, *, limit: int = 998) -> str:
    """``value`` RFC 2047-decoded, cleaned to one line of at most ``limit`` characters.

    Python's text codecs include unicode_escape and utf-7, which decode to lone
    surrogates ("=?unicode_escape?q?=5Cud800?="): those become U+FFFD.
    """
    return clean_text(_SURROGATE.sub("\ufffd", _decode(value[:MAX_RAW_VALUE])), limit=limit)


def _content_type(part: Message) -> str:
    value = part.get_content_type()
    return value if _MEDIA_TYPE.fullmatch(value) else "application/octet-stream"


def _content_id(part: Message, text: HeaderText) -> str:
    value, _used = text.decode(str(part.get("content-id", "")), limit=MAX_RAW_VALUE)
    angled = _ANGLED.search(value)
    return clean_text(angled.group(1) if angled else value, limit=512)


def _filename(part: Message, headers: HeaderText) -> tuple[str | None, str]:
    """``(part.get_filename(), used)``, 8-bit bytes in the headers it reads decoded by
    ``headers`` first (the stdlib would make them U+FFFD); ``used`` as it says."""
    raw: dict[str, str] = {}
    for key, value in part.raw_items():
        raw.setdefault(key.lower(), str(value))
    wanted = {k: raw[k] for k in ("content-disposition", "content-type") if k in raw}
    if all(value.isascii() for value in wanted.values()):
        return part.get_filename(), ""
    copy, used = Message(), ""
    for key, value in wanted.items():
        text, found = headers.decode(value, limit=MAX_RAW_VALUE)
        copy[key], used = text, used or found
    return copy.get_filename(), used


class _Visit(NamedTuple):
    part: Message
    number: int  # in document order, from 1 (the message itself)
    related: bool  # inside a multipart/related


class Walker:
    """Collects ``text``, ``html``, ``attachments`` and ``defects`` from one tree."""

    def __init__(self, slots: BodySlots | None = None, headers: HeaderText | None = None) -> None:
        self.text = ""
        self.html = ""
        self.attachments: list[AttachmentPart] = []
        self.defects: list[str] = []
        # The parse that made the tree decided the bodies of the leaves it read (and
        # kept only the start of those); this walk decides for the others.
        self._slots = slots or BodySlots()
        # Decodes 8-bit bytes in the parts' header values (filenames, Content-IDs).
        self._headers = headers or HeaderText(lambda: None)
        self._dropped = 0

    def walk(self, root: Message) -> None:
        """Visit every part in document order; parts are numbered from 1 (the root)."""
        # (part, inside multipart/related, inside a message/* attachment)
        stack: list[tuple[Message, bool, bool]] = [(root, False, False)]
        number = 0
        while stack:
            part, related, quoted = stack.pop()
            number += 1
            # is_multipart(), not get_payload(): for a leaf with 8-bit bytes, the latter
            # decodes with the charset parameter, and raises TypeError on an RFC 2231
            # one (charset*=utf-8''utf-8) and UnicodeError on charset=undefined.
            if part.is_multipart():
                maintype = part.get_content_maintype()
                children = [c for c in part.get_payload() if isinstance(c, Message)]
                inner = related or part.get_content_type() == "multipart/related"
                quoted_inner = quoted or maintype == "message"
                stack.extend((child, inner, quoted_inner) for child in reversed(children))
                if maintype == "message" and not quoted:
                    self._guarded(self._message, _Visit(part, number, related))
            elif not quoted:
                self._guarded(self._leaf, _Visit(part, number, related))
            # The parts of an attached message are only numbered and checked: the
            # message is one attachment, its bodies are not this message's.
            for defect in part.defects:
                self._note(number, type(defect).__name__)
        if self._dropped:
            self.defects.append(f"and {self._dropped} more defects")

    def _note(self, number: int, what: str) -> None:
        if len(self.defects) < _MAX_DEFECTS:
            self.defects.append(f"part {number}: {what}")
        else:
            self._dropped += 1

    def _guarded(self, read: Callable[[_Visit], None], visit: _Visit) -> None:
        try:
            read(visit)
        except Exception as exc:  # one unreadable part does not lose the others
            self._note(visit.number, f"part not read ({type(exc).__name__})")

    def _message(self, visit: _Visit) -> None:
        try:
            payload = serialize_body(visit.part)
        except Exception as exc:  # RecursionError past ~200 levels, a broken tree
            self._note(visit.number, f"attached message not serialized ({type(exc).__name__})")
            payload = b""
        content_type = _content_type(visit.part)
        default = "message.eml" if content_type in _MESSAGE_TYPES else "attachment"
        self._attach(visit, content_type, payload, default=default)

    def _leaf(self, visit: _Visit) -> None:
        part = visit.part
        data = part.get_payload(decode=True)
        payload = data if isinstance(data, bytes) else b""
        content_type = _content_type(part)
        if getattr(part, "classified", False):
            slot = getattr(part, "body_slot", None)
        else:
            slot = self._slots.claim(part)
        if slot:
            setattr(self, slot, self._body(part, payload, visit.number))
            return
        self._attach(visit, content_type, payload, default="attachment")

    def _body(self, part: Message, payload: bytes, number: int) -> str:
        if len(payload) > 4 * MAX_TEXT:
            payload = payload[: 4 * MAX_TEXT]
            self._note(number, f"body cut to {4 * MAX_TEXT} bytes")
        text, note = decode_text(payload, part.get_content_charset())
        if note:
            self._note(number, note)
        if len(text) > MAX_TEXT:
            text = text[:MAX_TEXT]
            self._note(number, f"body cut to {MAX_TEXT} characters")
        # One line-end convention, no NUL (no text column accepts it) and no lone
        # surrogate (charset=unicode_escape or utf-7 can make them; UTF-8 cannot hold them).
        return _SURROGATE.sub("\ufffd", _LINE_END.sub("\n", text).replace("\x00", ""))

    def _attach(self, visit: _Visit, content_type: str, payload: bytes, *, default: str) -> None:
        part = visit.part
        raw_name, used = _filename(part, self._headers)
        if used:
            self._note(visit.number, undeclared_defect("filename", used))
        # A name may be RFC 2231-encoded (decoded by get_filename) or, against the
        # RFCs but as common mail clients write it, an RFC 2047 encoded word.
        name = ""
        if raw_name:
            name = sanitize_filename(decoded(raw_name, limit=MAX_RAW_VALUE))
        content_id = _content_id(part, self._headers)
        # Clients mark cid images both inline and attachment; in a multipart/related
        # part with a Content-ID, the image belongs in the body either way.
        inline = part.get_content_disposition() == "inline" or (visit.related and bool(content_id))
        self.attachments.append(
            AttachmentPart(
                filename=name or default,
                content_type=content_type,
                content_id=content_id,
                inline=inline,
                payload=payload,
            )
        )
