"""The stdlib feed parser, run under limits: part count, nesting depth, header size.

Private to ``parsing.mime``. The limits are enforced *while* the stdlib parses, through
the three hooks it offers, so a hostile structure costs no more than the limits allow:

* the message factory (called for every part, before its headers are read) counts
  parts and resets the header-byte count;
* ``Message.attach`` (called by the parser to hang each part on its parent) counts
  nesting: message/* levels count like multipart levels, as in Postfix;
* ``Policy.header_source_parse`` (called with the exact source lines of each header)
  counts header bytes.

Each raises ``LimitBroken``, which unwinds the parser: with nesting stopped at the
limit, the stdlib never recurses deep enough for a ``RecursionError`` (it did at about
1,000 levels on CPython 3.11), and no boundary pre-scan is needed. Measured on 3.11.7:
5,000 levels and 50,000 parts each stop in milliseconds.

Two costs the limits alone do not bound, both in the parser's line reader, which
``Lines`` replaces. It tried every open boundary on every line, so a body nested 100
deep cost 100 regex calls a line (19 MB of short lines: 11 s instead of 0.6 s flat):
``Lines`` checks first, in one set lookup, whether a line could end a part at all.
And the parser keeps a body as one ``str`` a line, then joins and decodes it: 25 MiB
of short lines cost 126 MiB and (traced) 6 s. ``Lines`` sends the body of each leaf
part the walker reads to a ``_bodies`` sink instead, in bytes, decoded as it comes:
a text body keeps only what is decoded, an attachment only its decoded bytes.
"""

from __future__ import annotations

import hashlib
import io
import re
from collections import Counter, deque
from collections.abc import Callable
from email import feedparser, utils
from email.feedparser import BytesFeedParser
from email.generator import BytesGenerator
from email.message import Message
from email.policy import Compat32
from typing import Any

from django_inbound_smtp.parsing._bodies import BodySink, BodySlots, Defects, new_sink

__all__ = [
    "BoundedPart",
    "LimitBroken",
    "Limiter",
    "Lines",
    "new_parser",
    "serialize_body",
]

# The parser's own names, not in typeshed: the blank-line check it pushes inside
# message/delivery-status, the test its header loop applies, its "wait for input".
_BLANK_LINE = getattr(feedparser, "NLCRE").match  # noqa: B009
_HEADER_LINE = getattr(feedparser, "headerRE").match  # noqa: B009
_NEED_MORE: object = getattr(feedparser, "NeedMoreData")  # noqa: B009
_LINE_END = re.compile(rb"[\r\n]")
_CR, _LF = ord("\r"), ord("\n")
_EOL_BYTES = b"\r\n"
# The generator's line-end pattern, and the slices a long text is written in.
_GENERATOR_LINE_END = re.compile(r"\r\n|\r|\n")
_SLICE = 1024 * 1024
# Lines are split from this much input at a time (str.splitlines also splits at
# these ASCII controls; bytes above 0x7f decode to surrogates, which it does not).
_WINDOW = 8 * 1024
_OTHER_LINE_ENDS = b"\x0b\x0c\x1c\x1d\x1e"
# Up to this many separators, one pattern finds separator lines; past it, every line
# starting with "--" is looked up.
_FEW = 32


# One parameter: anything but ";" and quotes, or a quoted string (backslash escapes,
# closing quote optional at the end). Matched greedily with nothing after it, so the
# engine never backtracks: linear.
_PARAM = re.compile(r'(?:[^;"]+|"(?:[^"\\]+|\\.)*"?)*', re.DOTALL)
# Real headers carry a handful of parameters, a long RFC 2231 filename a few dozen
# continuations; the rest of a hostile header is not read (the stdlib's RFC 2231
# decoding costs about a microsecond a parameter, on each parameter lookup).
_MAX_PARAMS = 100


class LimitBroken(Exception):
    """A parse limit was broken; ``str(exc)`` says which, in words for an operator."""


class BoundedPart(Message):
    """A ``Message`` that counts its nesting, splits parameters in linear time, and
    decodes a body read into a ``_bodies`` sink (see ``Lines``)."""

    depth = 0
    limiter: Limiter | None = None
    quoted = False  # inside a message/* part: the walker does not read its leaves
    classified = False  # body_slot was decided while parsing (see Lines._start_body)
    body_slot: str | None = None  # "text" or "html" for the message's bodies
    sink: BodySink | None = None  # where the body went, instead of the payload
    _decoded: tuple[bytes, Defects] | None = None

    def get_boundary(self, failobj: Any = None) -> Any:
        boundary = super().get_boundary(failobj)
        if isinstance(boundary, str) and self.limiter is not None:
            # The parser asks for the boundary of a multipart before it looks for it.
            self.limiter.separators.add("--" + boundary)
        return boundary

    def attach(self, payload: Message | str) -> None:
        if isinstance(payload, BoundedPart) and self.limiter is not None:
            payload.depth = self.depth + 1
            payload.quoted = self.quoted or self.get_content_maintype() == "message"
            if payload.depth > self.limiter.max_depth:
                raise LimitBroken(f"nesting deeper than {self.limiter.max_depth} levels")
        super().attach(payload)

    def get_payload(self, i: Any = None, decode: bool = False) -> Any:  # noqa: FBT001, FBT002
        """As ``Message.get_payload``; a body read into a sink is only read decoded."""
        if self.sink is None and self._decoded is None:
            return super().get_payload(i, decode)  # type: ignore[call-overload]
        if i is not None or not decode:
            raise TypeError("this body was decoded as it was read: use decode=True")
        if self._decoded is None:
            assert self.sink is not None
            # What the parser left as the payload: the body's last line end, or "".
            last = str(super().get_payload()).encode("ascii", "surrogateescape")
            self._decoded, self.sink = self.sink.finish(last), None
        value, defects = self._decoded
        for defect in defects:  # reported at each call, as the stdlib does
            self.policy.handle_defect(self, defect())
        return value

    # Every parameter read (get_param, get_params, get_boundary, get_filename,
    # get_content_charset, and the parser's own boundary lookup) goes through this
    # undocumented hook. The stdlib splitter re-slices and re-counts quotes from the
    # start of the value at each ";": 100 KiB of ';"' took 5 s on 3.11.7, inside the
    # parser itself. Ours is one regex pass over at most _MAX_PARAMS parameters;
    # RFC 2231 decoding stays the stdlib's.
    def _get_params_preserve(self, failobj: object, header: str) -> object:
        value = self.get(header)
        if value is None:
            return failobj
        try:
            return utils.decode_params(split_params(str(value)))
        except Exception:  # e.g. "name*99999…*": int() refuses over 4,300 digits
            return []


def split_params(value: str) -> list[tuple[str, str]]:
    """``value`` split at ``;`` outside quoted strings, as ``(name, raw value)`` pairs.

    Same result as the stdlib's splitter (names lowercased, values still quoted, the
    first item is the bare type) where no backslash is involved; a backslash escapes
    only inside quotes, as RFC 2045 says. At most ``_MAX_PARAMS`` items are read.
    """
    params: list[tuple[str, str]] = []
    position = 0
    while len(params) < _MAX_PARAMS:
        match = _PARAM.match(value, position)
        assert match is not None  # the pattern matches the empty string
        item, position = match.group(), match.end()
        name, equals, raw = item.partition("=")
        params.append((name.strip().lower(), raw.strip()) if equals else (item.strip(), ""))
        if position >= len(value):
            break
        position += 1  # the ";"
    return params


class Lines:
    """The parser's line reader (in place of the stdlib's ``BufferedSubFile``).

    Input is kept as bytes, and split into lines (decoded as the stdlib decodes them)
    as the parser asks for them. Three shortcuts, each leaving the parse exactly as
    the stdlib's reader would:

    * End-of-part checks. The parser pushes two kinds: a boundary line (a separator
      asked for through ``get_boundary``, then ``--``, blanks, a line end) and, inside
      message/delivery-status, a blank line. A line that matches none of the
      separators ever asked for, and is not blank while a blank-line check is open,
      cannot end a part: the stdlib's checks run only on the other lines.
    * Bodies into sinks. The body of a leaf part that the walker reads (not inside a
      message/* part; a multipart without a boundary counts as a leaf) does not go to
      the parser line by line: it goes to a ``_bodies`` sink, in bytes, up to the
      first line that ends the part (only a separator line can: a blank-line check is
      only open inside message/delivery-status, whose parts are read line by line).
      The parser is given the body's last line end alone, so that it removes it, or
      not, as it would from the whole body; ``BoundedPart.get_payload`` then decodes
      the body from the sink.
    * Bodies in blocks. The parser only appends the lines of a body and joins them:
      the body of a leaf inside a message/* part (serialized whole by the walker), or
      in uuencode (no sink), is given to it in blocks of lines, each ending before a
      line that may end the part.

    The parser's state is followed through the message factory (``reading_headers``:
    the header lines of that part come next) and its header loop (which ends at the
    first line that is not a header line, or at the end of the part); the next read,
    for a leaf part, is of its body. Lines split ahead (``_split``) go back into the
    input when a body starts (``_unsplit``).
    """

    def __init__(self, limiter: Limiter) -> None:
        self._buffer = bytearray()
        self._pos = 0  # start of the unread input in _buffer
        self._scanned = 0  # bytes from _pos known to hold no line end
        self._lines: deque[str] = deque()  # lines pushed back by the parser
        self._eofstack: list[Callable[[str], object]] = []
        self._closed = False
        self._limiter = limiter
        self._separators = limiter.separators
        self._open: Counter[bool] = Counter()  # open checks: True for blank-line ones
        self._headers_of: BoundedPart | None = None  # whose header lines are being read
        self._body_of: BoundedPart | None = None  # whose body the next read starts
        self._sink: BodySink | None = None  # the leaf body being read, if any
        self._blocks = False  # a body read as text, in blocks of lines
        self._hold = b""  # the last two bytes read into the sink, not written yet
        self._bol = True  # _pos is at the start of a line
        self._waiting = False  # the line at _pos may end the part, and is not complete
        self._known = -1  # len(_separators) when the fields below were made
        self._separator_bytes: set[bytes] = set()
        self._closes: list[bytes] = []
        self._longest = 0
        self._pattern = re.compile(b"(?!)")

    # ---------------------------------------------------------------- the parser's API

    def push(self, data: str) -> None:
        self.push_bytes(data.encode("ascii", "surrogateescape"))

    def push_bytes(self, data: bytes | bytearray | memoryview) -> None:
        if self._pos:
            del self._buffer[: self._pos]  # amortized O(1) at the front of a bytearray
            self._pos = 0
        self._buffer += data

    def close(self) -> None:
        self._closed = True

    def unreadline(self, line: str) -> None:
        self._lines.appendleft(line)

    def push_eof_matcher(self, pred: Callable[[str], object]) -> None:
        self._open[pred == _BLANK_LINE] += 1
        self._eofstack.append(pred)

    def pop_eof_matcher(self) -> Callable[[str], object]:
        pred = self._eofstack.pop()
        self._open[pred == _BLANK_LINE] -= 1
        return pred

    def __iter__(self) -> Lines:
        return self

    def __next__(self) -> object:
        line = self.readline()
        if line == "":
            raise StopIteration
        return line

    def readline(self) -> object:
        """The next line; ``""`` at the end of the current part; ``NeedMoreData``."""
        if self._body_of is not None:
            part, self._body_of = self._body_of, None
            self._start_body(part)
        if self._sink is not None:
            return self._stream()
        if self._blocks:
            return self._block()
        line = self._next_line()
        if self._headers_of is not None and line is not _NEED_MORE:
            assert isinstance(line, str)
            if not line or not _HEADER_LINE(line):  # the parser's header loop ends here
                self._body_of, self._headers_of = self._headers_of, None
        return line

    # ---------------------------------------------------------------- our hooks

    def reading_headers(self, part: BoundedPart) -> None:
        """The parser made ``part``: its header lines are read next."""
        self._headers_of, self._body_of = part, None

    # ---------------------------------------------------------------- lines

    def _next_line(self) -> object:
        if not self._lines and self._headers_of is None:
            self._split()
        if self._lines:
            line = self._lines.popleft()
        else:
            end = self._line_end()
            if end is None:
                return "" if self._closed else _NEED_MORE
            line = self._take(end).decode("ascii", "surrogateescape")
        if self._ends_part(line):
            self._lines.appendleft(line)
            return ""
        return line

    def _split(self) -> None:
        """Lines into ``_lines`` from up to ``_WINDOW`` bytes of input (whole lines, none
        when the first does not end in that many bytes), split in one go."""
        buffer, pos = self._buffer, self._pos
        end = buffer.rfind(b"\n", pos, pos + _WINDOW) + 1  # a LF always ends a line
        if end <= pos:
            return
        data = self._take(end)
        if data.translate(None, _OTHER_LINE_ENDS) == data:
            self._lines.extend(data.decode("ascii", "surrogateescape").splitlines(keepends=True))
        else:  # str.splitlines would split at these too
            self._lines.extend(
                line.decode("ascii", "surrogateescape") for line in data.splitlines(keepends=True)
            )

    def _line_end(self) -> int | None:
        """End (line end included) of the complete line at ``_pos``, else ``None``.

        As the stdlib splits: ``\\r\\n``, ``\\r`` and ``\\n`` end a line; a ``\\r`` last in
        the input waits for the next byte; after ``close()`` the rest is a line.
        """
        buffer, pos = self._buffer, self._pos
        size = len(buffer)
        if pos >= size:
            return None
        match = _LINE_END.search(buffer, pos + self._scanned)
        if match is None:
            if self._closed:
                return size
            self._scanned = size - pos
            return None
        end = match.end()
        if buffer[end - 1] == _CR:
            if end < size:
                return end + 1 if buffer[end] == _LF else end
            if not self._closed:
                self._scanned = end - 1 - pos
                return None
        return end

    def _take(self, end: int) -> bytes:
        data = bytes(self._buffer[self._pos : end])
        self._pos, self._scanned, self._waiting = end, 0, False
        return data

    def _ends_part(self, line: str) -> bool:
        if not self._eofstack:
            return False
        key = line.rstrip(" \t\r\n")
        if not (
            key in self._separators
            or (key.endswith("--") and key[:-2] in self._separators)
            or (self._open[True] and line.startswith(("\r", "\n")))
        ):
            return False
        # RFC 2046 §5.1.2: outer boundaries end inner parts too (the stdlib's order).
        return any(ateof(line) for ateof in reversed(self._eofstack))

    # ---------------------------------------------------------------- leaf bodies

    def _start_body(self, part: BoundedPart) -> None:
        # The parser reads a body (appending its lines, nothing more) for a leaf part,
        # and for a multipart part without a boundary (the walker reads it as a leaf).
        maintype = part.get_content_maintype()
        if maintype == "message" or (maintype == "multipart" and part.get_boundary() is not None):
            return
        if self._open[True]:
            return  # inside message/delivery-status: line by line
        self._unsplit()
        if part.quoted:
            # Read with its message/* part, as text: in blocks of lines, not lines.
            self._blocks = True
            return
        if maintype != "multipart":
            try:
                part.body_slot = self._limiter.slots.claim(part)
                part.classified = True
            except Exception:  # the walker meets the same error, and reports it
                part.body_slot = None
        cap = self._limiter.text_cap if part.body_slot else None
        sink = new_sink(str(part.get("content-transfer-encoding", "")).lower(), cap)
        if sink is None:
            self._blocks = True
        else:
            part.sink, self._sink, self._hold = sink, sink, b""

    def _unsplit(self) -> None:
        """Lines split (or pushed back) and not read yet back into the input."""
        if self._lines:
            data = "".join(self._lines).encode("ascii", "surrogateescape")
            self._lines.clear()
            if self._pos >= len(data):  # over the bytes they came from
                self._pos -= len(data)
                self._buffer[self._pos : self._pos + len(data)] = data
            else:
                self._buffer[self._pos : self._pos] = data
            self._scanned, self._waiting = 0, False
        self._bol = True

    def _block(self) -> object:
        """The next lines of a body in one string: up to a line that may end the part."""
        if self._lines:
            line = self._next_line()
        else:
            buffer, pos = self._buffer, self._pos
            start = self._candidate(pos) if self._eofstack else -1
            if start == pos:
                line = self._next_line()  # a line that may end the part, whole
                self._waiting = line is _NEED_MORE
            else:
                end = start if start >= 0 else len(buffer)
                if end > pos:
                    self._bol = buffer[end - 1] in _EOL_BYTES
                    return self._take(end).decode("ascii", "surrogateescape")
                line = "" if self._closed else _NEED_MORE
        if isinstance(line, str) and line:
            self._bol = line.endswith(("\r", "\n"))
        elif line == "":
            self._blocks = False  # the end of the part
        return line

    def _stream(self) -> object:
        while self._lines:  # (none after _unsplit, unless pushed back since)
            line = self._lines[0]
            if self._ends_part(line):
                return self._end_body()
            self._lines.popleft()
            self._write(line.encode("ascii", "surrogateescape"))
            self._bol = line.endswith(("\r", "\n"))
        buffer = self._buffer
        while True:
            pos = self._pos
            start = self._candidate(pos) if self._eofstack else -1
            if start < 0:
                end = len(buffer)
                if end > pos:
                    self._bol = buffer[end - 1] in _EOL_BYTES
                    self._write(self._take(end))
                return self._end_body() if self._closed else _NEED_MORE
            if start > pos:
                self._write(self._take(start))
                self._bol = True
            end_of_line = self._line_end()
            if end_of_line is None:  # (once closed, the rest is a line)
                self._waiting = True
                return _NEED_MORE
            line = bytes(buffer[start:end_of_line]).decode("ascii", "surrogateescape")
            if self._ends_part(line):
                return self._end_body()
            self._bol = buffer[end_of_line - 1] in _EOL_BYTES
            self._write(self._take(end_of_line))

    def _candidate(self, pos: int) -> int:
        """Where the first line from ``_pos`` on that may end the part starts, or -1.

        Such a line starts with ``--`` and is a separator line, or is the last line,
        not complete yet, and may still become one.
        """
        if self._waiting:  # the line at _pos, not complete yet
            return pos
        buffer = self._buffer
        pattern = self._separator_lines()
        found = pattern.search(buffer, pos)
        while found is not None:
            start = found.start()
            at_line_start = buffer[start - 1] in _EOL_BYTES if start > pos else self._bol
            if at_line_start and self._is_separator_line(start, found.end()):
                return start
            found = pattern.search(buffer, start + 1)
        if self._closed:
            return -1
        last = max(buffer.rfind(b"\n", pos), buffer.rfind(b"\r", pos)) + 1
        if last == 0 and not self._bol:
            return -1
        last = max(last, pos)
        tail = bytes(buffer[last : last + self._longest + 1])
        if tail and len(tail) <= self._longest and any(c.startswith(tail) for c in self._closes):
            return last
        return -1

    def _separator_lines(self) -> re.Pattern[bytes]:
        """A pattern finding lines that start with a known separator (all separators
        while they are few, else ``--``), kept until a separator is added."""
        if len(self._separators) != self._known:
            self._known = len(self._separators)
            separators = set()
            for separator in self._separators:
                try:  # a line holds ASCII and escaped bytes: no other separator matches
                    separators.add(separator.encode("ascii", "surrogateescape"))
                except UnicodeEncodeError:
                    pass
            self._separator_bytes = separators
            self._closes = [separator + b"--" for separator in separators]
            self._longest = max(map(len, self._closes), default=0)
            ends = b"(?:--)?[ \t]*(?:[\r\n]|\\Z)" if len(separators) <= _FEW else b""
            names = b"|".join(re.escape(s[2:]) for s in sorted(separators))
            names = (names if separators else b"(?!)") if len(separators) <= _FEW else b""
            # Starting with "--", the search runs at the speed of a substring search.
            self._pattern = re.compile(b"--(?:" + names + b")" + ends)
        return self._pattern

    def _is_separator_line(self, start: int, end: int) -> bool:
        if len(self._separator_bytes) <= _FEW:
            return True  # the pattern matched the whole line
        match = _LINE_END.search(self._buffer, end)
        if match is None:
            return True  # may still become one
        key = bytes(self._buffer[start : match.start()]).rstrip(b" \t")
        separators = self._separator_bytes
        return key in separators or (key.endswith(b"--") and key[:-2] in separators)

    def _write(self, data: bytes) -> None:
        assert self._sink is not None
        if len(data) >= 2:
            if self._hold:
                self._sink.write(self._hold)
            self._sink.write(data[:-2])
            self._hold = data[-2:]
        else:
            hold = self._hold + data
            if len(hold) > 2:
                self._sink.write(hold[:-2])
                hold = hold[-2:]
            self._hold = hold

    def _end_body(self) -> str:
        assert self._sink is not None
        hold = self._hold
        last = 2 if hold.endswith(b"\r\n") else 1 if hold.endswith((b"\r", b"\n")) else 0
        self._sink.write(hold[: len(hold) - last])
        self._sink, self._hold = None, b""
        # The parser is given the last line end (then "" at the next read), and drops
        # it when a boundary follows, as it does from the end of a body.
        return hold[len(hold) - last :].decode("ascii")


class _CountingPolicy(Compat32):
    limiter: Limiter | None = None

    def header_source_parse(self, sourcelines: list[str]) -> tuple[str, str]:
        if self.limiter is not None:
            # BytesFeedParser decodes with surrogateescape: one character per byte.
            self.limiter.add_header_bytes(sum(map(len, sourcelines)))
        return super().header_source_parse(sourcelines)


class Limiter:
    """The counters of one parse; ``policy`` and ``new_part`` go to ``BytesFeedParser``.

    ``slots`` decides, in document order, which leaves are the text and html bodies;
    their decoded bodies are kept up to ``text_cap`` bytes (all when ``None``).
    """

    def __init__(
        self,
        *,
        max_depth: int,
        max_parts: int,
        max_header_bytes: int,
        text_cap: int | None = None,
    ) -> None:
        self.max_depth = max_depth
        self.max_parts = max_parts
        self.max_header_bytes = max_header_bytes
        self.text_cap = text_cap
        self.slots = BodySlots()
        self.lines: Lines | None = None
        self.parts = 0
        self.header_bytes = 0
        self.root: BoundedPart | None = None
        self.separators: set[str] = set()
        self.counting = False
        self.policy = _CountingPolicy()
        # Policies are immutable by design (their __setattr__ raises); this one carries
        # the counters of a single parse, so it is set once, here.
        object.__setattr__(self.policy, "limiter", self)

    def new_part(self, policy: Any = None) -> BoundedPart:
        """The message factory; ``policy`` (the parser passes its own) is ours anyway."""
        part = BoundedPart(self.policy)
        part.limiter = self
        # The parser calls the factory once, as a probe, when it is created: only
        # parts made after start() are counted.
        if self.counting:
            self.parts += 1
            if self.parts > self.max_parts:
                raise LimitBroken(f"more than {self.max_parts} MIME parts")
            self.header_bytes = 0  # the parser reads this part's headers next
            if self.root is None:
                self.root = part
            if self.lines is not None:
                self.lines.reading_headers(part)
        return part

    def start(self) -> None:
        """Count parts from here on."""
        self.counting = True

    def add_header_bytes(self, count: int) -> None:
        self.header_bytes += count
        if self.header_bytes > self.max_header_bytes:
            raise LimitBroken(f"a header block larger than {self.max_header_bytes} bytes")


class _Parser(BytesFeedParser):
    # Input goes to our reader as bytes: the stdlib's feed decodes it to str first.
    def __init__(self, limiter: Limiter) -> None:
        super().__init__(limiter.new_part, policy=limiter.policy)
        self.lines = Lines(limiter)
        # The stdlib reads its lines from this undocumented attribute.
        setattr(self, "_input", self.lines)  # noqa: B010
        limiter.lines = self.lines

    def feed(self, data: bytes | bytearray | memoryview) -> None:  # type: ignore[override]
        self.lines.push_bytes(data)
        getattr(self, "_call_parse")()  # noqa: B009 (the stdlib's feed, after its push)


def new_parser(limiter: Limiter) -> _Parser:
    """A ``BytesFeedParser`` under ``limiter``, reading through ``Lines``."""
    return _Parser(limiter)


class _RawHeaders(Compat32):
    # compat32 re-folds header values through email.header.Header when writing them
    # (not byte-identical, and slow on long values); a parsed value already holds its
    # original folding, so it is written back as it came.
    def fold_binary(self, name: str, value: str) -> bytes:
        return f"{name}: {value}{self.linesep}".encode("utf-8", "surrogateescape")


class _Writer(BytesGenerator):
    # serialize_body wants the body of the part it is given: its headers are not
    # written (cutting them off copied the whole body), and the body is not buffered
    # first (the generator's _write does that, for each part, to rewrite the headers
    # after changing its Content-Transfer-Encoding, which 8-bit output never does).
    body_only = False

    def _write(self, msg: Message) -> None:
        if self.body_only:
            self.body_only = False
            getattr(self, "_dispatch")(msg)  # noqa: B009 (not in typeshed)
        else:
            super()._write(msg)  # type: ignore[misc]

    # The stdlib splits a text into a list of lines (25 MiB of short lines: over 100
    # MiB) to write them with its line end; the same text goes out in slices.
    def _write_lines(self, lines: str) -> None:
        newline = getattr(self, "_NL")  # noqa: B009
        start = 0
        while start < len(lines):
            end = start + _SLICE
            if end < len(lines) and lines[end - 1] == "\r":
                end += 1  # never between the CR and LF of one line end
            piece = lines[start:end]
            crlf = piece.count("\r\n")
            if newline != "\r\n" or piece.count("\r") != crlf or piece.count("\n") != crlf:
                piece = _GENERATOR_LINE_END.sub(newline, piece)
            self.write(piece)
            start = end

    # The stdlib draws a random boundary for a multipart whose boundary is empty
    # (boundary="" is legal and parses): the same message would serialize differently
    # each time. Ours is derived from the content, so it is stable.
    @classmethod
    def _make_boundary(cls, text: str | None = None) -> str:
        digest = hashlib.sha256((text or "").encode("utf-8", "surrogateescape")).hexdigest()
        boundary = "=_" + digest[:32]
        while text is not None and "--" + boundary in text:
            boundary += "_"
        return boundary


_WRITE = _RawHeaders(linesep="\r\n")


def serialize_body(part: Message) -> bytes:
    """The body of ``part`` as bytes: original header text, CRLF line endings.

    For message/rfc822, the attached message; for message/delivery-status, its
    blocks. May raise (a broken tree; ``RecursionError`` past about 200 levels).
    """
    buffer = io.BytesIO()
    writer = _Writer(buffer, mangle_from_=False, policy=_WRITE)
    writer.body_only = True
    writer.flatten(part)
    return buffer.getvalue()
