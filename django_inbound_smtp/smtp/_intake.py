"""From DATA chunks to a finished spool, and the reply when the message is not kept.

The protocol reads chunks and hands each one to :class:`Intake`, which decodes it,
applies the bare-newline and line-length policies, enforces the size limit while
streaming and moves the bytes into the :class:`~django_inbound_smtp.spool.Spool`.
File writes and hashing run in a worker thread, never on the event loop.

Whatever goes wrong while storing (too big, a line too long, the disk full), reading
goes on to the end of the data, so the reply lands where the client expects it
(RFC 5321 §4.2.5). Only a client that keeps sending far past the limit is cut off.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import TypeVar

from django_inbound_smtp import replies
from django_inbound_smtp.smtp._data import BareNewlines, DotDecoder, longest_line
from django_inbound_smtp.spool import Spool, is_disk_full

__all__ = ["DRAIN_FACTOR", "DrainExceeded", "Intake", "discard_spool", "run_to_the_end"]

T = TypeVar("T")

logger = logging.getLogger(__name__)

# After the size limit is passed we keep reading (discarding) until the end of data so
# the reply lands where the client expects it, but not for ever: past this many times
# the limit the client is not going to stop, and we hang up.
DRAIN_FACTOR = 2

# What the client is told when its message is not kept, by reason.
_REFUSALS = {
    "too big": replies.MESSAGE_TOO_BIG,
    "bare newline": replies.BARE_NEWLINE,
    "line too long": replies.LINE_TOO_LONG,
}


class DrainExceeded(Exception):
    """The client kept sending far past the size limit."""


class Intake:
    """One message's DATA on its way into ``spool``.

    Feed chunks with :meth:`feed` until :attr:`done`; then :meth:`finish` returns
    ``None`` when the spool holds the whole message, or the reply to send instead.
    :attr:`trailing` holds pipelined bytes that followed the end of data.
    """

    def __init__(
        self,
        spool: Spool,
        *,
        size_limit: int | None,
        bare_newlines: str,
        line_limit: int | None,
    ) -> None:
        self.spool = spool
        self._decoder = DotDecoder()
        self._newlines = BareNewlines(bare_newlines)
        self._size_limit = size_limit
        self._line_limit = line_limit
        self._longest = 0
        self._carry = 0
        # None while all is well; a reason from _REFUSALS; or the OSError that stopped it.
        self._problem: str | OSError | None = None

    @property
    def done(self) -> bool:
        """Whether the end of data (CRLF.CRLF) was read."""
        return self._decoder.done

    @property
    def trailing(self) -> bytes:
        """Bytes after the end of data: pipelined commands for the command reader."""
        return self._decoder.trailing

    @property
    def bare_newlines_seen(self) -> bool:
        """Whether the data held a CR or LF outside a CRLF."""
        return self._newlines.seen

    async def feed(self, chunk: bytes) -> None:
        """Take one chunk read from the client. Raises :class:`DrainExceeded`."""
        decoded = self._decoder.feed(chunk)
        limit = self._size_limit
        if limit and self._decoder.size > limit:
            if self._problem is None or isinstance(self._problem, OSError):
                self._problem = "too big"
                await discard_spool(self.spool)
            if self._decoder.size > DRAIN_FACTOR * limit:
                raise DrainExceeded
            return
        if self._problem is not None:
            return  # refused already: read on to the end, keep nothing
        if self._line_limit:
            line, self._carry = longest_line(decoded, self._carry)
            self._longest = max(self._longest, line)
        if self.spool.add(self._newlines.apply(decoded)):
            self._problem = await _in_thread(self.spool.flush)

    async def finish(self, *, reference: str) -> str | None:
        """Complete the spool; ``None`` if the message is kept, else the reply to send."""
        problem = self._problem
        if problem is None and self._newlines.seen and self._newlines.policy == "reject":
            problem = "bare newline"
        if problem is None and self._line_limit and self._longest > self._line_limit:
            problem = "line too long"
        if problem is None:
            finish = self.spool.finish
            problem = await _in_thread(finish) if self.spool.needs_thread() else _run(finish)
        if problem is None:
            return None
        await discard_spool(self.spool)
        if isinstance(problem, OSError):
            # Our fault, never the client's: a 4xx, so it retries.
            logger.error("could not spool message (ref %s)", reference, exc_info=problem)
            full = is_disk_full(problem)
            reply = replies.INSUFFICIENT_STORAGE if full else replies.TEMPORARY_FAILURE
            return str(reply.with_reference(reference))
        return str(_REFUSALS[problem])


async def discard_spool(spool: Spool) -> None:
    """Discard ``spool``; deleting its file (if any) happens in a worker thread."""
    if spool.on_disk:
        await run_to_the_end(spool.discard)
    else:
        spool.discard()


async def run_to_the_end(step: Callable[[], T]) -> T:
    """Run ``step`` in a worker thread and return its result.

    If the session is cancelled meanwhile (the client hung up), the cancellation waits
    for the step to end before it propagates: a thread cannot be stopped, and whoever
    cleans up next (discarding the spool, closing its file) must not race a thread
    still writing to it."""
    future = asyncio.get_running_loop().run_in_executor(None, step)
    try:
        return await asyncio.shield(future)
    except asyncio.CancelledError:
        while not future.done():
            try:
                await asyncio.wait([future])
            except asyncio.CancelledError:
                continue
        raise


async def _in_thread(step: Callable[[], None]) -> OSError | None:
    """:func:`run_to_the_end` for a spool step; an ``OSError`` is returned, not raised."""
    try:
        await run_to_the_end(step)
    except OSError as error:
        return error
    return None


def _run(step: Callable[[], None]) -> OSError | None:
    try:
        step()
    except OSError as error:
        return error
    return None
