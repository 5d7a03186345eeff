"""Leaf bodies decoded as they are read, in bytes, with the stdlib's exact results.

Private to ``parsing.mime``. The stdlib parser keeps a body as one ``str`` per line
(25 MiB of short lines cost over 100 MiB) and decodes it from one joined copy more.
``_lines.Lines`` hands the body of each leaf part to one of these sinks instead, in
pieces of bytes; what ``get_payload(decode=True)`` then returns (bytes and defects)
is what the stdlib's ``Message.get_payload`` returns for the same body:

* base64: ``email._encoded_words.decode_b`` of the body without its line ends;
* quoted-printable: ``binascii.a2b_qp`` (what ``quopri.decodestring`` calls);
* any other transfer encoding: the bytes as they came.

uuencode has no sink (the stdlib decodes it; it stays on the line-by-line path).
A text part that becomes the message's ``text`` or ``html`` only needs its start: its
sink keeps ``cap`` decoded bytes and drops the rest (see ``BodySlots``).
"""

from __future__ import annotations

import binascii
import io
import re
from email import errors
from email.message import Message

__all__ = ["BodySink", "BodySlots", "new_sink"]

# Decoded pieces are written out once this much input is pending.
_PIECE = 64 * 1024
_BASE64_ALPHABET = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"
_NOT_BASE64 = re.compile(b"[^" + re.escape(_BASE64_ALPHABET) + b"]")
_SLOTS = {"text/plain": "text", "text/html": "html"}

Defects = tuple[type[errors.MessageDefect], ...]


class BodySlots:
    """Which leaves are the message's text and html bodies: the first unnamed,
    non-attachment text/plain and text/html leaves, in document order.

    Shared by the reader (which decides while parsing, so that a body's sink keeps
    only its start) and the walker (which reads the decision back).
    """

    def __init__(self) -> None:
        self.found: set[str] = set()

    def claim(self, part: Message) -> str | None:
        """The slot ``part`` fills (``"text"``, ``"html"``) or ``None``; may raise."""
        slot = _SLOTS.get(part.get_content_type())
        named = part.get_filename() is not None
        disposition = part.get_content_disposition()
        if slot and slot not in self.found and not named and disposition != "attachment":
            self.found.add(slot)
            return slot
        return None


class _Output:
    """Decoded bytes, kept up to ``cap`` when there is one."""

    def __init__(self, cap: int | None) -> None:
        self._buffer = io.BytesIO()  # getvalue() returns its bytes without a copy
        self._room = cap

    def write(self, data: bytes | bytearray) -> None:
        if self._room is None:
            self._buffer.write(data)
        elif self._room > 0:
            kept = data[: self._room]
            self._buffer.write(kept)
            self._room -= len(kept)

    @property
    def empty(self) -> bool:
        return self._buffer.tell() == 0

    def value(self) -> bytes:
        value = self._buffer.getvalue()
        self._buffer = io.BytesIO()
        return value


class BodySink:
    """The bytes of one body as they are read; ``finish`` decodes what remains.

    ``finish(last)`` takes the body's last bytes (its final line end, unless the
    parser removed it as belonging to the boundary) and returns what
    ``get_payload(decode=True)`` returns, with the defect types it reports.
    """

    def __init__(self, cap: int | None) -> None:
        self._out = _Output(cap)

    def write(self, data: bytes | bytearray) -> None:
        self._out.write(data)

    def finish(self, last: bytes) -> tuple[bytes, Defects]:
        self._out.write(last)
        return self._out.value(), ()


class _QuotedPrintable(BodySink):
    """``binascii.a2b_qp`` by pieces, each ending after a line feed.

    a2b_qp reads ``=`` with at most two characters after it, or a soft line break
    running to the next line feed: nothing it reads spans the end of a piece.
    Within one long line, a piece may also end where neither of the two bytes before
    its end is ``=``, as long as no ``=`` followed by a carriage return was seen
    (a soft break that may run on to a later line feed).
    """

    def __init__(self, cap: int | None) -> None:
        super().__init__(cap)
        self._pending = bytearray()
        self._soft_cr = False  # "=\r" seen in the pending bytes

    def write(self, data: bytes | bytearray) -> None:
        pending = self._pending
        # One byte of overlap: "=" may end the previous write, "\r" start this one.
        start = max(len(pending) - 1, 0)
        pending += data
        self._soft_cr = self._soft_cr or pending.find(b"=\r", start) >= 0
        if len(pending) < _PIECE:
            return
        cut = pending.rfind(b"\n") + 1
        if not cut and not self._soft_cr:
            cut = len(pending) - 2
            while cut > 0 and b"=" in pending[cut - 2 : cut]:
                cut -= 1
        if cut > 0:
            self._out.write(binascii.a2b_qp(pending[:cut]))
            del pending[:cut]
            self._soft_cr = pending.find(b"=\r") >= 0

    def finish(self, last: bytes) -> tuple[bytes, Defects]:
        self._pending += last
        self._out.write(binascii.a2b_qp(self._pending))
        self._pending = bytearray()
        return self._out.value(), ()


class _Base64(BodySink):
    """``decode_b`` (the stdlib's decoding, with its defects) of the body, by pieces.

    While the input holds only base64 letters, whole groups of four are decoded as
    they come (strict and lenient decoding agree on them), all but the last. From the
    first other byte on (padding included), the rest, after that last group, is kept
    as it came and decoded at the end, each of decode_b's attempts applied to it
    alone: after whole groups, binascii is in the state it starts in, and the rest
    starts with letters as the whole does, so its decoding, and whether it fails, is
    the same as within the whole. Only the last attempt's answer (the undecodable input itself)
    needs the groups already decoded: letters in whole groups encode back to
    themselves, so they are encoded again.
    """

    def __init__(self) -> None:
        super().__init__(None)
        self._carry = b""  # the letters after the last whole group but one
        self._rest: bytearray | None = None  # from the first non-letter on

    def write(self, data: bytes | bytearray) -> None:
        data = data.translate(None, b"\r\n")  # decode_b joins the body's lines
        if self._rest is not None:
            self._rest += data
            return
        if data.translate(None, _BASE64_ALPHABET):
            match = _NOT_BASE64.search(data)
            assert match is not None
            self._decode(data[: match.start()])
            self._rest = bytearray(self._carry)
            self._rest += data[match.start() :]
            self._carry = b""
        else:
            self._decode(data)

    def _decode(self, letters: bytes | bytearray) -> None:
        letters = self._carry + letters
        # The last whole group is kept back too: the rest then never starts the input
        # where the whole would not (strict decoding refuses "=" first, not after
        # letters).
        done = max(len(letters) - len(letters) % 4 - 4, 0)
        self._out.write(binascii.a2b_base64(letters[:done]))
        self._carry = letters[done:]

    def finish(self, last: bytes) -> tuple[bytes, Defects]:
        rest = self._rest if self._rest is not None else bytearray(self._carry)
        rest += last.translate(None, b"\r\n")
        self._rest, self._carry = None, b""
        tail, defects = _decode_b(rest)
        if tail is None:  # not decodable: the stdlib returns the input, line ends removed
            encoded = binascii.b2a_base64(self._out.value(), newline=False) + rest
            return encoded, (errors.InvalidBase64LengthDefect,)
        if self._out.empty:  # all of it was kept as it came: no copy of what it decodes to
            return tail, defects
        del rest  # (what was kept can be as large as the body)
        self._out.write(tail)
        return self._out.value(), defects


def _decode_b(encoded: bytearray) -> tuple[bytes | None, Defects]:
    """``_encoded_words.decode_b``, with ``None`` for its last resort; ``encoded`` may
    get padding appended."""
    size = len(encoded)
    missing = len(encoded) % 4
    encoded += b"==="[: 4 - missing] if missing else b""
    try:
        padding: Defects = (errors.InvalidBase64PaddingDefect,) if missing else ()
        return binascii.a2b_base64(encoded, strict_mode=True), padding
    except binascii.Error:
        pass
    del encoded[size:]
    try:
        return binascii.a2b_base64(encoded), (errors.InvalidBase64CharactersDefect,)
    except binascii.Error:
        pass
    encoded += b"=="
    try:
        return binascii.a2b_base64(encoded), (
            errors.InvalidBase64CharactersDefect,
            errors.InvalidBase64PaddingDefect,
        )
    except binascii.Error:
        del encoded[size:]
        return None, ()


def new_sink(transfer_encoding: str, cap: int | None) -> BodySink | None:
    """A sink for a body in ``transfer_encoding`` (lowercased, as the stdlib compares
    it), keeping ``cap`` decoded bytes if given; ``None`` for uuencode."""
    if transfer_encoding == "base64":
        # Kept whole even for a text body: at most 3/4 of the input, and decode_b's
        # last resort returns the input itself.
        return _Base64()
    if transfer_encoding == "quoted-printable":
        return _QuotedPrintable(cap)
    if transfer_encoding in ("x-uuencode", "uuencode", "uue", "x-uue"):
        return None
    return BodySink(cap)
