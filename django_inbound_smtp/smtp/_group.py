"""Group commit on the event loop: deliveries waiting at the same time share one hop.

Every message that finished DATA is queued here; one writer task takes everything
queued whenever it is free and stores it with one bridge call
(``_bridge.deliver_batch``: one transaction, one commit). No timer: on an idle server
a lone message is handed over at once, and under load a group is whatever arrived
while the previous one was being committed, the way a database's WAL writer groups
commits. Each waiter gets its own outcome (a pk, or the exception its ``451`` /
``452`` comes from), only after the commit that holds its rows.
"""

from __future__ import annotations

import asyncio

from django_inbound_smtp.envelope import ReceivedEnvelope
from django_inbound_smtp.smtp import _bridge
from django_inbound_smtp.spool import Spool

__all__ = ["MAX_GROUP", "GroupCommitter"]

# Bounds one transaction (and how long RCPT lookups queue behind it in the ORM
# thread); 20 sessions rarely queue more than 20.
MAX_GROUP = 64

_Waiting = tuple[ReceivedEnvelope, Spool, "asyncio.Future[int]"]


class GroupCommitter:
    """Queue of finished messages and the writer task that stores them in groups."""

    def __init__(self, *, max_group: int = MAX_GROUP) -> None:
        self.max_group = max_group
        self._queue: list[_Waiting] = []
        self._writer: asyncio.Task[None] | None = None

    async def deliver(self, received: ReceivedEnvelope, spool: Spool) -> int:
        """Store one message with whatever else is waiting; its pk once committed.

        Raises what storing it raised (the caller answers ``451`` / ``452``)."""
        future: asyncio.Future[int] = asyncio.get_running_loop().create_future()
        self._queue.append((received, spool, future))
        if self._writer is None:
            self._writer = asyncio.ensure_future(self._write())
        return await future

    async def _write(self) -> None:
        try:
            while self._queue:
                group = self._queue[: self.max_group]
                del self._queue[: self.max_group]
                try:
                    outcomes = await _bridge.deliver_batch([(r, s) for r, s, _ in group])
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
            self._writer = None


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
