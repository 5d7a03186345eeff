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

The parser reads its lines through ``_lines.Lines``, which keeps down two costs the
limits alone do not bound: the end-of-part checks on every line, and the memory and
time of long bodies. Also here: ``split_params``, the linear-time parameter splitter
every ``BoundedPart`` reads its parameters with, and ``serialize_body``, a part's body
back to bytes, for the walker.
"""

from __future__ import annotations

import hashlib
import io
import re
from email import utils
from email.feedparser import BytesFeedParser
from email.generator import BytesGenerator
from email.message import Message
from email.policy import Compat32
from typing import Any

from django_inbound_smtp.parsing._bodies import BodySink, BodySlots, Defects
from django_inbound_smtp.parsing._lines import Lines

__all__ = [
    "BoundedPart",
    "LimitBroken",
    "Limiter",
    "new_parser",
    "serialize_body",
]

# The generator's line-end pattern, and the slices a long text is written in.
_GENERATOR_LINE_END = re.compile(r"\r\n|\r|\n")
_SLICE = 1024 * 1024


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
    decodes a body read into a ``_bodies`` sink (see ``_lines.Lines``)."""

    depth = 0
    limiter: Limiter | None = None
    quoted = False  # inside a message/* part: the walker does not read its leaves
    classified = False  # body_slot was decided while parsing (see _lines.Lines._start_body)
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
