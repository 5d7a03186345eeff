"""The new part of an HTML reply: the body without the quote containers mail clients
write, and its text.

Pure (stdlib ``html.parser``, no Django). The HTML is tokenized, the tokens nested
into elements, and whole elements removed; the rest is written out as it came (the
sender's markup, not ours: still hostile, never render it unsanitized). Removed:

* quote containers, with the attribution inside or just before them: Gmail's
  ``div.gmail_quote``, Apple Mail's and Thunderbird's ``blockquote type="cite"``
  (with ``div.moz-cite-prefix``), Yahoo's ``div.yahoo_quoted``, Proton's
  ``div.protonmail_quote``; as in text, only a quote before the first or after the
  last new text: an inline reply keeps the quotes between its answers;
* everything from Outlook's reply header on (``div#appendonsend``,
  ``div#divRplyFwdMsg``, ``#mail-editor-reference-message-container``, or a block
  whose text is a "From: / Sent: / To:" block or ``-----Original Message-----``);
* signature blocks (``div.gmail_signature`` with its ``-- ``, ``.moz-signature``,
  Proton's and Outlook mobile's) and "Sent from my iPhone" blocks after the text.
"""

from __future__ import annotations

import html

from django_inbound_smtp.parsing._html_tokens import (
    BLOCK,
    INVISIBLE,
    MAX_TOKENS,
    Element,
    Tokens,
    html_text,
    tokenize,
)
from django_inbound_smtp.parsing._reply_markers import (
    is_attribution,
    is_forward_marker,
    is_forward_subject,
    is_header_block,
    is_mobile_line,
    is_original_marker,
    normalise,
)

__all__ = ["html_text", "reply_html"]

_QUOTE_CLASSES = frozenset({"gmail_quote", "yahoo_quoted", "protonmail_quote", "moz-cite-prefix"})
_CUT_IDS = frozenset({"appendonsend", "divrplyfwdmsg", "mail-editor-reference-message-container"})
_SIGNATURE_CLASSES = frozenset(
    {"gmail_signature", "gmail_signature_prefix", "moz-signature", "protonmail_signature_block"}
)
_SIGNATURE_IDS = frozenset(
    {"signature", "ms-outlook-mobile-signature", "composer_signature", "ymail_android_signature"}
)
# Text kept per element for the marker tests (a header block is a few short lines).
_TEXT_KEPT = 600


def reply_html(source: str, *, subject: str = "") -> str:
    """``source`` (an HTML body) without its quoted history and signature; ``""``
    when nothing new is left."""
    parsed = tokenize(source)
    tokens = parsed.tokens
    if len(tokens) > MAX_TOKENS:
        return source  # too large to take apart safely: nothing is removed, nothing lost
    removed = _Removal(len(tokens))
    if not _find_removals(parsed, tokens, removed, forward=is_forward_subject(subject)):
        return ""  # no new text left
    return "".join(
        source for (_k, _t, source), keep in zip(tokens, removed.kept, strict=True) if keep
    )


class _Removal:
    """Which tokens are kept, as elements are removed."""

    def __init__(self, count: int) -> None:
        self.kept = [True] * count

    def element(self, element: Element) -> None:
        for index in range(element.start, min(element.end, len(self.kept) - 1) + 1):
            self.kept[index] = False

    def cut(self, element: Element, elements: list[Element]) -> None:
        """Everything from ``element`` on, except the end tags of the elements open
        around it (so the document stays balanced)."""
        closing = {e.end for e in elements if e.start < element.start < e.end}
        for index in range(element.start, len(self.kept)):
            if index not in closing:
                self.kept[index] = False


def _classes(element: Element) -> set[str]:
    return set(element.attrs.get("class", "").lower().split())


def _fill_text(element: Element, tokens: list[tuple[str, str, str]]) -> str:
    """Set the visible text of ``element`` and of its descendants (the start of it:
    ``_TEXT_KEPT`` characters, enough for the marker tests); return it."""
    parts: list[str] = []
    size = 0
    position = element.start + 1
    for child in element.children:
        child_text = _fill_text(child, tokens) if child.tag not in INVISIBLE else ""
        if size <= _TEXT_KEPT:  # every child gets its text; the parent keeps a start
            parts.append(_data(tokens, position, child.start))
            parts.append(f"\n{child_text}\n" if child.tag in BLOCK else child_text)
            size += len(parts[-2]) + len(parts[-1])
        position = child.end + 1
    if size <= _TEXT_KEPT:
        parts.append(_data(tokens, position, element.end))
    lines = (normalise(line) for line in "".join(parts)[:_TEXT_KEPT].split("\n"))
    element.text = "\n".join(line for line in lines if line)
    return element.text


def _data(tokens: list[tuple[str, str, str]], start: int, end: int) -> str:
    return "".join(
        html.unescape(source[: _TEXT_KEPT * 2])
        for kind, _t, source in tokens[max(start, 0) : end]
        if kind == "data"
    )


def _walk(root: Element) -> list[Element]:
    """Every element under ``root``, in document order (iteratively: no recursion)."""
    found: list[Element] = []
    stack = list(reversed(root.children))
    while stack:
        element = stack.pop()
        found.append(element)
        stack.extend(reversed(element.children))
    return found


def _inside(element: Element, outer: Element) -> bool:
    return outer.start <= element.start and element.end <= outer.end


def _is_cut(element: Element) -> bool:
    if element.attrs.get("id", "").lower() in _CUT_IDS:
        return True
    if element.tag not in ("div", "p") or not element.text:
        return False
    lines = element.text.split("\n")[:7]
    return is_original_marker(lines[0]) or is_header_block(lines)


def _is_quote(element: Element) -> bool:
    cited = element.tag == "blockquote" and element.attrs.get("type", "").lower() == "cite"
    if not cited and not _classes(element) & _QUOTE_CLASSES:
        return False
    return not is_forward_marker(element.text.split("\n", 1)[0])  # a forward is kept


def _is_signature(element: Element) -> bool:
    if _classes(element) & _SIGNATURE_CLASSES:
        return True
    if element.attrs.get("id", "").lower() in _SIGNATURE_IDS:
        return True
    text = element.text
    return element.tag in ("div", "p") and "\n" not in text and is_mobile_line(text)


def _previous_attribution(before_quote: list[Element]) -> Element | None:
    """The last block of ``before_quote`` (the quote's earlier siblings, ``<br>``
    skipped) when its text is an "On ... wrote:" line."""
    for before in reversed(before_quote):
        if before.tag == "br":
            continue
        if before.tag in ("div", "p") and "\n" not in before.text and is_attribution(before.text):
            return before
        return None
    return None


def _find_removals(
    parsed: Tokens, tokens: list[tuple[str, str, str]], removed: _Removal, *, forward: bool
) -> bool:
    """Mark what goes in ``removed``; whether any new text is left."""
    _fill_text(parsed.root, tokens)
    elements = _walk(parsed.root)
    parents = {
        id(child): (element, position)
        for element in [parsed.root, *elements]
        for position, child in enumerate(element.children)
    }
    if not forward:
        cut = next((element for element in elements if _is_cut(element)), None)
        if cut is not None:
            removed.cut(cut, elements)
    groups: list[list[Element]] = []
    for element in elements:
        if any(_inside(element, group[-1]) for group in groups[-1:]):
            continue  # inside a quote already taken
        if _is_signature(element):
            removed.element(element)
        elif _is_quote(element):
            parent, position = parents[id(element)]
            attribution = _previous_attribution(parent.children[max(position - 3, 0) : position])
            groups.append([attribution, element] if attribution else [element])
    hidden = _mask(
        [e for e in elements if e.tag in INVISIBLE] + [e for group in groups for e in group],
        len(tokens),
    )
    new = [
        index
        for index, (kind, _tag, source) in enumerate(tokens)
        if kind == "data"
        and removed.kept[index]
        and not hidden[index]
        and html.unescape(source).strip()
    ]
    # As in text: an inline reply (a quote between new text) keeps every quote up to
    # its last new text; otherwise quotes before the first and after the last go.
    first = new[0] if new else len(tokens)
    last = new[-1] if new else -1
    if any(first < group[0].start and group[-1].end < last for group in groups):
        first = -1
    for group in groups:
        start, end = group[0].start, group[-1].end
        if end < first or start > last:
            for element in group:
                removed.element(element)
    return bool(new)


def _mask(elements: list[Element], count: int) -> list[bool]:
    """Which of ``count`` tokens lie inside one of ``elements`` (in linear time)."""
    depth = [0] * (count + 1)
    for element in elements:
        depth[max(element.start, 0)] += 1
        depth[min(element.end, count - 1) + 1] -= 1
    inside, running = [], 0
    for index in range(count):
        running += depth[index]
        inside.append(running > 0)
    return inside
