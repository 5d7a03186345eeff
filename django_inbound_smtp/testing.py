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

__all__ = ["RunningServer", "running_server"]


@dataclass(frozen=True)
class RunningServer:
    """Where a test server listens."""

    host: str
    port: int
    hostname: str


@contextmanager
def running_server(
    *, host: str = "127.0.0.1", hostname: str = "mx.test", grace: float = 5.0
) -> Iterator[RunningServer]:
    """Run the inbound SMTP server on ``host`` port 0 for the duration of the block.

    On exit the server stops the way ``smtpd`` does on SIGTERM: commits and message
    processing in flight finish (within ``grace`` seconds) before the block returns,
    so assertions after the block see every side effect.
    """
    loop = asyncio.new_event_loop()
    ready = threading.Event()
    failure: list[BaseException] = []
    server = InboundServer(hostname=hostname)
    bound: list[tuple[str, int]] = []

    def serve() -> None:
        asyncio.set_event_loop(loop)
        try:
            bound.append(loop.run_until_complete(server.start(host, 0)))
        except BaseException as error:
            failure.append(error)
            ready.set()
            return
        ready.set()
        loop.run_forever()

    thread = threading.Thread(target=serve, name="inbound-smtp-test-server", daemon=True)
    thread.start()
    ready.wait()
    if failure:
        loop.close()
        raise failure[0]
    try:
        yield RunningServer(host=bound[0][0], port=bound[0][1], hostname=hostname)
    finally:
        asyncio.run_coroutine_threadsafe(server.stop(grace=grace), loop).result(grace * 3)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(grace * 3)
        loop.close()
