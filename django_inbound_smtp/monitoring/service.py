"""``/metrics``, ``/healthz`` and ``/readyz`` for ``manage.py smtpd --metrics``.

One :class:`MonitoringServer` per ``smtpd`` process that serves HTTP: the single
server, or the parent of ``--workers N`` (which sums its workers' values from
prometheus-client's multiprocess folder; workers serve no HTTP themselves).

- ``/healthz`` (liveness) is answered by the event loop itself: if it answers, the loop
  is not blocked.
- ``/readyz`` runs the readiness checks (database, storage, disk space) in threads of
  its own with a ``READY_TIMEOUT``, plus the SMTP state the command reports (serving,
  stopping, workers up); 200 when all pass, 503 otherwise, with a JSON body per check.
- ``/metrics`` refreshes the queue gauges (one thread, at most once per
  ``METRICS_CACHE`` seconds) and renders the text format in a thread.

Every blocking call goes through a :class:`Probe`: one thread, one call at a time,
callers arriving meanwhile share it, so a database that hangs costs one stuck thread,
not one per request.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import queue
import threading
import time
from collections.abc import Callable
from typing import Any, Generic, TypeVar

from django_inbound_smtp import _db, metrics
from django_inbound_smtp.conf import get_settings
from django_inbound_smtp.monitoring import readiness
from django_inbound_smtp.monitoring.collector import QueueCollector
from django_inbound_smtp.monitoring.http import HttpListener, Response
from django_inbound_smtp.monitoring.status import QueueStatus, queue_status

__all__ = ["MonitoringServer", "Probe", "SmtpState"]

T = TypeVar("T")
#: The command's view of its SMTP side: ``(ready, detail)``.
SmtpState = Callable[[], tuple[bool, str]]
JSON = "application/json"


class Probe(Generic[T]):
    """Runs blocking ``function`` in a thread of its own, one call at a time, and
    reuses its result for ``ttl`` seconds.

    A daemon thread, kept for the life of the probe (one database connection, not one
    per call): a call stuck on a hung database must not keep the process from exiting
    (the threads of a ``ThreadPoolExecutor`` are joined at exit)."""

    def __init__(self, function: Callable[[], T], *, ttl: float, name: str) -> None:
        self._function = function
        self._ttl = ttl
        self._calls: queue.SimpleQueue[asyncio.Future[T] | None] = queue.SimpleQueue()
        self._thread = threading.Thread(
            target=self._serve, name=f"inbound-smtp-{name}", daemon=True
        )
        self._running: asyncio.Future[T] | None = None
        self._result: tuple[float, T] | None = None

    async def __call__(self, within: float) -> T:
        """The result, fresh or at most ``ttl`` seconds old; ``TimeoutError`` after
        ``within`` seconds (the call goes on, and later callers wait for it)."""
        loop = asyncio.get_running_loop()
        if self._result is not None and loop.time() - self._result[0] < self._ttl:
            return self._result[1]
        if self._running is None:
            if not self._thread.is_alive():
                self._thread.start()
            self._running = loop.create_future()
            self._running.add_done_callback(self._done)
            self._calls.put(self._running)
        return await asyncio.wait_for(asyncio.shield(self._running), within)

    def _serve(self) -> None:
        try:
            while (future := self._calls.get()) is not None:
                try:
                    result = self._function()
                except BaseException as error:  # handed to the caller
                    _settle(future, error=error)
                else:
                    _settle(future, result=result)
        finally:
            _db.close_thread_connections()

    def _done(self, future: asyncio.Future[T]) -> None:
        self._running = None
        if not future.cancelled() and future.exception() is None:
            self._result = (asyncio.get_running_loop().time(), future.result())

    def close(self) -> None:
        """Let the thread go once its call in flight (if any) is done; it closes its
        database connections on the way out."""
        self._calls.put(None)


def _settle(future: asyncio.Future[Any], *, result: Any = None, error: Any = None) -> None:
    def settle() -> None:
        if future.done():
            return
        if error is not None:
            future.set_exception(error)
        else:
            future.set_result(result)

    with contextlib.suppress(RuntimeError):  # the loop is closed: nobody waits
        future.get_loop().call_soon_threadsafe(settle)


class MonitoringServer:
    """The HTTP listener and what it serves. ``multiprocess_dir``: the folder the
    workers of ``--workers`` write their metrics to (summed here)."""

    def __init__(self, *, smtp_state: SmtpState, multiprocess_dir: str | None = None) -> None:
        settings = get_settings()
        self._smtp_state = smtp_state
        self._multiprocess_dir = multiprocess_dir
        self._queue = Probe(_queue_or_none, ttl=settings.METRICS_CACHE, name="metrics")
        self._database = Probe(readiness.database, ttl=1.0, name="readyz-db")
        self._files = Probe(_files, ttl=1.0, name="readyz-files")
        self._collector = QueueCollector()
        self._registry = self._build_registry() if metrics.available() else None
        self._http = HttpListener(self._route)
        self._started = time.monotonic()

    def _build_registry(self) -> Any:
        from prometheus_client import CollectorRegistry, ProcessCollector
        from prometheus_client.multiprocess import MultiProcessCollector

        registry = CollectorRegistry(auto_describe=False)
        if self._multiprocess_dir is not None:
            MultiProcessCollector(registry, path=self._multiprocess_dir)  # type: ignore[no-untyped-call]
        else:
            own = metrics.registry()
            if own is not None:
                registry.register(_Forward(own))
            ProcessCollector(registry=registry)
        registry.register(self._collector)
        return registry

    async def start(self, host: str, port: int, *, serving: bool = True) -> tuple[str, int]:
        """Bind (and accept, unless ``serving=False``: then :meth:`serve` does); the
        bound ``(host, port)``."""
        return await self._http.start(host, port, serving=serving)

    async def serve(self) -> None:
        """Start accepting requests."""
        await self._http.serve()

    async def close(self) -> None:
        """Stop listening and let the probe threads go."""
        await self._http.close()
        for probe in (self._queue, self._database, self._files):
            probe.close()

    async def _route(self, path: str) -> Response:
        if path == "/healthz":
            uptime = round(time.monotonic() - self._started, 3)
            return 200, JSON, _json({"status": "ok", "uptime_seconds": uptime})
        if path == "/readyz":
            return await self._ready()
        if path == "/metrics" and self._registry is not None:
            return await self._metrics()
        return 404, "text/plain", b"not found: try /metrics, /healthz or /readyz\n"

    async def _ready(self) -> Response:
        timeout = get_settings().READY_TIMEOUT
        ready, detail = self._smtp_state()
        checks: dict[str, dict[str, Any]] = {"smtp": {"ok": ready, "detail": detail}}
        database, found = await asyncio.gather(
            _bounded(self._database(timeout), timeout), _bounded(self._files(timeout), timeout)
        )
        checks["database"] = _check(database)
        if isinstance(found, dict):
            checks.update({name: _check(result) for name, result in found.items()})
        else:
            checks["storage"] = checks["disk_space"] = _check(found)
        ok = all(check["ok"] for check in checks.values())
        body = {"status": "ready" if ok else "not ready", "checks": checks}
        return (200 if ok else 503), JSON, _json(body)

    async def _metrics(self) -> Response:
        from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

        try:
            self._collector.latest = await self._queue(get_settings().READY_TIMEOUT)
        except TimeoutError:
            self._collector.latest = None
        body = await asyncio.to_thread(generate_latest, self._registry)  # type: ignore[arg-type]
        return 200, CONTENT_TYPE_LATEST, body


class _Forward:
    """A collector yielding what another registry holds (this process's metrics)."""

    def __init__(self, registry: Any) -> None:
        self._registry = registry

    def collect(self) -> Any:
        return self._registry.collect()


def _queue_or_none() -> QueueStatus | None:
    try:
        return queue_status()
    except Exception:
        return None  # shown as inbound_smtp_database_up 0


def _files() -> dict[str, readiness.Result]:
    return {"storage": readiness.storage(), "disk_space": readiness.disk_space()}


async def _bounded(call: Any, seconds: float) -> Any:
    try:
        return await call
    except TimeoutError:
        return (False, f"no answer within {seconds:g} s")


def _check(result: readiness.Result) -> dict[str, Any]:
    ok, detail = result
    return {"ok": ok, "detail": detail}


def _json(value: Any) -> bytes:
    return json.dumps(value, indent=1).encode() + b"\n"
