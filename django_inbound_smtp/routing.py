"""Routing: which handler gets which recipient of a message, and why.

Routes are tried in order for each accepted recipient; the first whose every condition
holds wins. ``INBOUND_SMTP["ROUTES"]`` come first, in the order written; then the
recipient's mailbox, when it names a ``handler`` (a route of its own, named
``mailbox:<address>``). A recipient no route matches gets the ``message_received``
signal only. Conditions (all optional; a route with none matches everything):

- ``address``: a pattern over the whole recipient address, case-insensitive, with
  ``*`` and ``?`` wildcards (``ticket+*@example.org``, ``*@support.example.org``);
- ``tag``: a pattern over the plus-address tag (``""`` for "no tag", ``"*"`` for any);
- ``headers``: header name -> pattern over its decoded value (any of its values; the
  pattern ``*`` only asks that the header be present), e.g. ``{"List-Id": "*.example.org>"}``;
- ``kinds``: the message kinds it takes (``regular``, ``bounce``, ``auto_reply``,
  ``list``); without it, the kinds its handler handles (``kinds.handles``; by default
  ``regular`` and ``list``). A ``loop`` matches no route.

:func:`explain` is the decision with its reasons: ``manage.py inbound_route`` prints it,
the processing step stores the route's name on each recipient, the admin shows it.
"""

from __future__ import annotations

import fnmatch
import functools
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from django.core.signals import setting_changed
from django.dispatch import receiver
from django.utils.module_loading import import_string

from django_inbound_smtp import kinds
from django_inbound_smtp.conf import SETTINGS_NAME, get_settings

__all__ = [
    "Candidate",
    "Decision",
    "Route",
    "configured_routes",
    "explain",
    "handler_known",
    "mailbox_route",
    "parse_route",
    "resolve_handler",
    "route_errors",
]

_CONDITIONS = ("address", "tag", "headers", "kinds")


@dataclass(frozen=True)
class Route:
    """One route: a name, the handler it names, and its conditions."""

    name: str
    handler: str
    address: str | None = None
    tag: str | None = None
    headers: tuple[tuple[str, str], ...] = ()
    kinds: frozenset[str] | None = None

    def check(self, candidate: Candidate) -> tuple[bool, list[str]]:
        """Whether every condition holds, and one reason per condition tried (the
        first that fails ends the list)."""
        reasons: list[str] = []
        if self.address is not None:
            ok = _matches(self.address, candidate.address)
            reasons.append(
                f"address {candidate.address} {_verb(ok)} {self.address!r}",
            )
            if not ok:
                return False, reasons
        if self.tag is not None:
            ok = _matches(self.tag, candidate.tag) if self.tag else candidate.tag == ""
            shown = f"tag {candidate.tag!r}" if candidate.tag else "no tag"
            reasons.append(f"{shown} {_verb(ok)} {self.tag!r}")
            if not ok:
                return False, reasons
        for name, pattern in self.headers:
            values = candidate.header(name)
            ok = bool(values) and (pattern == "*" or any(_matches(pattern, v) for v in values))
            if not values:
                reasons.append(f"no {name} header (wanted {pattern!r})")
            else:
                reasons.append(f"{name} {values[0]!r} {_verb(ok)} {pattern!r}")
            if not ok:
                return False, reasons
        if candidate.kind is not None and not self._takes(candidate.kind, reasons):
            return False, reasons
        if not reasons:
            reasons.append("no conditions: matches everything")
        return True, reasons

    def _takes(self, kind: str, reasons: list[str]) -> bool:
        # Without a kinds condition, a route takes what its handler handles
        # (kinds.handles; by default regular and list mail). A loop, never.
        if kind == kinds.LOOP:
            reasons.append("kind loop: a loop is never handed to a handler")
            return False
        if self.kinds is not None:
            allowed, whose = self.kinds, ""
        else:
            allowed, whose = kinds.kinds_of(resolve_handler(self.handler)), " (the handler's)"
        ok = kind in allowed
        reasons.append(f"kind {kind} {'in' if ok else 'not in'} {sorted(allowed)}{whose}")
        return ok


@dataclass(frozen=True)
class Candidate:
    """What routing knows about one recipient of one message."""

    address: str
    tag: str = ""
    headers: Sequence[tuple[str, str]] = ()
    kind: str | None = None
    mailbox_address: str | None = None
    mailbox_handler: str = ""
    _index: dict[str, list[str]] = field(default_factory=dict, compare=False, repr=False)

    def header(self, name: str) -> list[str]:
        if not self._index and self.headers:
            for key, value in self.headers:
                self._index.setdefault(key.lower(), []).append(value)
        return self._index.get(name.lower(), [])


@dataclass(frozen=True)
class Decision:
    """The route a recipient gets (``None``: the signal only) and the trace of every
    route tried, in order: ``(route name, matched, reasons)``."""

    route: Route | None
    trace: list[tuple[str, bool, list[str]]]


def _matches(pattern: str, value: str) -> bool:
    return fnmatch.fnmatchcase(value.casefold(), pattern.casefold())


def _verb(ok: bool) -> str:  # noqa: FBT001 - a formatting helper
    return "matches" if ok else "does not match"


def parse_route(entry: Mapping[str, Any], *, position: int) -> Route:
    """A route from one ``ROUTES`` entry; ``ValueError`` says what is wrong with it."""
    if not isinstance(entry, Mapping):
        raise ValueError(f"route {position} must be a dict, got {type(entry).__name__}")
    unknown = set(entry) - {"name", "handler", *_CONDITIONS}
    if unknown:
        raise ValueError(f"route {position} has unknown keys: {', '.join(sorted(unknown))}")
    name = entry.get("name") or f"route {position}"
    handler = entry.get("handler")
    if not isinstance(handler, str) or not handler:
        raise ValueError(f"{name}: 'handler' must be a dotted path or a Celery task name")
    for key in ("address", "tag"):
        if key in entry and not isinstance(entry[key], str):
            raise ValueError(f"{name}: {key!r} must be a string pattern")
    headers = entry.get("headers", {})
    if not isinstance(headers, Mapping) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in headers.items()
    ):
        raise ValueError(f"{name}: 'headers' must map header names to string patterns")
    wanted = entry.get("kinds")
    if wanted is not None and (
        isinstance(wanted, str) or not all(isinstance(kind, str) for kind in wanted)
    ):
        raise ValueError(f"{name}: 'kinds' must be a list of kind names")
    if wanted is not None and (unknown := set(wanted) - set(kinds.KINDS)):
        raise ValueError(f"{name}: unknown kinds {sorted(unknown)}; known: {list(kinds.KINDS)}")
    if wanted is not None and kinds.LOOP in wanted:
        raise ValueError(f"{name}: a loop is never handed to a handler; remove 'loop'")
    return Route(
        name=str(name),
        handler=handler,
        address=entry.get("address"),
        tag=entry.get("tag"),
        headers=tuple(headers.items()),
        kinds=frozenset(wanted) if wanted is not None else None,
    )


@functools.cache
def configured_routes() -> tuple[Route, ...]:
    """``INBOUND_SMTP["ROUTES"]``, parsed once (the system check reports bad entries)."""
    return tuple(
        parse_route(entry, position=index)
        for index, entry in enumerate(get_settings().ROUTES, start=1)
    )


@receiver(setting_changed)
def _settings_changed(*, setting: str, **kwargs: Any) -> None:
    if setting == SETTINGS_NAME:
        configured_routes.cache_clear()


def mailbox_route(address: str, handler: str) -> Route:
    """The route of a mailbox that names a handler: its recipients, after ``ROUTES``."""
    return Route(name=f"mailbox:{address}", handler=handler)


def explain(candidate: Candidate, routes: Iterable[Route] | None = None) -> Decision:
    """The first route ``candidate`` matches, with the reasons for every route tried."""
    tried = list(configured_routes() if routes is None else routes)
    if candidate.mailbox_handler and candidate.mailbox_address:
        tried.append(mailbox_route(candidate.mailbox_address, candidate.mailbox_handler))
    trace: list[tuple[str, bool, list[str]]] = []
    for route in tried:
        ok, reasons = route.check(candidate)
        trace.append((route.name, ok, reasons))
        if ok:
            return Decision(route=route, trace=trace)
    return Decision(route=None, trace=trace)


def resolve_handler(path: str) -> Callable[..., Any] | None:
    """A handler's callable, or ``None`` when ``path`` names a Celery task instead."""
    try:
        target = import_string(path)
    except ImportError:
        return None
    return target if callable(target) else None


def handler_known(path: str, *, celery_tasks: Callable[[], Iterable[str]]) -> bool:
    """Whether ``path`` names an importable callable or a task of the project's app."""
    return resolve_handler(path) is not None or path in set(celery_tasks())


def route_errors(entries: Any, *, celery_tasks: Callable[[], Iterable[str]]) -> list[str]:
    """What is wrong with a ``ROUTES`` value: bad entries, and handlers that are
    neither importable callables nor tasks of the project's Celery app."""
    if not isinstance(entries, list | tuple):
        return [f"must be a list of routes, got {type(entries).__name__}"]
    problems: list[str] = []
    names: set[str] = set()
    for index, entry in enumerate(entries, start=1):
        try:
            route = parse_route(entry, position=index)
        except ValueError as error:
            problems.append(str(error))
            continue
        if route.name in names:
            problems.append(f"{route.name}: the name is used twice")
        names.add(route.name)
        if not handler_known(route.handler, celery_tasks=celery_tasks):
            problems.append(
                f"{route.name}: handler {route.handler!r} is neither an importable callable "
                "nor a task of the project's Celery app"
            )
    return problems
