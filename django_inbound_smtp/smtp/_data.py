"""Incremental decoder for the DATA stream: end-of-data detection and dot-unstuffing.

Pure (stdlib only). Fed arbitrary chunks, it gives the same output and finds the same
end of data whatever the chunking (property-tested). Only ``CRLF . CRLF`` ends the
data (RFC 5321 §4.1.1.4): a bare LF or bare CR never starts a line here, which is
what defeats SMTP smuggling (CVE-2023-51764 class, hostile-inputs §1.2).
"""

from __future__ import annotations

import re

__all__ = ["BareNewlines", "DotDecoder", "longest_line"]

_CRLF = b"\r\n"
_CRLF_DOT = b"\r\n."
_TERMINATOR = b"\r\n.\r\n"
_DOT = 0x2E
# Tails of a chunk that may continue into the terminator, longest first, with what
# must wait for the next chunk ("\r\n" itself is emitted: the next line starts clean).
_PARTIAL_TERMINATORS = (
    (b"\r\n.\r", b".\r"),
    (b"\r\n.", b"."),
    (b"\r\n", b""),
    (b"\r", b"\r"),
)


class DotDecoder:
    """Turns the bytes after ``354`` into message bytes.

    Call :meth:`feed` with each chunk read from the client; it returns the decoded
    bytes available so far. Once :attr:`done` is true, :attr:`trailing` holds the bytes
    that followed the terminating ``.CRLF`` (pipelined commands) and must be handed back
    to the command reader. ``size`` counts decoded bytes.
    """

    __slots__ = ("_at_line_start", "_pending", "done", "size", "trailing")

    def __init__(self) -> None:
        self._at_line_start = True  # the data begins at the start of a line
        self._pending = b""  # bytes we cannot decide on until more arrive
        self.done = False
        self.size = 0
        self.trailing = b""

    def feed(self, chunk: bytes) -> bytes:
        """Decode ``chunk``; return the message bytes it completes (possibly empty)."""
        if self.done:
            raise RuntimeError("DotDecoder fed after end of data")
        data = self._pending + chunk if self._pending else chunk
        self._pending = b""
        start = 0
        if self._at_line_start and data:
            if data[0] == _DOT:
                head = data[:3]
                if head == b".\r\n":
                    self.done = True
                    self.trailing = data[3:]
                    return b""
                if head in (b".", b".\r"):
                    self._pending = head  # may still become the terminator
                    return b""
                start = 1  # RFC 5321 §4.5.2: drop the transparency dot
            self._at_line_start = False
        end = data.find(_TERMINATOR, start)
        if end >= 0:
            region = data[start : end + 2]
            self.done = True
            self.trailing = data[end + len(_TERMINATOR) :]
        else:
            region = self._hold_back_tail(data, start)
        # Every CRLF-dot left in the region starts a line that is not the terminator,
        # so its dot is a transparency dot. One C-level replace per chunk, not a Python
        # step per line: a flood of dot-stuffed or empty lines costs no more than text.
        out = region.replace(_CRLF_DOT, _CRLF)
        self.size += len(out)
        return out

    def _hold_back_tail(self, data: bytes, start: int) -> bytes:
        """``data[start:]`` minus a tail that may be the beginning of the terminator."""
        for partial, keep in _PARTIAL_TERMINATORS:
            if data.endswith(partial, start):
                cut = len(data) - len(partial)
                if partial.startswith(_CRLF):
                    self._at_line_start = True
                    self._pending = keep
                    return data[start : cut + 2]
                self._pending = keep
                return data[start:cut]
        return data[start:]


_BARE_CR = re.compile(rb"\r(?!\n)")
_BARE_LF = re.compile(rb"(?<!\r)\n")


class BareNewlines:
    """The policy for CR and LF bytes that are not part of a CRLF in DATA (Postfix's
    ``smtpd_forbid_bare_newline``; hostile-inputs §3 A).

    ``keep`` stores them as received; ``normalize`` turns a bare LF into CRLF and a
    lone CR into a space, so every later reader splits lines the same way; ``reject``
    refuses the message. In every mode :attr:`seen` tells whether there were any.
    Works on :class:`DotDecoder` output, which never ends in the CR of a CRLF.
    """

    __slots__ = ("policy", "seen")

    def __init__(self, policy: str) -> None:
        self.policy = policy
        self.seen = False

    def apply(self, decoded: bytes) -> bytes:
        """Note bare newlines in ``decoded``; return it, normalized if the policy says so."""
        crlf = decoded.count(b"\r\n")
        if decoded.count(b"\r") == crlf and decoded.count(b"\n") == crlf:
            return decoded  # the common case costs three C-level counts
        self.seen = True
        if self.policy != "normalize":
            return decoded
        return _BARE_LF.sub(b"\r\n", _BARE_CR.sub(b" ", decoded))


def longest_line(data: bytes, carry: int) -> tuple[int, int]:
    """Length of the longest CRLF-terminated line in ``data``, counting ``carry`` octets of
    the line that the previous chunk left unfinished; and the new carry."""
    lines = data.split(b"\r\n")
    first = carry + len(lines[0])
    if len(lines) == 1:
        return first, first
    return max(first, *map(len, lines[1:-1]), 0), len(lines[-1])
