"""Log records that say which session and message they are about; JSON log lines.

Pure (stdlib only). The SMTP handler sets the session and queue ids in context
variables (:func:`set_session`, :func:`set_queue_id`); the database and processing
threads inherit them or set them per message (:func:`about`). :class:`QueueIdFilter`
copies them onto every record that passes it (``record.queue_id``,
``record.session``), so a plain ``%(queue_id)s`` format works as well as
:class:`JSONFormatter`, which writes one JSON object per line::

    LOGGING = {
        "version": 1,
        "disable_existing_loggers": False,
        "filters": {"queue_id": {"()": "django_inbound_smtp.logging.QueueIdFilter"}},
        "formatters": {"json": {"()": "django_inbound_smtp.logging.JSONFormatter"}},
        "handlers": {
            "console": {
                "class": "logging.StreamHandler",
                "formatter": "json",
                "filters": ["queue_id"],
            }
        },
        "root": {"handlers": ["console"], "level": "INFO"},
    }
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar, Token
from datetime import UTC, datetime
from typing import Any

__all__ = [
    "JSONFormatter",
    "QueueIdFilter",
    "about",
    "current_queue_id",
    "current_session",
    "set_queue_id",
    "set_session",
]

_queue_id: ContextVar[str] = ContextVar("inbound_smtp_queue_id", default="")
_session: ContextVar[str] = ContextVar("inbound_smtp_session", default="")

# What every LogRecord has; anything else on a record came from ``extra`` (or a filter).
_STANDARD = frozenset(vars(logging.LogRecord("", logging.INFO, "", 0, "", None, None))) | {
    "message",
    "asctime",
    "taskName",
}
# Written by the formatter itself, in this order, before the extras.
_OWN = ("queue_id", "session")


def current_queue_id() -> str:
    """The queue id of the message the current code is about, or ``""``."""
    return _queue_id.get()


def current_session() -> str:
    """The id of the SMTP session the current code serves, or ``""``."""
    return _session.get()


def set_queue_id(queue_id: str) -> Token[str]:
    """From now on in this context (a session's task, a thread), log lines are about
    ``queue_id`` (``""``: about no message)."""
    return _queue_id.set(queue_id)


def set_session(session: str) -> Token[str]:
    """From now on in this context, log lines belong to SMTP session ``session``."""
    return _session.set(session)


@contextmanager
def about(queue_id: str) -> Iterator[None]:
    """Within the block, log lines are about message ``queue_id``."""
    token = _queue_id.set(queue_id)
    try:
        yield
    finally:
        _queue_id.reset(token)


class QueueIdFilter(logging.Filter):
    """Adds ``queue_id`` and ``session`` to every record (``""`` when unknown); a value
    the caller passed in ``extra`` is kept. Never drops a record."""

    def filter(self, record: logging.LogRecord) -> bool:
        if not getattr(record, "queue_id", ""):
            record.queue_id = _queue_id.get()
        if not getattr(record, "session", ""):
            record.session = _session.get()
        return True


class JSONFormatter(logging.Formatter):
    """One JSON object per line: ``time`` (UTC, ISO 8601), ``level``, ``logger``,
    ``message``, then ``queue_id`` and ``session`` when known, any ``extra`` values,
    and ``exception`` (the traceback) when there is one.

    Control characters in a message (a hostile address, a HELO name) are escaped by
    the JSON encoding, so no client can forge a log line; non-ASCII is escaped too,
    so the output is plain ASCII whatever the input."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        # Without the filter, the context still tells (same thread or task).
        queue_id = getattr(record, "queue_id", "") or _queue_id.get()
        session = getattr(record, "session", "") or _session.get()
        if queue_id:
            entry["queue_id"] = queue_id
        if session:
            entry["session"] = session
        for key, value in vars(record).items():
            if key not in _STANDARD and key not in _OWN and not key.startswith("_"):
                entry[key] = _plain(value)
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        elif record.exc_text:
            entry["exception"] = record.exc_text
        if record.stack_info:
            entry["stack"] = self.formatStack(record.stack_info)
        return json.dumps(entry, default=str)


def _plain(value: Any) -> Any:
    """``value`` if JSON can hold it as it is, else its ``str``."""
    if value is None or isinstance(value, bool | int | float | str):
        return value
    if isinstance(value, list | tuple):
        return [_plain(item) for item in value]
    if isinstance(value, dict):
        return {str(key): _plain(item) for key, item in value.items()}
    return str(value)
