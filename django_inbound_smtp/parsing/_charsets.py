"""Decoding text: a body with the charset its part declares, whatever that says, and
8-bit bytes whose charset nobody declared (a body without a label, a raw header).

Private to ``parsing``. Only Python's text codecs are used: ``bytes.decode``
refuses the bytes-to-bytes ones (``charset=zlib`` or ``base64`` is a ``LookupError``
here, never a decompression bomb), so a hostile label can do no more than fail.

Undeclared 8-bit bytes, in a body or a header, go through one chain,
:func:`decode_undeclared`: UTF-8 if they are valid UTF-8 (RFC 6532 allows it in
headers, and unlabelled 8-bit mail is UTF-8 far more often than not), else the
message's declared charset if it has one and the bytes are valid in it, else
windows-1252, the last resort: it maps every byte but five (0x81, 0x8D, 0x8F, 0x90,
0x9D), which become U+FFFD, so it never fails.
"""

from __future__ import annotations

import codecs
import functools
from collections.abc import Callable

from django_inbound_smtp.parsing import clean_text

__all__ = ["LAST_RESORT", "decode_text", "decode_undeclared", "fallback_codec"]

#: What undeclared 8-bit bytes are decoded as when nothing else fits.
LAST_RESORT = "windows-1252"
# Printable ASCII: a charset that does not encode it as itself cannot be what the
# bytes of a header (whose structure is ASCII) are in: utf-16, utf-7, unicode_escape.
_PRINTABLE = bytes(range(0x20, 0x7F)).decode("ascii")

# Labels routinely used for text in a wider superset: decoding with the superset leaves
# conforming text as it is and rescues the rest. The WHATWG Encoding Standard (what
# browsers do) makes the same substitutions. Keys are Python's canonical codec names.
_SUPERSETS = {
    "iso8859-1": "cp1252",  # Outlook's "iso-8859-1" with smart quotes in 0x80-0x9F
    "gb2312": "gb18030",
    "gbk": "gb18030",
    "shift_jis": "cp932",  # Microsoft's Shift_JIS, with the NEC and IBM extensions
    "euc_kr": "cp949",  # also what "ks_c_5601-1987" names in Python
}


def _label(charset: str) -> str:
    return "'" + clean_text(charset, limit=64) + "'"


def _text_codec(charset: str) -> str | None:
    """Python's name for the text codec ``charset`` labels, or ``None``."""
    try:
        codec = codecs.lookup(charset).name
        "".encode(codec)  # raises LookupError for a codec that is not a text encoding
    except Exception:  # LookupError; ValueError for a NUL in the name
        return None
    return codec


@functools.lru_cache(maxsize=64)
def fallback_codec(charset: str | None) -> str | None:
    """The codec (through its superset) that undeclared header bytes may be tried in
    for a message declaring ``charset``; ``None`` for no charset, an unknown one, or
    one that does not write ASCII as ASCII (utf-16, utf-7, unicode_escape...)."""
    codec = _text_codec(charset) if charset else None
    if codec is None or codec in ("ascii", "utf-8"):
        return None  # (UTF-8 is tried first anyway)
    codec = _SUPERSETS.get(codec, codec)
    try:
        if _PRINTABLE.encode(codec) != _PRINTABLE.encode("ascii"):
            return None
    except Exception:  # UnicodeError: a codec that cannot encode ASCII at all
        return None
    return codec


def decode_undeclared(
    data: bytes, charset: str | Callable[[], str | None] | None = None
) -> tuple[str, str]:
    """``(text, used)``: 8-bit ``data`` of no declared charset, decoded; never raises.

    The chain, for bodies and headers alike: UTF-8 if valid (``used`` is ``""``),
    else ``charset`` (the message's declared charset, see :func:`fallback_codec`; a
    callable is only called when UTF-8 failed) if the bytes are valid in it (``used``
    is its label), else windows-1252 with the five bytes it leaves undefined as
    U+FFFD (``used`` is ``LAST_RESORT``).
    """
    try:
        return data.decode("utf-8"), ""
    except UnicodeDecodeError:
        pass
    if callable(charset):
        charset = charset()
    codec = fallback_codec(charset)
    if codec is not None and charset:
        try:
            return data.decode(codec), clean_text(charset, limit=64).lower()
        except Exception:  # UnicodeDecodeError; UnicodeError from an odd codec
            pass
    return data.decode("cp1252", "replace"), LAST_RESORT


def _fallback(data: bytes, *, why: str) -> tuple[str, str]:
    text, used = decode_undeclared(data)
    return text, f"{why}, decoded as {used or 'utf-8'}"


def decode_text(data: bytes, charset: str | None) -> tuple[str, str]:
    """``(text, note)``: ``data`` decoded as ``charset`` declares; never raises.

    ``note`` is ``""`` when the bytes decoded as declared (or through a superset in
    ``_SUPERSETS``), else it says what was done instead, for the defects list:
    no charset or us-ascii with 8-bit bytes → UTF-8 if valid, else windows-1252;
    an unknown charset → the same, noted; bytes invalid in a known charset → U+FFFD.
    """
    if not charset:
        # RFC 2045 says us-ascii; 8-bit mail without a label is UTF-8 far more often.
        text, used = decode_undeclared(data)
        return text, f"no charset declared, decoded as {used}" if used else ""
    codec = _text_codec(charset)
    if codec is None:
        return _fallback(data, why=f"unknown charset {_label(charset)}")
    if codec == "ascii":
        if data.isascii():
            return data.decode("ascii"), ""
        return _fallback(data, why=f"8-bit bytes under charset {_label(charset)}")
    wider = _SUPERSETS.get(codec, codec)
    for name in dict.fromkeys((wider, codec)):
        try:
            return data.decode(name), ""
        except UnicodeDecodeError:
            continue
        except Exception:  # the "undefined" codec raises UnicodeError for any input
            return _fallback(data, why=f"charset {_label(charset)} cannot decode")
    return data.decode(wider, "replace"), (
        f"bytes not valid in charset {_label(charset)} replaced with U+FFFD"
    )
