"""Raw header values as text: undeclared 8-bit bytes decoded as bodies are.

Private to ``parsing``. A header has no charset of its own: RFC 2047 encoded words
declare one for themselves (decoded afterwards, as before), but raw 8-bit bytes are
only legal as UTF-8 (RFC 6532). Older clients write them in the charset of the
message's body instead. Both the summary taken before the ``250`` and the full parse
use :class:`HeaderText`, which sends such bytes through the body's chain
(``_charsets.decode_undeclared``: UTF-8, the message's declared charset, windows-1252),
so a header reads the same in the list, the detail page and the parsed headers.
"""

from __future__ import annotations

from collections.abc import Callable
from email.message import Message

from django_inbound_smtp.parsing._charsets import decode_undeclared

__all__ = ["UNDECLARED", "HeaderText", "message_charset", "undeclared_defect"]

#: The defect recorded when header bytes were not UTF-8 and a fallback decoded them.
UNDECLARED = "UndeclaredHeaderCharset"
_CONTINUATION = 0b1000_0000  # 10xxxxxx


def undeclared_defect(name: str, used: str) -> str:
    """The defect text for header ``name`` decoded as ``used`` (no part number)."""
    return f"{UNDECLARED}: 8-bit {name} decoded as {used}"


def message_charset(root: Message) -> str | None:
    """The charset ``root`` declares: its own Content-Type's ``charset``, else that of
    the first ``text/*`` part with one (document order, not inside an attached
    message); ``None`` if there is none. Iterative: the tree's depth is the caller's."""
    stack = [root]
    while stack:
        part = stack.pop()
        try:
            charset = part.get_content_charset() if part is root else None
            if charset:
                return str(charset)
            maintype = part.get_content_maintype()
            if part.is_multipart():
                if maintype != "message":
                    children = [c for c in part.get_payload() if isinstance(c, Message)]
                    stack.extend(reversed(children))
            elif maintype == "text" and part is not root:
                charset = part.get_content_charset()
                if charset:
                    return str(charset)
        except Exception:  # a malformed parameter: that part declares nothing
            continue
    return None


def _whole_characters(data: bytes) -> bytes:
    """``data`` without a UTF-8 character split at its end (the value was cut there),
    which would otherwise fail UTF-8 and send the whole value to a fallback."""
    for back in range(1, min(4, len(data)) + 1):
        byte = data[-back]
        if byte & 0b1100_0000 == _CONTINUATION:
            continue
        if byte >= 0b1100_0000:  # a lead byte: how long its character is
            length = 2 if byte < 0b1110_0000 else 3 if byte < 0b1111_0000 else 4
            if back < length:
                return data[:-back]
        break
    return data


class HeaderText:
    """Decodes the raw values of one message's headers.

    ``charset`` finds the message's declared charset; it is called once, and only if
    some value has 8-bit bytes that are not UTF-8 (the summary taken before the
    ``250`` then reads the start of the body for it).
    """

    def __init__(self, charset: Callable[[], str | None]) -> None:
        self._find: Callable[[], str | None] | None = charset
        self._charset: str | None = None

    def charset(self) -> str | None:
        """The message's declared charset (``None`` if none, or it cannot be read)."""
        if self._find is not None:
            find, self._find = self._find, None
            try:
                self._charset = find()
            except Exception:  # a structure the parser refuses: no charset, then
                self._charset = None
        return self._charset

    def decode(self, value: str, *, limit: int | None = None) -> tuple[str, str]:
        """``(text, used)``: ``value`` from the parser (8-bit bytes kept as lone
        surrogates, surrogateescape) with those bytes decoded, cut to ``limit``
        characters first. ``used`` is ``""`` when they were UTF-8 (or there were
        none), else the charset that decoded them (a defect for the caller)."""
        cut = limit is not None and len(value) > limit
        if cut:
            value = value[:limit]
        if value.isascii():
            return value, ""
        try:
            data = value.encode("utf-8", "surrogateescape")
        except UnicodeEncodeError:  # a lone surrogate surrogateescape did not make
            data = value.encode("utf-8", "replace")
        if cut:
            data = _whole_characters(data)
        return decode_undeclared(data, self.charset)
