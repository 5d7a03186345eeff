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
"""

from __future__ import annotations

import inspect
from collections.abc import Awaitable, Callable
from typing import Any

from django_inbound_smtp import replies
from django_inbound_smtp.conf import get_settings, load_callable
from django_inbound_smtp.envelope import RecipientContext, ResolvedRecipient
from django_inbound_smtp.exceptions import Rejected, TemporaryFailure
from django_inbound_smtp.replies import Reply

__all__ = ["RunSync", "ValidatorResult", "load_validators", "validate_recipient"]

ValidatorResult = ResolvedRecipient | Reply | None
#: How the caller runs a synchronous function off the event loop.
RunSync = Callable[..., Awaitable[Any]]


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
        if _is_async(validator):
            result = await validator(address, context=context)
        else:
            result = await run_sync(validator, address, context=context)
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
