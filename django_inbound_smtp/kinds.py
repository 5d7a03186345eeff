"""Kinds of mail, for your code: which kinds a handler or receiver wants. Pure.

Every message gets a ``kind`` when it is parsed (``InboundMessage.kind``): ``regular``,
``bounce``, ``auto_reply``, ``list`` or ``loop`` (README, *Kinds of mail*). Mailbox
handlers get only :data:`DEFAULT_HANDLER_KINDS` unless they say otherwise with
:func:`handles`; a ``loop`` never reaches a handler. ``message_received`` receivers get
every kind, unless they are decorated with :func:`handles` too.

::

    from django_inbound_smtp.kinds import BOUNCE, handles

    @handles(kinds={BOUNCE})
    def bounces(*, message, mailbox, recipients, **kwargs): ...
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Collection
from typing import Any, TypeVar

from django_inbound_smtp.parsing.kinds import AUTO_REPLY, BOUNCE, KINDS, LIST, LOOP, REGULAR

__all__ = [
    "AUTO_REPLY",
    "BOUNCE",
    "DEFAULT_HANDLER_KINDS",
    "KINDS",
    "LIST",
    "LOOP",
    "REGULAR",
    "accepts",
    "handles",
    "kinds_of",
]

#: What a mailbox handler gets when it does not say: people's mail, lists included.
#: Never bounces, automatic replies or loops: answering them is how mail loops start.
DEFAULT_HANDLER_KINDS: frozenset[str] = frozenset((REGULAR, LIST))
#: The attribute :func:`handles` sets on what it decorates.
ATTRIBUTE = "inbound_smtp_kinds"

F = TypeVar("F", bound=Callable[..., Any])


def handles(*, kinds: Collection[str]) -> Callable[[F], F]:
    """Declare the kinds of mail a handler or ``message_received`` receiver is for.

    On a function, the wrapper returns ``None`` without calling it when the
    ``message`` keyword argument is of another kind (a receiver needs nothing else);
    routing does not even pick a handler for a kind it does not handle. On a callable
    object that is not a plain function the attribute is set and the object returned
    as it is. A Celery task whose function was decorated (``@shared_task`` above
    ``@handles``) declares the kinds of its ``run``.
    ``loop`` cannot be asked for: a loop is never handed to a handler.
    """
    wanted = frozenset(kinds)
    unknown = wanted - set(KINDS)
    if unknown:
        raise ValueError(f"unknown kinds {sorted(unknown)}; known: {list(KINDS)}")
    if LOOP in wanted:
        raise ValueError("a loop is never handed to a handler: answering it feeds the loop")
    if not wanted:
        raise ValueError("kinds is empty: the handler would never run")

    def decorate(target: F) -> F:
        if not callable(target) or not hasattr(target, "__code__"):
            setattr(target, ATTRIBUTE, wanted)  # a Celery task, a callable object
            return target

        @functools.wraps(target)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            message = kwargs.get("message")
            if message is not None and getattr(message, "kind", None) not in wanted:
                return None
            return target(*args, **kwargs)

        setattr(wrapper, ATTRIBUTE, wanted)
        return wrapper  # type: ignore[return-value]

    return decorate


def kinds_of(target: object) -> frozenset[str]:
    """The kinds ``target`` handles: what :func:`handles` declared (on it, or on the
    function a Celery task runs), else :data:`DEFAULT_HANDLER_KINDS`."""
    # A Celery task: the kinds of the function it runs.
    for candidate in (target, getattr(target, "run", None)):
        declared = getattr(candidate, ATTRIBUTE, None)
        if isinstance(declared, frozenset):
            return declared
    return DEFAULT_HANDLER_KINDS


def accepts(target: object, kind: str) -> bool:
    """Whether a message of ``kind`` goes to the handler ``target`` (never a loop)."""
    return kind != LOOP and kind in kinds_of(target)
