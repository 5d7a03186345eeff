"""The single door from the event loop into Django's synchronous world.

Every ORM-touching call from a coroutine goes through :func:`run_sync`, which runs it
in one of ``DATABASE_THREADS`` threads (``_threads.DatabaseThreads``), each with its
own database connection: 1 on SQLite, 4 on PostgreSQL by default. Messages that finish
DATA together are stored in one hop and one transaction (:class:`GroupCommitter`), so
the database commits per group, not per message, one group at a time; the other
threads serve recipient lookups, AUTH and directory reloads meanwhile.

A message's way through here: ``handler`` → :meth:`GroupCommitter.deliver` →
:func:`store.store_batch` (with the lifecycle's ``schedule`` as its after-commit
hook) → ``250``.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable
from typing import Any, TypeVar

from asgiref.sync import sync_to_async

from django_inbound_smtp import _db, accounts, store, validators
from django_inbound_smtp.envelope import ReceivedEnvelope, RecipientContext, ResolvedRecipient
from django_inbound_smtp.lifecycle import schedule
from django_inbound_smtp.logging import set_queue_id
from django_inbound_smtp.replies import Reply
from django_inbound_smtp.smtp._threads import DatabaseThreads
from django_inbound_smtp.spool import Spool
from django_inbound_smtp.store import files, orphans, retention
from django_inbound_smtp.validators import quota

__all__ = [
    "MAX_GROUP",
    "GroupCommitter",
    "close_connections",
    "drain_processing",
    "may_skip_quota",
    "quota_refusal",
    "refusals_at_data",
    "run_sync",
    "store_batch",
    "validate_recipient",
]

T = TypeVar("T")


_threads: DatabaseThreads | None = None
_servers = 0  # servers using _threads: the last one to stop closes it
_threads_lock = threading.Lock()


def open_database_threads() -> None:
    """A server starts: make sure the database threads exist (``DATABASE_THREADS``)."""
    global _threads, _servers
    with _threads_lock:
        if _threads is None:
            _threads = DatabaseThreads(_db.database_threads(), close=_db.close_thread_connections)
        _servers += 1


async def run_sync(function: Callable[..., T], /, *args: Any, **kwargs: Any) -> T:
    """Run a synchronous ``function`` in a database thread and await its result.

    Outside a started server (a handler driven by hand), in Django's one
    thread-sensitive thread instead."""
    threads = _threads
    if threads is None:
        return await sync_to_async(function, thread_sensitive=True)(*args, **kwargs)
    return await threads.run(function, *args, **kwargs)


async def validate_recipient(address: str, context: RecipientContext) -> ResolvedRecipient:
    """Run the recipient validator chain (sync validators in the ORM thread)."""
    return await validators.validate_recipient(address, context=context, run_sync=run_sync)


def may_skip_quota(recipient: ResolvedRecipient) -> bool:
    """Whether memory says ``recipient``'s mailbox has no quota (no query; the loop)."""
    return quota.may_skip(recipient)


async def quota_refusal(recipient: ResolvedRecipient) -> Reply | None:
    """At RCPT: ``452 4.2.2`` if the recipient's mailbox is full, else ``None``."""
    return await run_sync(quota.refusal_at_rcpt, recipient)


async def refusals_at_data(
    recipients: tuple[ResolvedRecipient, ...], *, size: int
) -> list[Reply | None]:
    """After DATA on LMTP: each recipient's refusal (mailbox gone, disabled, full) or
    ``None``, in order."""
    return await run_sync(quota.refusals_at_data, recipients, size=size)


def _store_and_schedule(batch: list[tuple[ReceivedEnvelope, Spool]]) -> list[store.Outcome]:
    return store.store_batch(batch, on_commit=schedule.schedule, queued_by=schedule.queue_owner())


async def store_batch(batch: list[tuple[ReceivedEnvelope, Spool]]) -> list[int | Exception]:
    """Store messages that finished together in one transaction and schedule their
    processing after the commit; one pk or exception per message, in order."""
    return await run_sync(_store_and_schedule, batch)


async def message_folders() -> list[str]:
    """The spool folder, then the local storage folder if any."""
    return await sync_to_async(files.message_folders, thread_sensitive=False)()


async def sweep() -> int:
    """One sweep for messages that need processing scheduled again (``schedule.sweep``).

    Not in the ORM thread: a long sweep must not hold up RCPT lookups and commits."""
    return await sync_to_async(_swept, thread_sensitive=False)()


def _swept() -> int:
    try:
        orphans.remove_orphans()
        return schedule.sweep()
    finally:
        _db.close_thread_connections()  # a pool thread: leave no connection behind


async def prune(stop: threading.Event) -> int:
    """Delete finished messages past their retention (``store.retention``); how many.

    Not in the ORM thread, and in batches: a big prune never holds up RCPT lookups and
    commits. ``stop`` ends it between batches."""
    return await sync_to_async(_pruned, thread_sensitive=False)(stop)


def _pruned(stop: threading.Event) -> int:
    try:
        return retention.prune(stop=stop).total
    finally:
        _db.close_thread_connections()  # a pool thread: leave no connection behind


def pruning_wanted() -> bool:
    """Whether ``RETENTION`` limits any status (otherwise smtpd never prunes)."""
    return bool(retention.retention_limits())


async def authenticate(username: str, password: str) -> str | None:
    """Check SMTP AUTH credentials with Django's backends (``accounts``), off the loop."""
    return await run_sync(accounts.authenticate_login, username, password)


async def close_connections() -> None:
    """A server stops: the last one closes the database threads' connections and
    stops them."""
    global _threads, _servers
    with _threads_lock:
        _servers = max(_servers - 1, 0)
        threads = _threads if _servers == 0 else None
        if threads is not None:
            _threads = None
    if threads is not None:
        await asyncio.get_running_loop().run_in_executor(None, threads.close)
    else:
        await sync_to_async(_db.close_thread_connections, thread_sensitive=True)()


async def drain_processing(grace: float) -> bool:
    """Wait, off the loop, for scheduled processing to finish; ``True`` if it did.

    Work not started by then is dropped (it stays ``received`` for the sweeper)."""
    drained = await sync_to_async(schedule.drain, thread_sensitive=False)(grace)
    if not drained:
        schedule.shutdown()
    return drained


# Bounds one transaction (and how long RCPT lookups queue behind it in the ORM
# thread); 20 sessions rarely queue more than 20.
MAX_GROUP = 64

_Waiting = tuple[ReceivedEnvelope, Spool, "asyncio.Future[int]"]


class GroupCommitter:
    """Queue of finished messages and the writer task that stores them in groups."""

    def __init__(self, *, max_group: int = MAX_GROUP, writers: int = 1) -> None:
        self.max_group = max_group
        # One group in flight at a time: a second writer (one group committing while the
        # next is inserted) made groups smaller and cost more CPU a message than it saved
        # (1 KiB load, PostgreSQL, quiet 2-core VM: 296-300 vs 246-263 msg/s inline,
        # 566-636 vs 535-597 store only, and lower latency). The other database threads
        # serve recipient lookups, AUTH and directory reloads meanwhile.
        self.writers = writers
        self._queue: list[_Waiting] = []
        self._writing: set[asyncio.Task[None]] = set()

    async def deliver(self, received: ReceivedEnvelope, spool: Spool) -> int:
        """Store one message with whatever else is waiting; its pk once committed.

        Raises what storing it raised (the caller answers ``451`` / ``452``)."""
        future: asyncio.Future[int] = asyncio.get_running_loop().create_future()
        self._queue.append((received, spool, future))
        if len(self._writing) < self.writers:
            writer = asyncio.ensure_future(self._write())
            self._writing.add(writer)
            writer.add_done_callback(self._writing.discard)
        return await future

    async def _write(self) -> None:
        try:
            while self._queue:
                group = self._queue[: self.max_group]
                del self._queue[: self.max_group]
                # This task's own context: the store's log lines name the message when
                # it stores one, and none (not the first session's) for a group.
                set_queue_id(group[0][0].queue_id if len(group) == 1 else "")
                try:
                    outcomes = await store_batch([(r, s) for r, s, _ in group])
                except BaseException as error:
                    # The hop itself failed or the loop is going away: nobody's 250.
                    for _, _, future in group:
                        _settle(future, _as_exception(error))
                    raise
                for (_, _, future), outcome in zip(group, outcomes, strict=True):
                    _settle(future, outcome)
        except BaseException as error:
            for _, _, future in self._queue:
                _settle(future, _as_exception(error))
            self._queue.clear()
            raise
        finally:
            # Now, in the step that found the queue empty: the done callback runs a loop
            # turn later, and a message queued in between would find no writer coming.
            current = asyncio.current_task()
            if current is not None:
                self._writing.discard(current)


def _as_exception(error: BaseException) -> Exception:
    if isinstance(error, Exception):
        return error
    return RuntimeError(f"group commit stopped: {type(error).__name__}")


def _settle(future: asyncio.Future[int], outcome: int | Exception) -> None:
    if future.done():
        return
    if isinstance(outcome, Exception):
        future.set_exception(outcome)
    else:
        future.set_result(outcome)
