"""Remembered answers of validators that declared them cacheable.

One bounded :class:`ExpiringLru` per validator, keyed by the address exactly as sent
plus the context fields the validator said its answer depends on. Only final answers
are kept (accept, abstain, permanent refusal); a temporary failure is asked again.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Hashable
from dataclasses import dataclass, fields
from typing import Any, Literal

from django_inbound_smtp.conf import get_settings
from django_inbound_smtp.envelope import RecipientContext, ResolvedRecipient
from django_inbound_smtp.replies import Reply
from django_inbound_smtp.validators._expiring import MISS, ExpiringLru, Miss

__all__ = ["CachePolicy", "clear", "policy_of", "recall", "remember"]

Answer = ResolvedRecipient | Reply | None

_CONTEXT_FIELDS = frozenset(field.name for field in fields(RecipientContext))


@dataclass(frozen=True, slots=True)
class CachePolicy:
    """How long a validator's answers may be reused, and what they depend on.

    ``ttl``: seconds, never more than ``DIRECTORY_TTL`` (``None``: ``DIRECTORY_TTL``).
    ``vary_on``: names of :class:`RecipientContext` fields the answer depends on, besides
    the address (``()``: the address alone decides).
    """

    ttl: float | None = None
    vary_on: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        unknown = set(self.vary_on) - _CONTEXT_FIELDS
        if unknown:
            raise ValueError(
                f"vary_on names unknown context fields {sorted(unknown)}; "
                f"known: {sorted(_CONTEXT_FIELDS)}"
            )

    def max_age(self) -> float:
        bound = get_settings().DIRECTORY_TTL
        return bound if self.ttl is None else min(self.ttl, bound)

    def key(self, address: str, context: RecipientContext) -> Hashable:
        return (address, *(getattr(context, name) for name in self.vary_on))


_caches: dict[Callable[..., Any], ExpiringLru[Answer]] = {}
_caches_lock = threading.Lock()


def policy_of(validator: Callable[..., Any]) -> CachePolicy | None:
    """The validator's declared policy: its ``cacheable`` attribute (``True`` or a
    :class:`CachePolicy`), or ``None`` when its answers must not be reused."""
    declared = getattr(validator, "cacheable", None)
    if declared is True:
        return CachePolicy()
    return declared if isinstance(declared, CachePolicy) else None


def _cache(validator: Callable[..., Any]) -> ExpiringLru[Answer]:
    with _caches_lock:
        cache = _caches.get(validator)
        if cache is None:
            cache = _caches[validator] = ExpiringLru(get_settings().DIRECTORY_MAX_SIZE)
        return cache


def recall(
    validator: Callable[..., Any], policy: CachePolicy, address: str, context: RecipientContext
) -> Answer | Literal[Miss.MISS]:
    """The remembered answer, or :data:`MISS`. No I/O."""
    max_age = policy.max_age()
    if max_age <= 0:
        return MISS
    key = policy.key(address, context)
    return _cache(validator).get(key, max_age=max_age, now=time.monotonic())


def remember(
    validator: Callable[..., Any],
    policy: CachePolicy,
    address: str,
    context: RecipientContext,
    answer: Answer,
    *,
    asked_at: float,
) -> None:
    """Keep ``answer`` (asked at monotonic ``asked_at``) unless it is temporary."""
    if policy.max_age() <= 0 or (isinstance(answer, Reply) and not answer.is_permanent):
        return
    _cache(validator).put(policy.key(address, context), answer, read_at=asked_at)


def clear() -> None:
    """Forget every remembered answer."""
    with _caches_lock:
        _caches.clear()
