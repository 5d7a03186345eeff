"""Connection hygiene for units of work that run outside a request.

In a daemon the request signals that normally recycle database connections never
fire, so every synchronous unit of work entered from the SMTP server or a worker
thread wraps itself in :func:`unit_of_work`.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from django.db import DEFAULT_DB_ALIAS, connections

from django_inbound_smtp.conf import get_settings

__all__ = ["close_thread_connections", "database_threads", "keep_connections_open", "unit_of_work"]

# Set by a long-running server (smtpd): connections live as long as they are usable,
# whatever CONN_MAX_AGE says. Django's default CONN_MAX_AGE = 0 closes a connection at
# the end of each request; in a daemon that means a new database connection for every
# unit of work, which halved the example project's rate (43 vs 83 msg/s measured).
_persistent = False


def keep_connections_open() -> None:
    """From now on, units of work close a connection only when it is broken, never for
    its age (``CONN_MAX_AGE``). For ``smtpd``, whose connections serve one thread each."""
    global _persistent
    _persistent = True


@contextmanager
def unit_of_work() -> Iterator[None]:
    """Drop unusable or expired connections before and after the enclosed work.

    After a failure (database restarted, connection killed) the next unit of work gets
    a fresh connection instead of the broken one, so one fault costs one ``451``.
    A connection inside a caller's transaction is left alone: it is the caller's.
    """
    _close_old_connections()
    try:
        yield
    finally:
        _close_old_connections()


def _close_old_connections() -> None:
    # django.db.close_old_connections(), minus connections in an atomic block (which it
    # would close, taking the caller's transaction with it).
    for connection in connections.all(initialized_only=True):
        if not connection.in_atomic_block:
            if _persistent:
                connection.close_at = None  # no age limit; errors still close it
            connection.close_if_unusable_or_obsolete()


def close_thread_connections() -> None:
    """Close every connection this thread opened (connections are per thread)."""
    connections.close_all()


def database_threads() -> int:
    """How many threads do ``smtpd``'s database work (``DATABASE_THREADS``)."""
    configured = get_settings().DATABASE_THREADS
    if configured != "auto":
        return int(configured)
    # SQLite has one writer at a time: more threads would only queue on its lock.
    return 1 if connections[DEFAULT_DB_ALIAS].vendor == "sqlite" else 4
