"""Incremental decoder for the DATA stream: end-of-data detection and dot-unstuffing.

Pure (stdlib only). Fed arbitrary chunks, it gives the same output and finds the same
end of data whatever the chunking (property-tested). Only ``CRLF . CRLF`` ends the
data (RFC 5321 §4.1.1.4): a bare LF or bare CR never starts a line here, which is
what defeats SMTP smuggling (CVE-2023-51764 class, hostile-inputs §1.2).
"""

from __future__ import annotations

__all__ = ["DotDecoder"]

_CRLF = b"\r\n"
_DOT = 0x2E


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
        out = bytearray()
        i = 0
        length = len(data)
        while i < length:
            if self._at_line_start and data[i] == _DOT:
                rest = data[i : i + 3]
                if rest == b".\r\n":
                    self.done = True
                    self.trailing = data[i + 3 :]
                    break
                if rest in (b".", b".\r"):
                    # Could still become the terminator: wait for the next chunk.
                    self._pending = rest
                    break
                i += 1  # RFC 5321 §4.5.2: drop the transparency dot
            self._at_line_start = False
            end = data.find(_CRLF, i)
            if end < 0:
                if data.endswith(b"\r"):
                    # A CR at the very end may be the first half of a CRLF.
                    out += data[i:-1]
                    self._pending = b"\r"
                else:
                    out += data[i:]
                break
            out += data[i : end + 2]
            i = end + 2
            self._at_line_start = True
        self.size += len(out)
        return bytes(out)
