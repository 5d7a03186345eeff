"""Prometheus metrics: what the listener, the store and processing count.

Pure (stdlib only; no Django), so every layer may record into it, the SMTP layer
included. ``prometheus-client`` is optional (the ``metrics`` extra): until
:func:`enable` is called, and always when it is not installed, every recording
function returns at once, so recording costs nothing for a server that is not scraped.
Once enabled, recording is an in-memory counter update (a lock and an addition; an
``mmap`` write in multiprocess mode): never database work, never I/O on the loop.

``smtpd --workers N`` runs prometheus-client's multiprocess mode: each worker writes
its values to files in a folder the parent created (``PROMETHEUS_MULTIPROC_DIR`` in
the worker's environment, read by prometheus-client at import), and the parent sums
them when scraped (see ``monitoring.service``).

The database-derived gauges (messages by status, oldest unprocessed age) are not here:
they are read at scrape time by ``monitoring.collector``.
"""

from __future__ import annotations

import importlib.util
import os
import threading
from typing import Any

__all__ = [
    "NAMESPACE",
    "MetricsUnavailable",
    "available",
    "enable",
    "enabled",
    "message_stored",
    "multiprocess",
    "processed",
    "processing_batch",
    "registry",
    "reply_sent",
    "sender_check",
    "session_ended",
    "session_started",
]

NAMESPACE = "inbound_smtp"

# Buckets in seconds. Storing is a write, an fsync and a commit (milliseconds; seconds
# on a slow disk); processing latency is from receipt to the recorded outcome
# (receivers included), which is longer and varies more.
STORE_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
PROCESSING_BUCKETS = (0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0, 900.0)


class MetricsUnavailable(Exception):
    """Metrics were asked for but ``prometheus-client`` is not installed."""


class _Metrics:
    """The metric objects, created once by :func:`enable`."""

    def __init__(self) -> None:
        import prometheus_client as prom

        self.registry = prom.CollectorRegistry(auto_describe=True)
        kw: dict[str, Any] = {"namespace": NAMESPACE, "registry": self.registry}
        self.sessions = prom.Counter("sessions", "SMTP sessions opened.", **kw)
        # livesum: in multiprocess mode, the sum over the workers still running.
        self.sessions_current = prom.Gauge(
            "sessions_current", "SMTP sessions open now.", multiprocess_mode="livesum", **kw
        )
        self.replies = prom.Counter(
            "replies", "SMTP replies sent, by 3-digit reply code.", ["code"], **kw
        )
        self.stored = prom.Counter(
            "messages_stored", "Messages stored and acknowledged with 250.", **kw
        )
        self.stored_bytes = prom.Counter(
            "stored_bytes", "Bytes of the messages acknowledged with 250.", **kw
        )
        self.store_seconds = prom.Histogram(
            "store_duration_seconds",
            "Seconds from the end of DATA to the 250 (checks, file, fsync, commit).",
            buckets=STORE_BUCKETS,
            **kw,
        )
        self.processed = prom.Counter(
            "processed", "Messages processed, by outcome.", ["outcome"], **kw
        )
        self.processing_latency = prom.Histogram(
            "processing_latency_seconds",
            "Seconds from receipt to the recorded processing outcome, per message.",
            buckets=PROCESSING_BUCKETS,
            **kw,
        )
        self.batch_seconds = prom.Histogram(
            "processing_batch_duration_seconds",
            "Seconds one processing batch took (claim, parse, receivers, record).",
            buckets=PROCESSING_BUCKETS,
            **kw,
        )
        self.verdicts = prom.Counter(
            "sender_check_verdicts",
            "Sender-check verdicts, by check and result.",
            ["check", "result"],
            **kw,
        )
        self.signed_addresses = prom.Counter(
            "signed_addresses",
            "Signed reply addresses and return paths at RCPT, by outcome.",
            ["outcome"],
            **kw,
        )
        # Labelled children by label values: .labels() validates and locks on every
        # call (about 5 us); a dict lookup does not. Label values are few (reply codes,
        # outcomes, check results), so the dict stays small.
        self.children: dict[tuple[Any, ...], Any] = {}

    def child(self, metric: Any, *values: str) -> Any:
        """``metric.labels(*values)``, created once."""
        key = (metric, *values)
        found = self.children.get(key)
        if found is None:
            found = self.children[key] = metric.labels(*values)
        return found


_lock = threading.Lock()
_metrics: _Metrics | None = None


def available() -> bool:
    """Whether ``prometheus-client`` is installed (and importable)."""
    try:
        return importlib.util.find_spec("prometheus_client") is not None
    except (ImportError, ValueError):  # blocked in sys.modules, or a broken install
        return False


def enable() -> None:
    """Start recording (idempotent); raises :class:`MetricsUnavailable` when
    ``prometheus-client`` is not installed."""
    global _metrics
    if not available():
        raise MetricsUnavailable(
            "metrics need prometheus-client: pip install 'django-inbound-smtp[metrics]'"
        )
    with _lock:
        if _metrics is None:
            _metrics = _Metrics()


def enabled() -> bool:
    """Whether recording is on in this process."""
    return _metrics is not None


def registry() -> Any:
    """This process's ``CollectorRegistry`` (after :func:`enable`), or ``None``."""
    return None if _metrics is None else _metrics.registry


def multiprocess() -> bool:
    """Whether this process writes its values for a parent to sum (``--workers``)."""
    return bool(os.environ.get("PROMETHEUS_MULTIPROC_DIR"))


def session_started() -> None:
    """An SMTP connection was accepted."""
    if (m := _metrics) is not None:
        m.sessions.inc()
        m.sessions_current.inc()


def session_ended() -> None:
    """An SMTP connection counted by :func:`session_started` closed."""
    if (m := _metrics) is not None:
        m.sessions_current.dec()


def reply_sent(line: str | bytes) -> None:
    """A reply line was written to a client; a reply counts once, at its last line."""
    if (m := _metrics) is not None:
        if line[3:4] in ("-", b"-"):
            return  # "250-…": a multi-line reply goes on (RFC 5321 §4.2.1)
        code = line[:3]
        if isinstance(code, bytes):
            code = code.decode("ascii", "replace")
        # Only real reply codes become labels: a label per odd string would grow the
        # series without bound.
        m.child(m.replies, code if code.isdigit() and len(code) == 3 else "other").inc()


def message_stored(size: int, seconds: float) -> None:
    """A message of ``size`` bytes was stored and acknowledged, ``seconds`` after its dot."""
    if (m := _metrics) is not None:
        m.stored.inc()
        m.stored_bytes.inc(size)
        m.store_seconds.observe(seconds)


def processed(outcome: str, latency: float | None) -> None:
    """Processing recorded ``outcome`` for a message received ``latency`` seconds ago."""
    if (m := _metrics) is not None:
        m.child(m.processed, outcome).inc()
        if latency is not None:
            m.processing_latency.observe(max(latency, 0.0))


def processing_batch(seconds: float) -> None:
    """A processing batch took ``seconds``."""
    if (m := _metrics) is not None:
        m.batch_seconds.observe(seconds)


def sender_check(check: str, result: str) -> None:
    """Sender check ``check`` gave ``result`` for a transaction."""
    if (m := _metrics) is not None:
        m.child(m.verdicts, check, result).inc()


def signed_address(outcome: str) -> None:
    """A signed address was decided at RCPT: ``accepted``, or why it was refused
    (``forged``, ``malformed``, ``expired``, ``gone``)."""
    if (m := _metrics) is not None:
        m.child(m.signed_addresses, outcome).inc()
