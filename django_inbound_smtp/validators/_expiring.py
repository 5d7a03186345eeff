"""A bounded, thread-safe map whose entries expire: the memory behind cached RCPT answers.

Pure stdlib. Each entry carries the monotonic time its data was read (taken *before* the
read started, so its age never understates how old the data is); a lookup names the
largest age it accepts, so a changed staleness bound applies to entries already held.
"""

from __future__ import annotations

import enum
import threading
from collections import OrderedDict
from collections.abc import Hashable
from typing import Generic, Literal, TypeVar

__all__ = ["MISS", "ExpiringLru", "Miss"]

V = TypeVar("V")


class Miss(enum.Enum):
    """The type of :data:`MISS`."""

    MISS = "miss"


#: "Not known from memory": distinct from ``None``, which is a valid remembered answer.
MISS: Literal[Miss.MISS] = Miss.MISS


class ExpiringLru(Generic[V]):
    """At most ``max_entries`` values, least recently used evicted first.

    A lock guards every operation; it is held only for dictionary work, never while
    data is fetched, so a reader on the event loop never waits for a database.
    """

    def __init__(self, max_entries: int) -> None:
        self.max_entries = max_entries
        self._entries: OrderedDict[Hashable, tuple[float, V]] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, key: Hashable, *, max_age: float, now: float) -> V | Literal[Miss.MISS]:
        """The value stored under ``key`` if read less than ``max_age`` seconds before
        ``now``; else :data:`MISS` (an expired entry is dropped)."""
        with self._lock:
            entry = self._entries.get(key)
            if entry is None:
                return MISS
            read_at, value = entry
            if now - read_at >= max_age:
                del self._entries[key]
                return MISS
            self._entries.move_to_end(key)
            return value

    def put(self, key: Hashable, value: V, *, read_at: float) -> None:
        """Remember ``value``, read at monotonic time ``read_at``."""
        with self._lock:
            self._entries[key] = (read_at, value)
            self._entries.move_to_end(key)
            while len(self._entries) > self.max_entries:
                self._entries.popitem(last=False)

    def clear(self) -> None:
        """Forget everything."""
        with self._lock:
            self._entries.clear()

    def __len__(self) -> int:
        return len(self._entries)
