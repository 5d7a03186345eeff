"""Session caps (in total and per client address) and the AUTH failure throttle. Pure.

aiosmtpd has none (its #282 was closed "use a proxy"); without them one client can
hold every file descriptor and all the memory (hostile-inputs #65-#67).
"""

from __future__ import annotations

import ipaddress
import time
from collections import Counter, deque

from django_inbound_smtp.replies import TOO_MANY_FROM_CLIENT, TOO_MANY_SESSIONS, Reply

__all__ = ["AuthThrottle", "SessionLimiter", "client_key"]


def client_key(address: str) -> str:
    """What counts as one client: an IPv4 address, or an IPv6 /64 (a host usually owns
    a whole /64 and could otherwise rotate addresses past any per-client cap)."""
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return address
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.ipv4_mapped is not None:
            return str(ip.ipv4_mapped)
        return str(ipaddress.ip_network(f"{ip}/64", strict=False))
    return str(ip)


class SessionLimiter:
    """Counts open sessions; :meth:`admit` says whether one more may start."""

    def __init__(self, *, total: int, per_client: int) -> None:
        self.total = total
        self.per_client = per_client
        self._open: Counter[str] = Counter()

    @property
    def open_sessions(self) -> int:
        """Sessions currently admitted."""
        return sum(self._open.values())

    def admit(self, client: str, *, check_client: bool = True) -> Reply | None:
        """Count a new session from ``client``; or the ``421`` to refuse it with.

        ``check_client=False`` applies the total cap only (a proxy's address, before its
        PROXY header names the real client: see :meth:`rebind`).
        """
        if self.open_sessions >= self.total:
            return TOO_MANY_SESSIONS
        if check_client and self._open[client] >= self.per_client:
            return TOO_MANY_FROM_CLIENT
        self._open[client] += 1
        return None

    def rebind(self, old: str, new: str) -> Reply | None:
        """Move a session from ``old`` to ``new`` (the real client behind a proxy),
        applying the per-client cap to ``new``; on refusal the session stays ``old``."""
        if self._open[new] >= self.per_client:
            return TOO_MANY_FROM_CLIENT
        self.release(old)
        self._open[new] += 1
        return None

    def release(self, client: str) -> None:
        """Forget one session from ``client`` (it ended)."""
        self._open[client] -= 1
        if self._open[client] <= 0:
            del self._open[client]


class AuthThrottle:
    """Failed AUTH attempts per client address in a sliding window (brute force, #22)."""

    def __init__(self) -> None:
        self._failures: dict[str, deque[float]] = {}

    def _recent(self, client: str, *, window: float) -> deque[float]:
        failures = self._failures.setdefault(client, deque())
        horizon = time.monotonic() - window
        while failures and failures[0] < horizon:
            failures.popleft()
        return failures

    def blocked(self, client: str, *, limit: int, window: float) -> bool:
        """True when ``client`` failed ``limit`` times within the last ``window`` seconds."""
        blocked = len(self._recent(client, window=window)) >= limit
        if not self._failures.get(client):
            self._failures.pop(client, None)
        return blocked

    def failed(self, client: str) -> None:
        """Record one failed attempt by ``client``."""
        self._failures.setdefault(client, deque()).append(time.monotonic())
