"""Decoding a text body with the charset its part declares, whatever that says.

Private to ``parsing.mime``. Only Python's text codecs are used: ``bytes.decode``
refuses the bytes-to-bytes ones (``charset=zlib`` or ``base64`` is a ``LookupError``
here, never a decompression bomb), so a hostile label can do no more than fail.
"""

from __future__ import annotations

import codecs

from django_inbound_smtp.parsing import clean_text

__all__ = ["decode_text"]

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


def _fallback(data: bytes, *, why: str) -> tuple[str, str]:
    try:
        return data.decode("utf-8"), f"{why}, decoded as utf-8"
    except UnicodeDecodeError:
        # windows-1252 maps every byte but five; those five become U+FFFD.
        return data.decode("cp1252", "replace"), f"{why}, decoded as windows-1252"


def decode_text(data: bytes, charset: str | None) -> tuple[str, str]:
    """``(text, note)``: ``data`` decoded as ``charset`` declares; never raises.

    ``note`` is ``""`` when the bytes decoded as declared (or through a superset in
    ``_SUPERSETS``), else it says what was done instead, for the defects list:
    no charset or us-ascii with 8-bit bytes → UTF-8 if valid, else windows-1252;
    an unknown charset → the same, noted; bytes invalid in a known charset → U+FFFD.
    """
    if not charset:
        # RFC 2045 says us-ascii; 8-bit mail without a label is UTF-8 far more often.
        try:
            return data.decode("utf-8"), ""
        except UnicodeDecodeError:
            return _fallback(data, why="no charset declared")
    try:
        codec = codecs.lookup(charset).name
        "".encode(codec)  # raises LookupError for a codec that is not a text encoding
    except Exception:  # LookupError; ValueError for a NUL in the name
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
