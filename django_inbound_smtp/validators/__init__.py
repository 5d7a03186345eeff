"""Recipient validators: the policy hook asked at RCPT time, and the chain that runs them.

A validator is a callable, sync or async, named by dotted path in
``INBOUND_SMTP["RECIPIENT_VALIDATORS"]``::

    def validator(address: str, *, context: RecipientContext) -> ResolvedRecipient | Reply | None

- return a :class:`~django_inbound_smtp.envelope.ResolvedRecipient` to accept;
- raise :class:`~django_inbound_smtp.exceptions.Rejected` /
  :class:`~django_inbound_smtp.exceptions.TemporaryFailure`, or return a 4xx/5xx
  :class:`~django_inbound_smtp.replies.Reply`, to refuse;
- return ``None`` to abstain and let the next validator decide.

If every validator abstains the address is for a domain nobody serves: ``550 5.7.1``.
We are never an open relay by default. Sync validators run in a worker thread; the
caller supplies how (see ``smtp/_bridge.py``), so the event loop never blocks.

**Answers from memory.** A validator marked with :func:`cacheable` (or carrying a
``cacheable = True`` attribute) has its final answers (accept, abstain, permanent refusal)
reused for the same address, and the context fields it names, for at most
``DIRECTORY_TTL`` seconds; a reused answer is given on the event loop, without calling
it. A validator may instead answer from its own memory: an ``answer_from_memory`` method
with the validator's signature that never does I/O and returns :data:`MISS` when it
cannot answer (the default :data:`~.models.mailbox_validator` does so from the
process's directory of mailboxes, ``validators.directory``).
"""

from __future__ import annotations

import inspect
import sys
import time
from collections.abc import Awaitable, Callable, Iterable
from typing import Any, TypeVar, overload

from asgiref.sync import async_to_sync, sync_to_async
from django.core.signals import setting_changed
from django.dispatch import receiver

from django_inbound_smtp import replies
from django_inbound_smtp.conf import SETTINGS_NAME, get_settings, load_callable
from django_inbound_smtp.envelope import RecipientContext, ResolvedRecipient
from django_inbound_smtp.exceptions import Rejected, TemporaryFailure
from django_inbound_smtp.replies import Reply
from django_inbound_smtp.validators import _answers
from django_inbound_smtp.validators._answers import CachePolicy
from django_inbound_smtp.validators._expiring import MISS

__all__ = [
    "MISS",
    "CachePolicy",
    "RunSync",
    "ValidatorResult",
    "cacheable",
    "clear_caches",
    "load_validators",
    "validate_recipient",
    "validate_recipient_here",
]

ValidatorResult = ResolvedRecipient | Reply | None
#: How the caller runs a synchronous function off the event loop.
RunSync = Callable[..., Awaitable[Any]]
F = TypeVar("F", bound=Callable[..., Any])


@overload
def cacheable(validator: F, /) -> F: ...
@overload
def cacheable(*, ttl: float | None = None, vary_on: Iterable[str] = ()) -> Callable[[F], F]: ...
def cacheable(
    validator: F | None = None, /, *, ttl: float | None = None, vary_on: Iterable[str] = ()
) -> F | Callable[[F], F]:
    """Declare that a validator's answers may be reused: ``@cacheable`` or
    ``@cacheable(ttl=2, vary_on=("mail_from",))``.

    An answer is reused for the same address (exactly as sent) and the same values of the
    ``vary_on`` fields of :class:`RecipientContext`, for ``ttl`` seconds, never more than
    ``DIRECTORY_TTL``. Works on functions and classes; raises ``ValueError`` for an
    unknown field name.
    """
    policy = CachePolicy(ttl=ttl, vary_on=tuple(vary_on))

    def mark(target: F) -> F:
        # setattr: a function or class takes the attribute, but the type checker cannot
        # know that of an arbitrary callable.
        setattr(target, "cacheable", policy)  # noqa: B010
        return target

    return mark if validator is None else mark(validator)


def clear_caches() -> None:
    """Forget every answer held in memory: the directory of mailboxes and the answers
    of cacheable validators. For tests that change data behind the ORM's back."""
    _answers.clear()
    directory = sys.modules.get("django_inbound_smtp.validators.directory")
    if directory is not None:  # not loaded: nothing to forget
        directory.directory.clear()


@receiver(setting_changed)
def _settings_changed(*, setting: str, **kwargs: Any) -> None:
    if setting == SETTINGS_NAME:
        _answers.clear()


def load_validators() -> tuple[Callable[..., Any], ...]:
    """The configured validator callables, imported once each."""
    return tuple(load_callable(path) for path in get_settings().RECIPIENT_VALIDATORS)


def _is_async(validator: Callable[..., Any]) -> bool:
    # An instance with an async __call__ counts as async too.
    return inspect.iscoroutinefunction(validator) or inspect.iscoroutinefunction(
        getattr(validator, "__call__", None)  # noqa: B004 - we need the bound method
    )


async def validate_recipient(
    address: str, *, context: RecipientContext, run_sync: RunSync
) -> ResolvedRecipient:
    """Run the validator chain for one ``RCPT TO`` address.

    Returns the accepted recipient. Raises ``Rejected`` (5xx) or ``TemporaryFailure``
    (4xx). Any other exception from a validator propagates; the SMTP handler turns it
    into ``451 4.3.0``.
    """
    for validator in load_validators():
        result = _from_memory(validator, address, context)
        if result is MISS:
            result = await _ask(validator, address, context, run_sync)
        if result is None:
            continue
        if isinstance(result, ResolvedRecipient):
            return result
        if isinstance(result, Reply):
            if result.is_permanent:
                raise Rejected(result)
            raise TemporaryFailure(result)
        raise TypeError(
            f"recipient validator {validator!r} returned {type(result).__name__}; "
            "expected ResolvedRecipient, Reply or None"
        )
    raise Rejected(replies.RELAY_DENIED)


async def _in_the_callers_thread(function: Callable[..., Any], /, *args: Any, **kwargs: Any) -> Any:
    return await sync_to_async(function, thread_sensitive=True)(*args, **kwargs)


def validate_recipient_here(address: str, *, context: RecipientContext) -> ResolvedRecipient:
    """:func:`validate_recipient` for synchronous callers (the admin, commands, the test
    kit). Sync validators run in the caller's thread (thread-sensitive), so they see its
    database connection and transaction."""
    return async_to_sync(validate_recipient)(
        address, context=context, run_sync=_in_the_callers_thread
    )


def _from_memory(validator: Callable[..., Any], address: str, context: RecipientContext) -> Any:
    """The validator's answer without I/O, or ``MISS``. Runs on the event loop."""
    answer_from_memory = getattr(validator, "answer_from_memory", None)
    if answer_from_memory is not None:
        return answer_from_memory(address, context=context)
    policy = _answers.policy_of(validator)
    if policy is None:
        return MISS
    return _answers.recall(validator, policy, address, context)


async def _ask(
    validator: Callable[..., Any], address: str, context: RecipientContext, run_sync: RunSync
) -> Any:
    """Call the validator (sync ones through ``run_sync``); remember its final answer
    if it declared itself cacheable."""
    asked_at = time.monotonic()  # before the call: an answer's age is never understated
    try:
        if _is_async(validator):
            result = await validator(address, context=context)
        else:
            result = await run_sync(validator, address, context=context)
    except Rejected as refusal:
        _remember(validator, address, context, refusal.reply, asked_at)
        raise
    if result is None or isinstance(result, ResolvedRecipient | Reply):
        _remember(validator, address, context, result, asked_at)
    return result


def _remember(
    validator: Callable[..., Any],
    address: str,
    context: RecipientContext,
    answer: ResolvedRecipient | Reply | None,
    asked_at: float,
) -> None:
    policy = _answers.policy_of(validator)
    if policy is not None:
        _answers.remember(validator, policy, address, context, answer, asked_at=asked_at)
