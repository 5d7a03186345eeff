"""The threads that do the server's database work, each with its own connection.

Pure asyncio and ``concurrent.futures`` (no Django): the bridge builds one with the
size ``DATABASE_THREADS`` gives and the function that closes a thread's connections.
Django's database connections are per thread, so ``size`` threads hold at most
``size`` connections, kept open for the life of the server.
"""

from __future__ import annotations

import asyncio
import contextvars
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from functools import partial
from typing import Any, TypeVar

__all__ = ["DatabaseThreads"]

T = TypeVar("T")


class DatabaseThreads:
    """A fixed pool of ``size`` threads for synchronous database work."""

    def __init__(self, size: int, *, close: Callable[[], None]) -> None:
        self.size = size
        self._close = close
        self._pool = ThreadPoolExecutor(size, thread_name_prefix="inbound-smtp-db")

    async def run(self, function: Callable[..., T], /, *args: Any, **kwargs: Any) -> T:
        """Run ``function`` in one of the threads (with the caller's context variables)."""
        loop = asyncio.get_running_loop()
        call = partial(contextvars.copy_context().run, function, *args, **kwargs)
        return await loop.run_in_executor(self._pool, call)

    def close(self, timeout: float = 10.0) -> None:
        """Close every thread's connections, then stop the threads. Blocking."""
        # One task per thread, each held at a barrier until all have started, so that
        # each thread runs exactly one of them (a pool gives no other way to reach all).
        barrier = threading.Barrier(self.size)

        def close_here() -> None:
            try:
                self._close()
            finally:
                try:
                    barrier.wait(timeout)
                except threading.BrokenBarrierError:
                    pass

        for future in [self._pool.submit(close_here) for _ in range(self.size)]:
            future.result(timeout + 1)
        self._pool.shutdown(wait=True)
