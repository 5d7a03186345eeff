"""A tiny HTTP/1.0 responder on the asyncio loop: ``GET``/``HEAD`` a path, get a body.

Enough for Prometheus, Kubernetes probes, ``curl`` and systemd helpers; no keep-alive,
no request bodies, no chunking. Each connection sends one request head (at most
``MAX_HEAD`` bytes, within ``READ_TIMEOUT`` seconds), gets one response and is closed,
so a stalled or hostile client holds a connection for seconds, not for ever. Pure
asyncio (no Django).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from http import HTTPStatus

__all__ = ["HttpListener", "Response"]

logger = logging.getLogger(__name__)

MAX_HEAD = 8 * 1024
READ_TIMEOUT = 5.0
BACKLOG = 100  # asyncio's own
#: (status, content type, body)
Response = tuple[int, str, bytes]
Route = Callable[[str], Awaitable[Response]]


class HttpListener:
    """Serves ``route(path)`` for every ``GET`` or ``HEAD`` request."""

    def __init__(self, route: Route) -> None:
        self._route = route
        self._server: asyncio.Server | None = None
        self._clients: set[asyncio.StreamWriter] = set()

    async def start(self, host: str, port: int, *, serving: bool = True) -> tuple[str, int]:
        """Bind ``host:port`` (0: any free port); the bound address. With
        ``serving=False`` nothing is accepted until :meth:`serve`: connections wait in
        the kernel's queue meanwhile."""
        self._server = await asyncio.start_server(
            self._serve, host, port, limit=MAX_HEAD, start_serving=serving
        )
        if not serving:
            # asyncio listens only when it starts serving; a client arriving before
            # would be refused, not queued. A duplicate descriptor shares the socket.
            for wrapped in self._server.sockets:
                with wrapped.dup() as sock:
                    sock.listen(BACKLOG)
        bound = self._server.sockets[0].getsockname()
        return str(bound[0]), int(bound[1])

    async def serve(self) -> None:
        """Start accepting (after ``start(..., serving=False)``)."""
        if self._server is not None:
            await self._server.start_serving()

    async def close(self) -> None:
        """Stop listening and cut connections still open."""
        if self._server is not None:
            self._server.close()
        for writer in list(self._clients):
            writer.transport.abort()
        if self._server is not None:
            await self._server.wait_closed()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._clients.add(writer)
        try:
            try:
                head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), READ_TIMEOUT)
            except (asyncio.IncompleteReadError, asyncio.LimitOverrunError, TimeoutError):
                return  # not a request we answer: just hang up
            parts = head.split(b"\r\n", 1)[0].decode("latin-1").split()
            if len(parts) != 3 or not parts[2].startswith("HTTP/"):
                status, kind, body = 400, "text/plain", b"bad request\n"
            elif parts[0] not in ("GET", "HEAD"):
                status, kind, body = 405, "text/plain", b"GET or HEAD only\n"
            else:
                try:
                    status, kind, body = await self._route(parts[1].split("?", 1)[0])
                except Exception:
                    logger.exception("monitoring request for %r failed", parts[1][:100])
                    status, kind, body = 500, "text/plain", b"internal error\n"
            reason = HTTPStatus(status).phrase
            writer.write(
                f"HTTP/1.0 {status} {reason}\r\nContent-Type: {kind}\r\n"
                f"Content-Length: {len(body)}\r\nCache-Control: no-store\r\n"
                "Connection: close\r\n\r\n".encode("latin-1")
                + (b"" if parts and parts[0] == "HEAD" else body)
            )
            await writer.drain()
        except (ConnectionError, OSError):
            pass  # the client went away
        finally:
            self._clients.discard(writer)
            writer.close()
            with contextlib.suppress(ConnectionError, OSError):
                await writer.wait_closed()
