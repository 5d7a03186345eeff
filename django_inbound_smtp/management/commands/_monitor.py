"""``smtpd``'s metrics and health listener around its serving coroutine, and its
one-sentence bind errors (shared by the SMTP and HTTP listeners)."""

from __future__ import annotations

import asyncio
import errno
import re
from collections.abc import Awaitable, Callable

from django.core.management.base import CommandError

from django_inbound_smtp import metrics
from django_inbound_smtp.conf import get_settings
from django_inbound_smtp.monitoring.service import MonitoringServer, SmtpState

__all__ = ["Monitor", "bind_error", "forget_worker", "metrics_bind", "parse_addrport"]

_ADDRPORT = re.compile(r"^(?:\[(?P<ipv6>[^\]]+)\]|(?P<host>[^:\[\]]*)):(?P<port>\d+)$")


def parse_addrport(value: str) -> tuple[str, int]:
    """``HOST:PORT``, ``[IPv6]:PORT`` or a bare ``PORT`` (on 127.0.0.1) to ``(host, port)``."""
    if value.isdigit():
        return "127.0.0.1", int(value)
    match = _ADDRPORT.match(value)
    if not match or int(match["port"]) > 65535:
        raise CommandError(f"{value!r} is not a valid address:port (e.g. 127.0.0.1:8025).")
    host = match["ipv6"] or match["host"] or "127.0.0.1"
    return host, int(match["port"])


class Monitor:
    """The metrics and health listener (if ``bind``) around the serving coroutine."""

    def __init__(
        self,
        bind: tuple[str, int] | None,
        state: SmtpState,
        *,
        multiprocess_dir: str | None = None,
    ) -> None:
        self.bind = bind
        self.state = state
        self.multiprocess_dir = multiprocess_dir
        self.address: tuple[str, int] | None = None
        self._serving = asyncio.Event()

    def smtp_serving(self) -> None:
        """Called (on the loop) once the SMTP listeners accept: the HTTP one opens then."""
        self._serving.set()

    async def around(self, serving: Awaitable[None]) -> None:
        if self.bind is None:
            await serving
            return
        server = MonitoringServer(smtp_state=self.state, multiprocess_dir=self.multiprocess_dir)
        try:
            # Bound with the SMTP listeners (before privileges drop), but accepting only
            # from when they do: a /readyz before the drop would open the probe's
            # database connection as root (and keep it).
            self.address = await server.start(*self.bind, serving=False)
        except OSError as error:
            if asyncio.iscoroutine(serving):
                serving.close()  # never started
            await server.close()
            raise CommandError(bind_error(*self.bind, error)) from error

        async def open_when_serving() -> None:
            await self._serving.wait()
            await server.serve()

        opener = asyncio.ensure_future(open_when_serving())
        try:
            await serving
        finally:
            opener.cancel()
            await server.close()


def metrics_bind(value: str | None) -> tuple[str, int] | None:
    value = value or get_settings().METRICS_BIND
    if not value:
        return None
    if not metrics.available():
        raise CommandError(
            "--metrics (or METRICS_BIND) needs prometheus-client: "
            "pip install 'django-inbound-smtp[metrics]'."
        )
    return parse_addrport(value)


def forget_worker(folder: str) -> Callable[[int], None]:
    def forget(pid: int) -> None:
        # A dead worker's open-session gauge must not be summed any more; its counters
        # stay (they only ever grow: the totals stay monotonic across restarts).
        from prometheus_client import multiprocess

        multiprocess.mark_process_dead(pid, folder)  # type: ignore[no-untyped-call]

    return forget


def bind_error(host: str, port: int, error: OSError) -> str:
    if error.errno == errno.EACCES:
        return (
            f"Permission denied binding {host}:{port}. Ports below 1024 need privileges: "
            "listen on a high port behind a redirect (e.g. 25 -> 2525), or grant "
            "CAP_NET_BIND_SERVICE, or start as root with --user, or use systemd socket "
            "activation."
        )
    if error.errno == errno.EADDRINUSE:
        return f"{host}:{port} is already in use by another process."
    if error.errno == errno.EADDRNOTAVAIL:
        return f"{host} is not an address of this machine."
    return f"Cannot listen on {host}:{port}: {error.strerror or error}."
