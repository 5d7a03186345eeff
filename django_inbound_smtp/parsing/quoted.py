"""The new text of a reply: what the sender wrote, without the quoted history and the
signature.

Pure (no Django), linear in the text. The rules, in order (the README's "The new text
of a reply" has examples):

1. **History that is not quoted with** ``>``: Outlook's "From: / Sent: / To:" block
   (localized, or after a line of underscores), ``-----Original Message-----`` (and
   its translations), and an "On <date>, <name> wrote:" line followed by unquoted text
   (Yahoo). Everything from there on goes. A forward is kept whole: nothing is cut at
   or after a "Forwarded message" line, nor at a header block when the subject says
   it is a forward (``Fwd:``, ``FW:``, ``WG:`` ...).
2. **Signature**: from a ``-- `` line to the next quote (or the end).
3. **Mobile lines** ("Sent from my iPhone" ...) that end the text before a quote.
4. **Quotes** (``>`` lines) with their attribution line: a quote before the first new
   line (bottom-posting) and a quote after the last new line (top-posting) go. When new
   text stands *between* quotes (an inline reply), the reply is kept whole up to its
   last new line, the quotes between included: the answers need their questions, and
   nothing written is ever lost.
"""

from __future__ import annotations

from collections.abc import Sequence

from django_inbound_smtp.parsing._reply_markers import (
    is_attribution,
    is_closing,
    is_contact_line,
    is_forward_marker,
    is_forward_subject,
    is_header_block,
    is_mobile_line,
    is_original_marker,
    is_quoted,
    is_signature_separator,
    may_start_attribution,
    normalise,
)

__all__ = ["reply_text", "trim_blank"]

# How the lines of a reply are classified.
_TEXT, _BLANK, _QUOTE, _ATTRIBUTION, _SIGNATURE, _MOBILE = "tbqasm"


def reply_text(text: str, *, subject: str = "") -> str:
    """The new text of the reply ``text`` (a text/plain body); ``subject`` tells a
    forward (whose content is kept) from a reply. ``""`` when nothing new was written."""
    lines = text.replace("\r\n", "\n").replace("\r", "\n").split("\n")
    norm = [normalise(line) for line in lines]  # once: every test reads these
    end = _history_start(lines, norm, forward=is_forward_subject(subject))
    lines, norm = lines[:end], norm[:end]
    kinds = _classify(lines, norm)
    _mark_signature(lines, kinds)
    _mark_mobile(norm, kinds)
    _mark_contact_block(norm, kinds)
    new = [index for index, kind in enumerate(kinds) if kind == _TEXT]
    if not new:
        return ""
    first, last = new[0], new[-1]
    if _QUOTE in kinds[first:last]:
        first = 0  # an inline reply: kept whole up to its last new line
    kept = [
        line
        for line, kind in zip(lines[first : last + 1], kinds[first : last + 1], strict=True)
        if kind not in (_SIGNATURE, _MOBILE)
    ]
    return "\n".join(line.rstrip() for line in trim_blank(kept))


def trim_blank(lines: Sequence[str]) -> list[str]:
    """``lines`` without the blank lines at both ends."""
    start, end = 0, len(lines)
    while start < end and not lines[start].strip():
        start += 1
    while end > start and not lines[end - 1].strip():
        end -= 1
    return list(lines[start:end])


def _attribution_span(lines: list[str], norm: list[str], index: int) -> int:
    """How many lines (1 to 3) the attribution starting at ``index`` spans; 0 if none.

    Clients wrap a long attribution ("On ..., Bob <\\naddress> wrote:"): a line that
    starts like one is joined with the next one or two, unless one of those is a
    whole attribution that starts like one itself."""
    first = norm[index]
    if _is_attribution_line(first):
        return 1
    if not first or not may_start_attribution(first):
        return 0
    joined = first
    for count in (2, 3):
        if index + count > len(lines):
            return 0
        line = lines[index + count - 1]
        if not line.strip() or is_quoted(line) or _starts_attribution(norm[index + count - 1]):
            return 0
        joined = f"{joined} {norm[index + count - 1]}"
        if len(joined) > 400:
            return 0
        if _is_attribution_line(joined):
            return count
    return 0


def _starts_attribution(line: str) -> bool:
    # A later line that is a whole attribution and starts like one: that one is it.
    return may_start_attribution(line) and _is_attribution_line(line)


def _is_attribution_line(line: str) -> bool:
    return is_attribution(line.replace("< ", "<"))


def _next_filled(lines: list[str], index: int) -> int:
    while index < len(lines) and not lines[index].strip():
        index += 1
    return index


def _history_start(lines: list[str], norm: list[str], *, forward: bool) -> int:
    """Where history that is not ``>``-quoted starts; ``len(lines)`` if nowhere."""
    for index, raw in enumerate(lines):
        if is_quoted(raw) or not raw.strip():
            continue
        line = norm[index]
        if is_forward_marker(line):
            return len(lines)  # a forward: what follows is shared on purpose
        if is_original_marker(line) and not forward:
            return index
        if not forward and _may_start_header(line) and is_header_block(norm[index : index + 7]):
            return index
        span = _attribution_span(lines, norm, index)
        if span:
            after = _next_filled(lines, index + span)
            if after < len(lines) and not is_quoted(lines[after]):
                return index  # "On ... wrote:" and then the history unquoted (Yahoo)
    return len(lines)


def _may_start_header(line: str) -> bool:
    # Cheap first test: a "From:" line or a line of underscores, both short.
    return len(line) < 400 and (":" in line or line.startswith("____"))


def _classify(lines: list[str], norm: list[str]) -> list[str]:
    kinds = [_BLANK if not line.strip() else _QUOTE if is_quoted(line) else _TEXT for line in lines]
    index = 0
    while index < len(lines):
        span = _attribution_span(lines, norm, index) if kinds[index] == _TEXT else 0
        if span:
            after = _next_filled(lines, index + span)
            if after == len(lines) or kinds[after] == _QUOTE:
                kinds[index : index + span] = [_ATTRIBUTION] * span
            index += span
        else:
            index += 1
    return kinds


def _mark_signature(lines: list[str], kinds: list[str]) -> None:
    """A ``-- `` line and what follows it, up to the next quote or attribution."""
    inside = False
    for index, line in enumerate(lines):
        if kinds[index] in (_QUOTE, _ATTRIBUTION):
            inside = False
        elif kinds[index] == _TEXT and is_signature_separator(line):
            inside = True
        if inside:
            kinds[index] = _SIGNATURE


def _mark_mobile(norm: list[str], kinds: list[str]) -> None:
    """A "Sent from my ..." line that is the last text before a quote or the end."""
    following: str | None = None  # the kind of the next line that is not blank or signature
    for index in range(len(norm) - 1, -1, -1):
        kind = kinds[index]
        if kind in (_BLANK, _SIGNATURE):
            continue
        if (
            kind == _TEXT
            and following in (None, _QUOTE, _ATTRIBUTION)
            and is_mobile_line(norm[index])
        ):
            kinds[index] = _MOBILE
            continue  # "Sent from my iPhone" after "Get Outlook ..." is still trailing
        following = kind


def _mark_contact_block(norm: list[str], kinds: list[str]) -> None:
    """A signature without ``-- ``: after a closing ("Kind regards,") and a name, up
    to four short lines holding a phone number or a web address, ending the text
    before a quote or the end. The closing and the name are kept (the sender wrote
    them); the block after them goes."""
    after: list[str | None] = [None] * (len(norm) + 1)  # next kind not blank, from i on
    for index in range(len(norm) - 1, -1, -1):
        after[index] = after[index + 1] if kinds[index] == _BLANK else kinds[index]
    for index, kind in enumerate(kinds):
        if kind != _TEXT or not is_closing(norm[index]):
            continue
        block = index + 2  # the closing, the name, then the block
        end = block
        while end < len(norm) and end - block < 5 and kinds[end] == _TEXT:
            end += 1
        name = norm[index + 1] if index + 1 < len(norm) else ""
        candidate = norm[block:end]
        if (
            kinds[index + 1 : index + 2] == [_TEXT]
            and 0 < len(name) <= 60
            and 0 < len(candidate) <= 4
            and after[end] in (None, _QUOTE, _ATTRIBUTION)
            and any(is_contact_line(line) for line in candidate)
        ):
            kinds[block:end] = [_SIGNATURE] * (end - block)
