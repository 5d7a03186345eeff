"""Tier 1 and 4: properties of the pure input guards, and random raw SMTP sessions.

(a) Hypothesis properties on what stands between client bytes and a column, a log line
or a lookup: envelope address checks, the HELO sanitizer and the display-text cleaner.
(b) A bounded fuzz run of random SMTP sessions over a real socket: valid commands mixed
with garbage, replies read after each line. Deterministic (``derandomize=True``).
"""

from __future__ import annotations

import re
import socket
import time
import unicodedata
from dataclasses import dataclass, field

import pytest
from hypothesis import HealthCheck, event, example, given, settings
from hypothesis import strategies as st

from django_inbound_smtp.envelope import (
    MAX_ADDRESS_LENGTH,
    MAX_DOMAIN_LENGTH,
    MAX_LOCAL_PART_LENGTH,
    address_syntax_error,
    split_address,
)
from django_inbound_smtp.models import InboundMessage
from django_inbound_smtp.parsing import MAX_FIELD_LENGTH, clean_text
from django_inbound_smtp.smtp._trace import sanitize_helo
from django_inbound_smtp.testing import RunningServer

# ------------------------------------------------------------------ (a) properties

FORBIDDEN = {"\x00", "\r", "\n"}
# Bidi embeddings, overrides and isolates (hostile-inputs #79).
BIDI_CONTROLS = {chr(c) for c in [*range(0x202A, 0x202F), *range(0x2066, 0x206A)]}

# What an address argument can hold once aiosmtpd has decoded it: any text, plus the
# lone surrogates U+DC80-U+DCFF that surrogateescape makes of invalid UTF-8 bytes.
_address_chars = st.one_of(
    st.characters(codec="utf-8"),
    st.sampled_from(["@", '"', ".", "+", "%", "!", "\x00", "\r", "\n", "\udcff", "\udc80"]),
)
addresses = st.one_of(
    st.text(_address_chars, max_size=300),
    st.builds(
        lambda local, domain: f"{local}@{domain}",
        st.text(_address_chars, max_size=80),
        st.text(_address_chars, max_size=270),
    ),
)
PROPERTY = settings(derandomize=True, max_examples=500, database=None)


def _octets(text: str) -> int:
    return len(text.encode("utf-8", "surrogateescape"))


@PROPERTY
@given(addresses)
@example("us\x00er@our.test")
@example("us\rer@our.test")
@example("x" * 65 + "@our.test")
@example("u@" + "d" * 256)
@example('"victim@example.net"@our.test')
def test_an_accepted_address_is_usable(address: str) -> None:
    error = address_syntax_error(address)
    if FORBIDDEN & set(address) or _octets(address) > MAX_ADDRESS_LENGTH:
        assert error is not None
    if error is None:
        local, domain = split_address(address)
        assert not FORBIDDEN & set(address)
        assert _octets(address) <= MAX_ADDRESS_LENGTH
        assert local
        assert domain
        assert _octets(local) <= MAX_LOCAL_PART_LENGTH
        assert len(domain) <= MAX_DOMAIN_LENGTH


@PROPERTY
@given(addresses)
@example('"victim@example.net"@our.test')
@example("postmaster")
@example("@")
def test_the_domain_is_what_follows_the_last_at(address: str) -> None:
    local, domain = split_address(address)
    if "@" not in address:
        assert (local, domain) == (address, "")
        return
    assert "@" not in domain
    assert local == address[: address.rindex("@")]
    assert domain == address[address.rindex("@") + 1 :].lower()


@PROPERTY
@given(
    st.text(st.characters(codec="utf-8"), max_size=600)
    | st.binary(max_size=600).map(lambda raw: raw.decode("utf-8", "surrogateescape"))
)
@example("a\x00b\r\n<script>")
@example("x" * 600)
def test_helo_is_printable_ascii_bounded_and_idempotent(name: str) -> None:
    clean = sanitize_helo(name)
    assert re.fullmatch(r"[\x21-\x7e]*", clean)
    assert len(clean) <= 255
    assert sanitize_helo(clean) == clean


# Text that a header value may carry once decoded: anything, with extra weight on
# white space, controls, bidi characters and sequences that Unicode normalization changes.
_hostile_pieces = st.one_of(
    st.characters(codec="utf-8"),
    st.sampled_from(
        [" ", "\t", "\r", "\n", "\x00", "\x0b", "\x1b", "\x7f", "\x85", "\u00a0", "\u2028"]
        + sorted(BIDI_CONTROLS)
        + ["e\u0301", "\u1100\u1161", "\ufb01"]
    ),
)
hostile_text = st.lists(_hostile_pieces, max_size=80).map("".join)
limits = st.one_of(st.just(MAX_FIELD_LENGTH), st.integers(min_value=1, max_value=40))


@PROPERTY
@given(hostile_text, limits)
def test_clean_text_has_no_controls_or_bidi_and_is_bounded(text: str, limit: int) -> None:
    clean = clean_text(text, limit=limit)
    assert not [c for c in clean if unicodedata.category(c) == "Cc"]
    assert not BIDI_CONTROLS & set(clean)
    assert len(clean) <= limit


@PROPERTY
@given(hostile_text, limits)
@example("a \x00 b", MAX_FIELD_LENGTH)
@example("a b", 2)
def test_clean_text_is_idempotent(text: str, limit: int) -> None:
    clean = clean_text(text, limit=limit)
    assert clean_text(clean, limit=limit) == clean


@PROPERTY
@given(hostile_text)
@example("subject\u2028Bcc: injected@x")
def test_clean_text_is_one_line(text: str) -> None:
    assert len(clean_text(text).splitlines()) <= 1


# --------------------------------------------------------- (b) random raw sessions

READ_TIMEOUT = 2.0  # per reply; no reply within it is a hang
REPLY_LINE = re.compile(rb"^[2-5]\d\d[ -]")
QUEUED = b"250 2.0.0 Ok: queued as "

EHLO = b"EHLO fuzz.test\r\n"
MAIL = b"MAIL FROM:<a@example.org>\r\n"
RCPT_OK = b"RCPT TO:<user@our.test>\r\n"
RCPT_FOREIGN = b"RCPT TO:<x@elsewhere.test>\r\n"
VALID_COMMANDS = [EHLO, MAIL, RCPT_OK, RCPT_FOREIGN, b"RSET\r\n", b"NOOP\r\n", b"QUIT\r\n"]


@dataclass(frozen=True)
class Data:
    """``DATA``, then (after a 354) the body and ``CRLF.CRLF``."""

    body: bytes


_BODY_FRAGMENTS = [
    b"Subject: fuzz\r\n\r\n",
    b"\r\n",
    b"\n.\n",  # smuggling sequences (hostile-inputs #1-#6): body text, never an end
    b"\n.\r\n",
    b"\r.\r\n",
    b"\r\n..\r\n",
    b".",
    b"\x00",
    b"MAIL FROM:<evil@example.org>\r\nRCPT TO:<user@our.test>\r\nDATA\r\n",
    "ünïcödé".encode(),
    b"x" * 1200,
]


def _one_end_of_data(body: bytes) -> bool:
    # The body must not end the data early: only the terminator we append may. DATA
    # starts at the beginning of a line, hence the CRLF in front.
    wire = b"\r\n" + body + b"\r\n.\r\n"
    return wire.find(b"\r\n.\r\n") == len(b"\r\n" + body)


bodies = (
    st.lists(st.one_of(st.binary(max_size=60), st.sampled_from(_BODY_FRAGMENTS)), max_size=6)
    .map(b"".join)
    .filter(_one_end_of_data)
)

_no_line_end = st.binary(min_size=1, max_size=60).map(
    lambda raw: raw.replace(b"\r", b"").replace(b"\n", b"") or b"?"
)
garbage = st.one_of(
    _no_line_end,  # random bytes without CRLF: they prefix the next line
    _no_line_end.map(lambda raw: raw + b"\n"),  # bare LF
    _no_line_end.map(lambda raw: raw + b"\r\n"),
    st.sampled_from(
        [
            b"\n",
            b"\r",  # bare CR
            b"\x00",
            b"\x00\r\n",
            b"NO\x00OP\r\n",
            b"MAIL FROM:<a\x00@example.org>\r\n",
            b"X" * 513 + b"\r\n",  # long lines, with and without their end
            b"X" * 1001 + b"\r\n",
            b"X" * 5000 + b"\r\n",
            b"Y" * 1100,
            "MAIL FROM:<jösé@example.org>\r\n".encode(),  # non-ASCII
            b"\xc3\xa9HLO x\r\n",
            b"RCPT TO:<j\xff\xfe@our.test>\r\n",
            b"GET / HTTP/1.1\r\n",  # ends the session (221 and close)
        ]
    ),
)
# A transaction in order (so messages do get queued), possibly with a refused recipient.
transactions = st.builds(
    lambda recipients, body: [MAIL, *recipients, Data(body)],
    st.lists(st.sampled_from([RCPT_OK, RCPT_OK, RCPT_FOREIGN]), min_size=1, max_size=3),
    bodies,
)
single_items = st.one_of(st.sampled_from(VALID_COMMANDS), bodies.map(Data), garbage).map(
    lambda item: [item]
)
session_items = st.builds(
    lambda greet, chunks: ([EHLO] if greet else []) + [item for chunk in chunks for item in chunk],
    st.sampled_from([True, True, True, False]),
    st.lists(st.one_of(transactions, single_items, single_items), min_size=1, max_size=6),
)


@dataclass
class Session:
    """One connection: what was sent, what came back."""

    sock: socket.socket
    sent: list[bytes] = field(default_factory=list)
    replies: list[list[bytes]] = field(default_factory=list)
    closed: bool = False
    _buffer: bytes = b""

    def send(self, data: bytes) -> None:
        self.sent.append(data)
        try:
            self.sock.sendall(data)
        except OSError:  # the server hung up (QUIT, 421, 502, 221)
            self.closed = True

    def _line(self) -> bytes:
        deadline = time.monotonic() + READ_TIMEOUT
        while b"\n" not in self._buffer:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise AssertionError(f"no reply within {READ_TIMEOUT} s (hang)")
            self.sock.settimeout(remaining)
            try:
                chunk = self.sock.recv(65536)
            except TimeoutError:
                continue
            except OSError:
                chunk = b""
            if not chunk:
                self.closed = True
                rest, self._buffer = self._buffer, b""
                return rest
            self._buffer += chunk
        line, _, self._buffer = self._buffer.partition(b"\n")
        return line + b"\n"

    def reply(self) -> list[bytes]:
        """One reply (continuation lines included); ``[]`` when the server has closed."""
        lines: list[bytes] = []
        while not self.closed or self._buffer:
            line = self._line()
            if not line:
                break
            lines.append(line)
            if line[3:4] != b"-":
                break
        if lines:
            self.replies.append(lines)
        return lines


def _connect(server: RunningServer) -> socket.socket:
    return socket.create_connection((server.host, server.port), timeout=READ_TIMEOUT)


def _run(server: RunningServer, items: list[bytes | Data]) -> Session:
    session = Session(_connect(server))
    with session.sock:
        greeting = session.reply()
        assert greeting, "closed instead of greeting"
        assert greeting[0].startswith(b"220 "), greeting
        for item in items:
            if session.closed:
                break
            if isinstance(item, Data):
                session.send(b"DATA\r\n")
                reply = session.reply()
                if reply and reply[-1].startswith(b"354 "):
                    session.send(item.body + b"\r\n.\r\n")
                    session.reply()
                continue
            session.send(item)
            # aiosmtpd answers every command line, and a line ends at LF.
            for _ in range(item.count(b"\n")):
                if session.closed or not session.reply():
                    break
    return session


def _check(session: Session) -> int:
    """Assert every reply is well-formed; return how many messages were queued."""
    queued = 0
    for reply in session.replies:
        for line in reply:
            assert REPLY_LINE.match(line), f"not an SMTP reply line: {line!r}"
            assert not line.startswith(b"500 Error: ("), f"leaked exception: {line!r}"
        if reply[-1].startswith(QUEUED):
            queued += 1
    return queued


def _still_greets(server: RunningServer) -> None:
    session = Session(_connect(server))
    with session.sock:
        greeting = session.reply()
        assert greeting, "a fresh connection was closed without a greeting"
        assert greeting[0].startswith(b"220 "), greeting
        session.send(b"QUIT\r\n")
        assert session.reply()[0].startswith(b"221 ")


@pytest.mark.integration
def test_random_sessions_never_break_the_server(make_mailbox, smtp_server: RunningServer) -> None:
    make_mailbox("user@our.test")
    started = time.monotonic()

    @settings(
        derandomize=True,
        database=None,
        max_examples=30,
        deadline=None,
        suppress_health_check=[
            HealthCheck.function_scoped_fixture,
            HealthCheck.too_slow,
            HealthCheck.filter_too_much,
        ],
    )
    @given(session_items)
    def one_session(items: list[bytes | Data]) -> None:
        before = InboundMessage.objects.count()
        session = _run(smtp_server, items)
        queued = _check(session)
        # A 250 "queued" means a committed row, and nothing is stored without one.
        stored = InboundMessage.objects.count() - before
        assert stored == queued, (stored, queued, session.sent, session.replies)
        event(f"messages queued: {queued}")
        event("closed by the server" if session.closed else "closed by the client")
        _still_greets(smtp_server)

    one_session()
    assert time.monotonic() - started < 60
