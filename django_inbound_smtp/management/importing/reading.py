"""Messages out of standard input, mbox files and Maildir folders, streamed.

Every message comes out as CRLF line endings, the form it had on the wire: a pipe
from Postfix or Exim, an mbox file and a Maildir file all hold LF-terminated lines
(the MTA turned the CRLF it received into LF), and a message stored from them must be
byte for byte what an SMTP delivery of it would have stored, so that both give the
same dedupe key and parse alike. A CRLF already there stays; a lone CR stays.
"""

from __future__ import annotations

import itertools
import os
import re
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from email.utils import getaddresses
from typing import BinaryIO

__all__ = [
    "MaildirSource",
    "MboxSource",
    "Message",
    "crlf",
    "from_line_sender",
    "header_recipients",
    "read_stream",
]

_CHUNK = 64 * 1024
# mboxrd: a body line "From ..." is written ">From ...", ">From" as ">>From", and so
# on; reading removes one ">" (https://www.loc.gov/preservation/digital/formats/fdd/fdd000385.shtml).
_QUOTED_FROM = re.compile(rb"^>+From ")
# The ctime() date at the end of a From_ line: "Tue Oct 10 12:00:00 2023".
_FROM_DATE = re.compile(rb"(\w{3} \w{3} [ \d]\d \d\d:\d\d:\d\d \d{4})\s*$")


@dataclass
class Message:
    """One message to import: its bytes (CRLF) in chunks, and what the source says."""

    chunks: Iterable[bytes]
    #: Where it came from, for messages to the user ("mbox message 3", a file name).
    label: str
    #: The envelope sender the source gives (mbox From_ line), if any.
    mail_from: str | None = None
    #: When it was delivered, as the source says (From_ line date, Maildir file time).
    received_at: datetime | None = None


def crlf(chunks: Iterable[bytes]) -> Iterator[bytes]:
    """``chunks`` with every LF not preceded by CR made CRLF (across chunk borders)."""
    held = b""
    for chunk in chunks:
        data = held + chunk
        held = b""
        if data.endswith(b"\r"):
            held, data = b"\r", data[:-1]  # its LF may start the next chunk
        if data:
            yield data.replace(b"\r\n", b"\n").replace(b"\n", b"\r\n")
    if held:
        yield held


def read_stream(stream: BinaryIO) -> Iterator[bytes]:
    """The chunks of ``stream`` (a pipe), CRLF, without a leading mbox From_ line
    (Exim's pipe transport and Postfix's ``F`` flag write one; it is no header)."""
    first = stream.readline(_CHUNK)
    head = [] if first.startswith(b"From ") else [first]
    yield from crlf(itertools.chain(head, iter(lambda: stream.read(_CHUNK), b"")))


def from_line_sender(line: bytes) -> str | None:
    """The envelope sender of an mbox From_ line ("From a@b.c Tue ..."); "" for bounces."""
    parts = line[5:].split(None, 1)
    if not parts:
        return None
    sender = parts[0].decode("utf-8", "surrogateescape").strip("<>")
    return "" if sender.upper() == "MAILER-DAEMON" else sender


def _from_line_date(line: bytes) -> datetime | None:
    match = _FROM_DATE.search(line)
    if match is None:
        return None
    try:
        parsed = time.strptime(match.group(1).decode("ascii"), "%a %b %d %H:%M:%S %Y")
    except ValueError:
        return None
    return datetime(*parsed[:6], tzinfo=UTC)


class MboxSource:
    """The messages of an mbox file, one at a time: each one's lines are read as its
    chunks are consumed, so memory holds a line, not a message or the file.

    A line starting with ``From `` starts a message (as Python's ``mailbox`` and mutt
    read it); ``>From `` quoting is undone the mboxrd way."""

    def __init__(self, path: str) -> None:
        self.path = path
        self.total = os.path.getsize(path)
        self.done = 0
        self.unit = "bytes"

    def __iter__(self) -> Iterator[Message]:
        with open(self.path, "rb") as handle:
            pieces = _Pieces(handle)
            line = pieces.next_from_line()  # text before the first From_ line is no message
            number = 0
            while line:
                number += 1
                message = Message(
                    chunks=crlf(pieces.message()),
                    label=f"message {number}",
                    mail_from=from_line_sender(line),
                    received_at=_from_line_date(line),
                )
                yield message
                for _ in message.chunks:  # not read to the end by the caller: skip the rest
                    pass
                line = pieces.from_line
                self.done = handle.tell() - len(line)


class _Pieces:
    """An mbox file read in lines of at most ``_CHUNK`` bytes (a longer line comes in
    pieces, so memory stays flat whatever the file holds); a From_ line or a quoted
    ``>From`` is recognised only at the start of a line."""

    def __init__(self, handle: BinaryIO) -> None:
        self.handle = handle
        self.at_line_start = True
        #: The From_ line that ended the last message (b"" at the end of the file).
        self.from_line = b""

    def _next(self) -> tuple[bytes, bool]:
        piece = self.handle.readline(_CHUNK)
        started = self.at_line_start
        self.at_line_start = piece.endswith(b"\n")
        return piece, started

    def next_from_line(self) -> bytes:
        while True:
            piece, started = self._next()
            if not piece or (started and piece.startswith(b"From ")):
                return piece

    def message(self) -> Iterator[bytes]:
        """The pieces up to the next From_ line, mboxrd-unquoted, without the blank line
        mbox writers put before the next From_ line (it belongs to the file format)."""
        blank = b""  # a blank line held back: the last one is the separator's
        while True:
            piece, started = self._next()
            if not piece or (started and piece.startswith(b"From ")):
                self.from_line = piece
                return
            if blank:
                yield blank
                blank = b""
            if started and piece in (b"\n", b"\r\n"):
                blank = piece
            elif started and _QUOTED_FROM.match(piece):
                yield piece[1:]
            else:
                yield piece


class MaildirSource:
    """The messages in ``new/`` and ``cur/`` of a Maildir folder (not ``tmp/``, where
    deliveries are still being written), in name order, one file read at a time."""

    def __init__(self, path: str) -> None:
        self.names: list[str] = []
        for sub in ("new", "cur"):
            folder = os.path.join(path, sub)
            if not os.path.isdir(folder):
                raise FileNotFoundError(f"{path} is not a Maildir folder: it has no {sub}/")
            listed = (name for name in os.listdir(folder) if not name.startswith("."))
            self.names += sorted(os.path.join(sub, name) for name in listed)
        self.path = path
        self.total = len(self.names)
        self.done = 0
        self.unit = "messages"

    def __iter__(self) -> Iterator[Message]:
        for name in self.names:
            full = os.path.join(self.path, name)
            yield Message(
                chunks=crlf(_file_chunks(full)),
                label=name,
                received_at=datetime.fromtimestamp(os.stat(full).st_mtime, tz=UTC),
            )
            self.done += 1


def _file_chunks(path: str) -> Iterator[bytes]:
    with open(path, "rb") as handle:
        yield from iter(lambda: handle.read(_CHUNK), b"")


def header_recipients(head: bytes) -> list[str]:
    """Recipients a stored copy names: the topmost ``Delivered-To``, else the topmost
    ``X-Original-To``, else every ``To`` and ``Cc`` address."""
    fields = _header_fields(head)
    for name in ("delivered-to", "x-original-to"):
        values = [value for key, value in fields if key == name]
        if values and values[0].strip():
            return [values[0].strip().strip("<>")]
    values = [value for key, value in fields if key in ("to", "cc")]
    return [address for _name, address in getaddresses(values) if address]


def _header_fields(head: bytes) -> list[tuple[str, str]]:
    text = head.decode("utf-8", "surrogateescape")
    block = re.split(r"\r?\n\r?\n", text, maxsplit=1)[0]
    fields: list[tuple[str, str]] = []
    for line in re.split(r"\r?\n", block):
        if line[:1] in (" ", "\t") and fields:
            name, value = fields[-1]
            fields[-1] = (name, value + " " + line.strip())
        elif ":" in line:
            name, value = line.split(":", 1)
            fields.append((name.strip().lower(), value.strip()))
    return fields
