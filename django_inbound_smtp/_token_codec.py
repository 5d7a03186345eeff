"""The byte layout of signed-address tokens: varints, typed keys, lower-case base32.

Pure (stdlib only); ``reply_addresses`` adds the signature and the meaning.
"""

from __future__ import annotations

import base64
import binascii
import uuid
from typing import Any

__all__ = ["INT", "TEXT", "UUID", "BadToken", "Reader", "decode", "encode", "key_bytes", "varint"]

#: How a primary key is written: a varint, 16 UUID bytes, or length-prefixed UTF-8.
INT, UUID, TEXT = 0, 1, 2


class BadToken(ValueError):
    """A token that does not verify. ``reason``: ``"malformed"``, ``"forged"``
    (the signature does not match any key), ``"expired"`` or ``"gone"`` (the object
    it names no longer exists)."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def varint(value: int) -> bytes:
    """``value`` (>= 0) in 7-bit groups, low first; a set high bit means "more"."""
    out = bytearray()
    while True:
        byte, value = value & 0x7F, value >> 7
        out.append(byte | (0x80 if value else 0))
        if not value:
            return bytes(out)


def key_bytes(value: Any) -> tuple[int, bytes]:
    """How a primary key is written (``INT``, ``UUID`` or ``TEXT``) and its bytes."""
    if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
        return INT, varint(value)
    if isinstance(value, uuid.UUID):
        return UUID, value.bytes
    text = str(value).encode("utf-8")
    return TEXT, varint(len(text)) + text


class Reader:
    """Reads a payload front to back; running off its end is ``BadToken("malformed")``."""

    def __init__(self, data: bytes) -> None:
        self.data, self.at = data, 0

    def take(self, count: int) -> bytes:
        if self.at + count > len(self.data):
            raise BadToken("malformed")
        chunk, self.at = self.data[self.at : self.at + count], self.at + count
        return chunk

    def varint(self) -> int:
        value = shift = 0
        while True:
            (byte,) = self.take(1)
            value |= (byte & 0x7F) << shift
            shift += 7
            if not byte & 0x80:
                return value
            if shift > 70:
                raise BadToken("malformed")

    def key(self, kind: int) -> Any:
        if kind == INT:
            return self.varint()
        if kind == UUID:
            return uuid.UUID(bytes=self.take(16))
        if kind == TEXT:
            try:
                return self.take(self.varint()).decode("utf-8")
            except UnicodeDecodeError:
                raise BadToken("malformed") from None
        raise BadToken("malformed")


def encode(data: bytes) -> str:
    """Lower-case base32 without padding: survives a local part's case folding."""
    return base64.b32encode(data).decode("ascii").rstrip("=").lower()


def decode(text: str) -> bytes:
    """The bytes of :func:`encode`'s text, in either case; ``BadToken`` otherwise."""
    try:
        data = base64.b32decode(text.upper() + "=" * (-len(text) % 8))
    except (binascii.Error, ValueError):
        raise BadToken("malformed") from None
    # One spelling per token: unused low bits of the last character must be zero.
    if encode(data) != text.lower():
        raise BadToken("malformed")
    return data
