"""Tier 1: the DATA stream decoder, including chunking-independence properties."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from django_inbound_smtp.smtp._data import BareNewlines, DotDecoder


def _decode(chunks: list[bytes]) -> tuple[bytes, bytes, bool]:
    """Feed ``chunks`` as the socket would deliver them; bytes never fed after the end
    stay unread in the stream, so they count as trailing too."""
    decoder = DotDecoder()
    out = b""
    unread = b""
    for chunk in chunks:
        if decoder.done:
            unread += chunk
        else:
            out += decoder.feed(chunk)
    return out, decoder.trailing + unread, decoder.done


def _stuff(message: bytes) -> bytes:
    """What an RFC 5321 client sends for ``message`` (CRLF-terminated lines)."""
    lines = message.split(b"\r\n")
    return b"\r\n".join(b"." + line if line.startswith(b".") else line for line in lines)


@pytest.mark.parametrize(
    ("wire", "message", "trailing"),
    [
        (b".\r\n", b"", b""),
        (b"a\r\n.\r\n", b"a\r\n", b""),
        (b"..x\r\n.\r\nQUIT\r\n", b".x\r\n", b"QUIT\r\n"),
        (b"a\r\n..\r\n.\r\n", b"a\r\n.\r\n", b""),
        # Smuggling sequences are body text, not an end of data (hostile-inputs #1-#6).
        (b"a\n.\nb\r\n.\r\n", b"a\n.\nb\r\n", b""),
        (b"a\n.\r\nb\r\n.\r\n", b"a\n.\r\nb\r\n", b""),
        (b"a\r.\r\nb\r\n.\r\n", b"a\r.\r\nb\r\n", b""),
        (b"a\r\n.\nb\r\n.\r\n", b"a\r\n\nb\r\n", b""),
        (b"a\r\n.\rb\r\n.\r\n", b"a\r\n\rb\r\n", b""),
        (b"a\r\n\x00.\r\n.\r\n", b"a\r\n\x00.\r\n", b""),
    ],
)
def test_known_streams(wire: bytes, message: bytes, trailing: bytes) -> None:
    assert _decode([wire]) == (message, trailing, True)


def test_unterminated_stream_is_not_done() -> None:
    out, _, done = _decode([b"a\r\n.", b"x\r\n."])
    assert (out, done) == (b"a\r\nx\r\n", False)


def test_feeding_after_the_end_is_a_bug() -> None:
    decoder = DotDecoder()
    decoder.feed(b".\r\n")
    with pytest.raises(RuntimeError):
        decoder.feed(b"more")


def test_size_counts_decoded_bytes() -> None:
    decoder = DotDecoder()
    decoder.feed(b"..ab\r\n.\r\n")
    assert decoder.size == len(b".ab\r\n")


_lines = st.lists(st.binary(max_size=40).map(lambda b: b.replace(b"\r\n", b"\n")), max_size=12)


def _split(data: bytes, cuts: list[int]) -> list[bytes]:
    points = sorted({c % (len(data) + 1) for c in cuts})
    pieces, start = [], 0
    for point in points:
        pieces.append(data[start:point])
        start = point
    pieces.append(data[start:])
    return pieces


@settings(max_examples=400, derandomize=True)
@given(
    lines=_lines,
    cuts=st.lists(st.integers(min_value=0, max_value=10_000), max_size=20),
    tail=st.binary(max_size=20),
)
def test_any_chunking_gives_the_same_message_and_end(lines, cuts, tail) -> None:
    message = b"".join(line + b"\r\n" for line in lines)
    wire = _stuff(message) + b".\r\n" + tail
    assert _decode(_split(wire, cuts)) == (message, tail, True)


@settings(max_examples=300, derandomize=True)
@given(
    data=st.binary(max_size=200),
    cuts=st.lists(st.integers(min_value=0, max_value=400), max_size=10),
)
def test_arbitrary_bytes_decode_identically_whatever_the_chunking(data, cuts) -> None:
    assert _decode(_split(data, cuts)) == _decode([data])


def _reference(wire: bytes) -> tuple[bytes, bytes, bool] | None:
    """RFC 5321 §4.1.1.4 / §4.5.2 read literally: split into CRLF lines; a line that is
    exactly "." ends the data; otherwise one leading dot is removed."""
    out = b""
    position = 0
    while True:
        end = wire.find(b"\r\n", position)
        if end < 0:
            return None  # no complete terminator line yet
        line = wire[position:end]
        if line == b".":
            return out, wire[end + 2 :], True
        out += (line[1:] if line.startswith(b".") else line) + b"\r\n"
        position = end + 2


_wire_bytes = st.lists(
    st.sampled_from([b".", b"\r", b"\n", b"\r\n", b"x", b"..", b"\r\n.", b".\r\n", b"\x00"]),
    max_size=40,
).map(b"".join)


@settings(max_examples=500, derandomize=True)
@given(body=_wire_bytes, cuts=st.lists(st.integers(min_value=0, max_value=200), max_size=8))
def test_decoder_matches_a_literal_reading_of_the_rfc(body, cuts) -> None:
    wire = body + b"\r\n.\r\n"  # always terminated somewhere
    expected = _reference(wire)
    assert expected is not None
    assert _decode(_split(wire, cuts)) == expected


def test_many_empty_lines_decode_quickly() -> None:
    # One Python loop turn per line made 25 MiB of empty lines cost seconds of CPU on the
    # event loop; the decoder now works per CRLF-dot. Correctness is asserted, not time.
    wire = b"\r\n" * 100_000 + b"..x\r\n" * 3 + b".\r\n"
    assert _decode([wire]) == (b"\r\n" * 100_000 + b".x\r\n" * 3, b"", True)


@pytest.mark.parametrize(
    ("policy", "stored"),
    [
        ("normalize", b"Subject: hi\r\nBcc: x\r\n\r\na b\r\n"),
        ("keep", b"Subject: hi\nBcc: x\r\n\r\na\rb\r\n"),
    ],
)
def test_bare_newline_policies(policy: str, stored: bytes) -> None:
    newlines = BareNewlines(policy)
    assert newlines.apply(b"Subject: hi\nBcc: x\r\n\r\na\rb\r\n") == stored
    assert newlines.seen


def test_clean_data_is_untouched_and_not_flagged() -> None:
    newlines = BareNewlines("normalize")
    data = b"a\r\nb\r\n"
    assert newlines.apply(data) is data
    assert not newlines.seen


@settings(max_examples=300, derandomize=True)
@given(body=_wire_bytes, cuts=st.lists(st.integers(min_value=0, max_value=200), max_size=8))
def test_normalized_output_has_only_crlf_whatever_the_chunking(body, cuts) -> None:
    decoder = DotDecoder()
    newlines = BareNewlines("normalize")
    out = b""
    for chunk in _split(body + b"\r\n.\r\n", cuts):
        if not decoder.done:
            out += newlines.apply(decoder.feed(chunk))
    assert out.count(b"\r") == out.count(b"\r\n") == out.count(b"\n")
