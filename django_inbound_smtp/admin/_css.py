"""Remote references in the sender's CSS, found the way a browser reads them.

A regular expression over the raw text misses what CSS escapes hide (``\\75 rl(``,
``url(\\68 ttps://…)``) and the references that are no ``url()``: the strings of
``image-set()`` (and ``-webkit-image-set()``) and of ``@import``. This scanner walks
the text token by token (comments, strings, function names, at-keywords), decodes
each token's escapes (CSS Syntax 3, §4.3.7) and replaces a token naming a remote URL
with an inert one; everything else is written back exactly as the sender wrote it
(decoded text is never written: ``\\3c /style>`` must stay an escape).
"""

from __future__ import annotations

import re
from collections.abc import Callable

__all__ = ["BLOCKED_URL", "neutralise", "unescape"]

BLOCKED_URL = "about:invalid"

# Atomic and possessive throughout: "\41" read as "\4" then "1" is another way to
# match the same text, and a failed match would try them all (2^n for n escapes).
_ESCAPE = r"(?>\\(?:[0-9a-fA-F]{1,6}[ \t\n\r\f]?|[^\n\r\f0-9a-fA-F]))"
_IDENT = rf"(?:[-\w]|{_ESCAPE})++"
_STRING = rf""""(?:[^"\\\n]|{_ESCAPE}|\\\n)*+"?|'(?:[^'\\\n]|{_ESCAPE}|\\\n)*+'?"""
_TOKEN = re.compile(
    rf"(?P<comment>/\*.*?(?:\*/|\Z))"
    rf"|(?P<string>{_STRING})"
    rf"|@(?P<at>{_IDENT})"
    # A name is matched whole, "(" or not: trying every suffix of a long name for a
    # "(" would make the scan quadratic in it.
    rf"|(?P<name>{_IDENT})(?P<call>\()?"
    rf"|(?P<open>\()"
    rf"|(?P<close>\))"
    rf"|(?P<end>;)",
    re.DOTALL,
)
# The argument of url(...): a string, or an unquoted URL up to the ")".
# "(" cannot be in an unquoted URL (CSS Syntax 3, §4.3.6): leaving it out also stops
# "url(url(url(..." from scanning to the end once per "url(".
_URL_ARGUMENT = re.compile(
    rf"""[ \t\n\r\f]*+(?:{_STRING}|(?:[^()"'\\ \t\n\r\f]|{_ESCAPE})*+)[ \t\n\r\f]*+\)"""
)
_ONE_ESCAPE = re.compile(rf"{_ESCAPE}|\\\n")


def _unescape_one(match: re.Match[str]) -> str:
    text = match.group()
    if text == "\\\n":
        return ""  # a line continuation inside a string
    digits = text[1:].strip()
    if all(c in "0123456789abcdefABCDEF" for c in digits) and digits:
        code = int(digits, 16)
        return chr(code) if 0 < code <= 0x10FFFF and not 0xD800 <= code <= 0xDFFF else "\ufffd"
    return text[1:]


def unescape(text: str) -> str:
    """``text`` with its CSS escapes decoded."""
    return _ONE_ESCAPE.sub(_unescape_one, text)


def _unquote(token: str) -> str:
    token = token.strip(" \t\n\r\f")
    if token[:1] in {'"', "'"}:
        token = token[1:-1] if len(token) > 1 and token[-1] == token[0] else token[1:]
    return unescape(token)


def neutralise(text: str, *, is_remote: Callable[[str], bool], block: bool) -> tuple[str, int]:
    """``text`` with every remote reference replaced (when ``block``), and their count.

    References: ``url()`` however spelt, the strings of a ``*image-set()`` function
    and of an ``@import``."""
    out: list[str] = []
    found = 0
    # Open functions, innermost last: True for an image-set, whose strings are URLs.
    stack: list[bool] = []
    importing = False
    position = 0
    for match in _TOKEN.finditer(text):
        if match.start() < position:
            continue  # inside a url(...) already consumed
        out.append(text[position : match.start()])
        position = match.end()
        token = match.group()
        kind = "function" if match.group("call") else match.lastgroup
        if kind == "string" and (importing or (stack and stack[-1])):
            if is_remote(_unquote(token)):
                found += 1
                token = f'"{BLOCKED_URL}"' if block else token
        elif kind == "at":
            importing = unescape(match.group("at")).lower() == "import"
        elif kind == "end":
            importing = False
        elif kind == "open":
            stack.append(False)
        elif kind == "close" and stack:
            stack.pop()
        elif kind == "function":
            name = unescape(match.group("name")).lower()
            argument = _URL_ARGUMENT.match(text, position) if name == "url" else None
            if argument is not None:
                position = argument.end()
                if is_remote(_unquote(argument.group()[:-1])):
                    found += 1
                    token = f"url({BLOCKED_URL})" if block else token + argument.group()
                else:
                    token += argument.group()
            else:
                stack.append(name.endswith("image-set"))
        out.append(token)
    out.append(text[position:])
    return "".join(out), found
