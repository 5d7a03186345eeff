"""The single door from the event loop into Django's synchronous world.

Every ORM-touching call from a coroutine goes through :func:`run_sync`, which runs it
with ``sync_to_async`` in thread-sensitive mode: all database work of the server is
serialized on one thread with one connection per database. That is correct and
simple; messages that finish DATA together are stored in one hop and one transaction
(``smtp/_group.py``), so that thread commits per group, not per message.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

from asgiref.sync import sync_to_async

from django_inbound_smtp import _db, accounts, delivery, dispatch, group_commit, orphans, validators
from django_inbound_smtp.envelope import ReceivedEnvelope, RecipientContext, ResolvedRecipient
from django_inbound_smtp.spool import Spool

__all__ = [
    "close_connections",
    "deliver",
    "deliver_batch",
    "drain_processing",
    "run_sync",
    "validate_recipient",
]

T = TypeVar("T")


async def run_sync(function: Callable[..., T], /, *args: Any, **kwargs: Any) -> T:
    """Run a synchronous ``function`` in the ORM thread and await its result."""
    return await sync_to_async(function, thread_sensitive=True)(*args, **kwargs)


async def validate_recipient(address: str, context: RecipientContext) -> ResolvedRecipient:
    """Run the recipient validator chain (sync validators in the ORM thread)."""
    return await validators.validate_recipient(address, context=context, run_sync=run_sync)


async def deliver(envelope: ReceivedEnvelope, spool: Spool) -> int:
    """Store one spooled message durably (``delivery.deliver_spool``); returns its pk."""
    return await run_sync(delivery.deliver_spool, envelope, spool)


async def deliver_batch(batch: list[tuple[ReceivedEnvelope, Spool]]) -> list[int | Exception]:
    """Store messages that finished together in one transaction (``group_commit``);
    one pk or exception per message, in order."""
    return await run_sync(group_commit.deliver_batch, batch)


async def message_folders() -> list[str]:
    """The spool folder, then the local storage folder if any (``delivery``)."""
    return await sync_to_async(delivery.message_folders, thread_sensitive=False)()


async def sweep() -> int:
    """One sweep for messages that need processing scheduled again (``dispatch.sweep``).

    Not in the ORM thread: a long sweep must not hold up RCPT lookups and commits."""
    return await sync_to_async(_swept, thread_sensitive=False)()


def _swept() -> int:
    try:
        orphans.remove_orphans()
        return dispatch.sweep()
    finally:
        _db.close_thread_connections()  # a pool thread: leave no connection behind


async def authenticate(username: str, password: str) -> str | None:
    """Check SMTP AUTH credentials with Django's backends (``accounts``), off the loop."""
    return await run_sync(accounts.authenticate_login, username, password)


async def close_connections() -> None:
    """Close the ORM thread's database connections (server shutdown)."""
    await run_sync(_db.close_thread_connections)


async def drain_processing(grace: float) -> bool:
    """Wait, off the loop, for scheduled processing to finish; ``True`` if it did.

    Work not started by then is dropped (it stays ``received`` for the sweeper)."""
    drained = await sync_to_async(dispatch.drain, thread_sensitive=False)(grace)
    if not drained:
        dispatch.shutdown()
    return drained
