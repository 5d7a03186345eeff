"""Free disk space where messages land, checked at MAIL (``452 4.3.1``).

A full disk found mid-message costs the client a whole transfer before the ``452``;
checking at MAIL (as Postfix's ``queue_minfree`` does) refuses before any byte is
sent. ``statvfs`` runs in a worker thread (a network file system can stall it) and its
answer is kept for a second, so a busy server does not ask per transaction.
"""

from __future__ import annotations

import asyncio
import os
import time

__all__ = ["FreeSpace", "declared_size"]

_CACHE_SECONDS = 1.0


def _free_bytes(folder: str) -> int:
    # The spool folder is created on first use: measure the nearest existing parent,
    # which is on the same file system until the folder exists.
    while not os.path.isdir(folder):
        parent = os.path.dirname(folder)
        if parent == folder:
            break
        folder = parent
    stats = os.statvfs(folder)
    return stats.f_bavail * stats.f_frsize


class FreeSpace:
    """The least free space among ``folders``, cached for a second."""

    def __init__(self, folders: list[str]) -> None:
        self.folders = folders
        self._measured_at = -_CACHE_SECONDS
        self._free = 0

    def _measure(self) -> int:
        return min((_free_bytes(folder) for folder in self.folders), default=2**63)

    async def free(self) -> int:
        """Free bytes on the fullest of the folders' file systems."""
        now = time.monotonic()
        if now - self._measured_at >= _CACHE_SECONDS:
            self._free = await asyncio.get_running_loop().run_in_executor(None, self._measure)
            self._measured_at = now
        return self._free

    async def enough_for(self, size: int, *, reserve: int) -> bool:
        """Whether ``size`` more bytes fit and leave ``reserve`` free."""
        if reserve <= 0 and size <= 0:
            return True
        return await self.free() >= reserve + size


def declared_size(options: list[str]) -> int:
    """The ``SIZE=`` a client declared at MAIL (RFC 1870), or 0."""
    for option in options:
        name, _, value = option.partition("=")
        if name.upper() == "SIZE" and value.isdigit():
            return int(value)
    return 0
