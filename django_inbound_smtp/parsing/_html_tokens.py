"""HTML as tokens, nested into elements, and its visible text; stdlib ``html.parser``.

Private to ``parsing.quoted_html``. Each token keeps its source, so a document with
some elements removed is written out as the sender wrote the rest. Bounded for hostile
bodies: tokens read, elements nested (deeper ones are read as siblings).
"""

from __future__ import annotations

import html
from dataclasses import dataclass, field
from html.parser import HTMLParser

from django_inbound_smtp.parsing._reply_markers import normalise

__all__ = ["BLOCK", "INVISIBLE", "MAX_TOKENS", "Element", "Tokens", "html_text", "tokenize"]

_VOID = frozenset("area base br col embed hr img input link meta param source track wbr".split())
BLOCK = frozenset(
    "address article aside blockquote body br dd div dl dt fieldset figure footer form h1 h2 "
    "h3 h4 h5 h6 header hr html li main nav ol p pre section table td th tr ul".split()
)
INVISIBLE = frozenset("head script style title template".split())
# Tokens taken apart at most (a larger body is kept whole by reply_html), and elements
# nested at most (deeper ones are read as siblings).
MAX_TOKENS = 100_000
MAX_DEPTH = 200


@dataclass
class Element:
    tag: str
    attrs: dict[str, str]
    start: int
    end: int = -1  # index of the end tag (== start for a void or unclosed element)
    children: list[Element] = field(default_factory=list)
    text: str = ""  # visible text, white space folded


class Tokens(HTMLParser):
    """Tokens as ``(kind, tag, source)``; elements nested as the tags say."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=False)
        self.tokens: list[tuple[str, str, str]] = []
        self.root = Element("#root", {}, -1)
        self._open: list[Element] = [self.root]

    def _add(self, kind: str, tag: str, source: str) -> int:
        self.tokens.append((kind, tag, source))
        return len(self.tokens) - 1

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        index = self._add("start", tag, self.get_starttag_text() or "")
        element = Element(tag, {k: (v or "") for k, v in attrs}, index, index)
        self._open[-1].children.append(element)
        if tag not in _VOID and len(self._open) < MAX_DEPTH:
            self._open.append(element)

    def handle_startendtag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        index = self._add("void", tag, self.get_starttag_text() or "")
        self._open[-1].children.append(Element(tag, {k: (v or "") for k, v in attrs}, index, index))

    def handle_endtag(self, tag: str) -> None:
        index = self._add("end", tag, f"</{tag}>")
        for depth in range(len(self._open) - 1, 0, -1):
            if self._open[depth].tag == tag:  # close it and whatever was left open in it
                for element in self._open[depth:]:
                    element.end = index
                del self._open[depth:]
                return

    def handle_data(self, data: str) -> None:
        self._add("data", "", data)

    def handle_entityref(self, name: str) -> None:
        self._add("data", "", f"&{name};")

    def handle_charref(self, name: str) -> None:
        self._add("data", "", f"&#{name};")

    def handle_comment(self, data: str) -> None:
        self._add("other", "", f"<!--{data}-->")

    def handle_decl(self, decl: str) -> None:
        self._add("other", "", f"<!{decl}>")

    def handle_pi(self, data: str) -> None:
        self._add("other", "", f"<?{data}>")

    def unknown_decl(self, data: str) -> None:
        self._add("other", "", f"<![{data}]>")

    def finish(self) -> None:
        self.close()
        last = len(self.tokens) - 1
        for element in self._open[1:]:
            element.end = last  # never closed: runs to the end
        self.root.end = last


def tokenize(source: str) -> Tokens:
    parser = Tokens()
    parser.feed(source)
    parser.finish()
    return parser


class _TextWriter:
    """Lines of visible text, written token by token."""

    def __init__(self) -> None:
        self.lines: list[str] = []
        self.current: list[str] = []
        self.pre = 0

    def end_line(self, *, force: bool = False) -> None:
        joined = "".join(self.current)
        text = joined.rstrip() if self.pre else normalise(joined)
        if text or force:
            self.lines.append(text)
        self.current.clear()

    def data(self, text: str) -> None:
        if not self.pre:
            self.current.append(text.replace("\n", " ") if text.strip() else " ")
            return
        *done, rest = text.split("\n")
        for piece in done:
            self.current.append(piece)
            self.end_line(force=True)
        self.current.append(rest)

    def tag(self, kind: str, tag: str) -> None:
        if tag == "br":
            self.end_line(force=True)
            return
        self.end_line()
        if tag == "pre":
            self.pre = self.pre + 1 if kind == "start" else max(self.pre - 1, 0)
        if tag == "p" and kind == "end" and self.lines and self.lines[-1]:
            self.lines.append("")


def html_text(source: str) -> str:
    """The visible text of the HTML ``source``: a line per block or ``<br>``, one blank
    line after a paragraph, white space folded (kept in ``<pre>``)."""
    writer = _TextWriter()
    hidden = 0
    for kind, tag, raw in tokenize(source).tokens:
        if tag in INVISIBLE and kind in ("start", "end"):
            hidden = hidden + 1 if kind == "start" else max(hidden - 1, 0)
        elif hidden:
            continue
        elif kind == "data":
            writer.data(html.unescape(raw))
        elif tag in BLOCK:
            writer.tag(kind, tag)
    writer.end_line()
    return "\n".join(line.rstrip() for line in _trim(writer.lines))


def _trim(lines: list[str]) -> list[str]:
    """``lines`` without blank lines at both ends, and one blank line at most in a row."""
    out: list[str] = []
    for line in lines:
        if line or (out and out[-1]):
            out.append(line)
    while out and not out[-1]:
        out.pop()
    return out
