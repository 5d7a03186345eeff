"""The admin's search language: Mailpit-style operators, parsed without Django.

``from:alice subject:"monthly report" has:attachment after:2026-01-01 invoice`` becomes a
list of terms that must all hold (AND). A word whose prefix before ``:`` is not one of
our operators (``Re:``, ``10:30``, ``https://…``) is an ordinary word, so pasting text
into the search box never fails; only a known operator with a bad value is an error.
"""

from __future__ import annotations

import datetime
import re
from collections.abc import Collection, Iterator
from dataclasses import dataclass
from typing import Literal

__all__ = ["OPERATORS", "SearchSyntaxError", "Term", "parse_search"]

Kind = Literal[
    "text", "from", "to", "subject", "filename", "attachment", "status", "before", "after"
]

#: Every operator the search box understands, mapped to the kind of term it makes.
OPERATORS: dict[str, Kind] = {
    "from": "from",
    "to": "to",
    "subject": "subject",
    "filename": "filename",
    "has": "attachment",
    "is": "status",
    "status": "status",
    "before": "before",
    "after": "after",
}

# Values of has: (one meaning, spelled as people type it).
_HAS_ATTACHMENT = frozenset({"attachment", "attachments", "attach"})

_ISO_DATE = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}", re.ASCII)

# A search box is typed by people: more terms than this is a paste gone wrong, and each
# term costs a subquery.
MAX_TERMS = 20


class SearchSyntaxError(ValueError):
    """A known operator with a value we cannot use; the message is shown to staff."""


@dataclass(frozen=True)
class Term:
    """One condition of a search. ``value`` is a date for before/after, else text."""

    kind: Kind
    value: str | datetime.date


def _tokens(query: str) -> Iterator[str]:
    """Split on whitespace outside double quotes; tokens keep their quotes.

    ``subject:"a b"`` is one token. An unclosed quote runs to the end of the query.
    """
    index, length = 0, len(query)
    while index < length:
        if query[index].isspace():
            index += 1
            continue
        start = index
        while index < length and not query[index].isspace():
            if query[index] == '"':
                end = query.find('"', index + 1)
                index = length if end < 0 else end
            index += 1
        yield query[start:index]


def _unquote(text: str) -> str:
    return text.replace('"', "").strip()


def _date(operator: str, value: str) -> datetime.date:
    try:
        # fromisoformat alone also takes 20260131 and week dates: one spelling only.
        if not _ISO_DATE.fullmatch(value):
            raise ValueError(value)
        return datetime.date.fromisoformat(value)
    except ValueError:
        raise SearchSyntaxError(
            f"{operator}: needs a date written YYYY-MM-DD, e.g. {operator}:2026-01-31 "
            f"(got {value!r})."
        ) from None


def _term(operator: str, kind: Kind, value: str, statuses: Collection[str]) -> Term:
    if not value:
        raise SearchSyntaxError(f"{operator}: needs a value, e.g. {_EXAMPLES[kind]}.")
    if kind in ("before", "after"):
        return Term(kind, _date(operator, value))
    if kind == "attachment":
        if value.lower() not in _HAS_ATTACHMENT:
            raise SearchSyntaxError(f"has: knows only has:attachment (got {value!r}).")
        return Term(kind, "yes")
    if kind == "status":
        if value.lower() not in statuses:
            known = ", ".join(sorted(statuses))
            raise SearchSyntaxError(f"{operator}: is one of {known} (got {value!r}).")
        return Term(kind, value.lower())
    return Term(kind, value)


_EXAMPLES: dict[Kind, str] = {
    "text": "invoice",
    "from": "from:alice@example.org",
    "to": "to:support@",
    "subject": 'subject:"monthly report"',
    "filename": "filename:.pdf",
    "attachment": "has:attachment",
    "status": "is:failed",
    "before": "before:2026-01-31",
    "after": "after:2026-01-01",
}


def parse_search(query: str, *, statuses: Collection[str]) -> list[Term]:
    """The terms of ``query``, all of which must hold; raises ``SearchSyntaxError``.

    ``statuses`` are the values ``is:`` and ``status:`` accept (lower case).
    """
    terms: list[Term] = []
    for token in _tokens(query):
        operator, colon, value = token.partition(":")
        # An operator is a known name before a colon outside quotes: "from:x" (quoted
        # whole) and Re: are words.
        kind = OPERATORS.get(operator.lower()) if colon and '"' not in operator else None
        if kind is None:
            if text := _unquote(token):
                terms.append(Term("text", text))
            continue
        terms.append(_term(operator.lower(), kind, _unquote(value), statuses))
    if len(terms) > MAX_TERMS:
        raise SearchSyntaxError(f"A search may hold at most {MAX_TERMS} terms.")
    return terms
