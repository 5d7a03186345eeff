"""Where, in raw input, the next line that may end a MIME part starts.

Private to ``_lines``: ``Lines`` hands a body on in bytes, in runs that each stop before
a line that may end the part; ``Separators`` finds that line. Such a line starts with
``--`` and is a separator line (a separator asked for through ``get_boundary``, then
``--``, blanks, a line end), or is the last line, not complete yet, and may still
become one. While the separators are few, one pattern finds separator lines; past
``_FEW``, the pattern finds every line starting with ``--`` and each is looked up in a
set.
"""

from __future__ import annotations

import re

__all__ = ["EOL_BYTES", "LINE_END", "Separators"]

LINE_END = re.compile(rb"[\r\n]")
EOL_BYTES = b"\r\n"
# Up to this many separators, one pattern finds separator lines; past it, every line
# starting with "--" is looked up.
_FEW = 32


class Separators:
    """The separators asked for in one parse (``separators``, which grows as the parser
    asks), as bytes and as a pattern, remade when a separator is added."""

    def __init__(self, separators: set[str]) -> None:
        self._separators = separators
        self._known = -1  # len(_separators) when the fields below were made
        self._bytes: set[bytes] = set()
        self._closes: list[bytes] = []
        self._longest = 0
        self._pattern = re.compile(b"(?!)")

    def find(self, buffer: bytearray, pos: int, *, bol: bool, closed: bool) -> int:
        """Where the first line from ``pos`` on in ``buffer`` that may end the part
        starts, or -1; ``bol``: ``pos`` is at the start of a line; ``closed``: no more
        input comes.
        """
        pattern = self._separator_lines()
        found = pattern.search(buffer, pos)
        while found is not None:
            start = found.start()
            at_line_start = buffer[start - 1] in EOL_BYTES if start > pos else bol
            if at_line_start and self._is_separator_line(buffer, start, found.end()):
                return start
            found = pattern.search(buffer, start + 1)
        if closed:
            return -1
        last = max(buffer.rfind(b"\n", pos), buffer.rfind(b"\r", pos)) + 1
        if last == 0 and not bol:
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
            self._bytes = separators
            self._closes = [separator + b"--" for separator in separators]
            self._longest = max(map(len, self._closes), default=0)
            ends = b"(?:--)?[ \t]*(?:[\r\n]|\\Z)" if len(separators) <= _FEW else b""
            names = b"|".join(re.escape(s[2:]) for s in sorted(separators))
            names = (names if separators else b"(?!)") if len(separators) <= _FEW else b""
            # Starting with "--", the search runs at the speed of a substring search.
            self._pattern = re.compile(b"--(?:" + names + b")" + ends)
        return self._pattern

    def _is_separator_line(self, buffer: bytearray, start: int, end: int) -> bool:
        if len(self._bytes) <= _FEW:
            return True  # the pattern matched the whole line
        match = LINE_END.search(buffer, end)
        if match is None:
            return True  # may still become one
        key = bytes(buffer[start : match.start()]).rstrip(b" \t")
        separators = self._bytes
        return key in separators or (key.endswith(b"--") and key[:-2] in separators)
