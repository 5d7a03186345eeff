"""Test utilities for projects using django-inbound-smtp (public API).

``running_server()`` runs the real listener on a loopback ephemeral port in a
background thread, so a test can send mail with ``smtplib`` and assert on what was
stored. Tests that use it need a database visible from other threads: pytest-django's
``transactional_db`` or Django's ``TransactionTestCase``.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

from django_inbound_smtp.smtp.server import InboundServer

__all__ = ["RunningServer", "ServerThread", "running_server"]


@dataclass(frozen=True)
class RunningServer:
    """Where a test server listens."""

    host: str
    port: int
    hostname: str


class ServerThread:
    """The inbound SMTP server on its own event loop in a background thread.

    ``start()`` binds port 0 on ``host`` and returns where it listens; ``stop()`` stops it
    the way ``smtpd`` does on SIGTERM (idle sessions get ``421``, commits finish,
    processing in flight is waited for) and returns when all of that is done.
    """

    def __init__(self, *, host: str = "127.0.0.1", hostname: str = "mx.test") -> None:
        self.host = host
        self.server = InboundServer(hostname=hostname)
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._run, name="inbound-smtp-test", daemon=True)
        self._ready = threading.Event()
        self._failure: BaseException | None = None
        self._address: RunningServer | None = None

    def _run(self) -> None:
        asyncio.set_event_loop(self._loop)
        try:
            host, port = self._loop.run_until_complete(self.server.start(self.host, 0))
            self._address = RunningServer(host=host, port=port, hostname=self.server.hostname)
        except BaseException as error:
            self._failure = error
            return
        finally:
            self._ready.set()
        self._loop.run_forever()

    def start(self) -> RunningServer:
        """Start serving; raise what binding raised, if it failed."""
        self._thread.start()
        self._ready.wait()
        if self._failure is not None:
            self._loop.close()
            raise self._failure
        assert self._address is not None
        return self._address

    def stop(self, *, grace: float = 5.0) -> None:
        """Stop serving and wait for the server's work in flight (at most ~3x ``grace``)."""
        future = asyncio.run_coroutine_threadsafe(self.server.stop(grace=grace), self._loop)
        try:
            future.result(timeout=grace * 3 + 5)
        finally:
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(grace * 3 + 5)
            if not self._thread.is_alive():
                self._loop.close()


@contextmanager
def running_server(
    *, host: str = "127.0.0.1", hostname: str = "mx.test", grace: float = 5.0
) -> Iterator[RunningServer]:
    """Run the inbound SMTP server on ``host`` port 0 for the duration of the block.

    On exit the server stops the way ``smtpd`` does on SIGTERM: commits and message
    processing in flight finish (within ``grace`` seconds) before the block returns,
    so assertions after the block see every side effect.
    """
    thread = ServerThread(host=host, hostname=hostname)
    address = thread.start()
    try:
        yield address
    finally:
        thread.stop(grace=grace)
