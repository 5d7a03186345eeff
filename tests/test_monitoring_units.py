"""The monitoring listener's parts on their own: the HTTP responder against odd and
hostile clients (real sockets on loopback), and the probe that keeps blocking checks
off the event loop."""

from __future__ import annotations

import asyncio
import threading

import pytest

from django_inbound_smtp.monitoring import http
from django_inbound_smtp.monitoring.http import HttpListener
from django_inbound_smtp.monitoring.service import Probe


async def _route(path: str) -> http.Response:
    if path == "/boom":
        raise RuntimeError("secret=hunter2")
    return 200, "text/plain", f"you asked {path}\n".encode()


async def _exchange(port: int, request: bytes) -> bytes:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(request)
    await writer.drain()
    answer = await asyncio.wait_for(reader.read(), 10)
    writer.close()
    await writer.wait_closed()
    return answer


async def test_http_listener_answers_one_request_per_connection() -> None:
    listener = HttpListener(_route)
    _, port = await listener.start("127.0.0.1", 0)
    try:
        answer = await _exchange(port, b"GET /metrics?x=1 HTTP/1.1\r\nHost: a\r\n\r\n")
        head, body = answer.split(b"\r\n\r\n", 1)
        assert head.startswith(b"HTTP/1.0 200 OK\r\n")
        assert b"Content-Length: 19\r\n" in head
        assert b"Connection: close" in head
        assert body == b"you asked /metrics\n"
        head_only = await _exchange(port, b"HEAD /x HTTP/1.0\r\n\r\n")
        assert head_only.startswith(b"HTTP/1.0 200 OK")
        assert head_only.endswith(b"\r\n\r\n")
        assert (await _exchange(port, b"POST / HTTP/1.0\r\n\r\n")).startswith(b"HTTP/1.0 405")
        assert (await _exchange(port, b"EHLO client\r\n\r\n")).startswith(b"HTTP/1.0 400")
        # A route that fails: 500 with a generic text; the exception stays in the log.
        failed = await _exchange(port, b"GET /boom HTTP/1.0\r\n\r\n")
        assert failed.startswith(b"HTTP/1.0 500")
        assert b"hunter2" not in failed
        # A head past MAX_HEAD: no answer, the connection is closed.
        flood = b"GET / HTTP/1.0\r\nX: " + b"a" * (http.MAX_HEAD + 10) + b"\r\n\r\n"
        assert await _exchange(port, flood) == b""
    finally:
        await listener.close()


async def test_http_listener_cuts_a_silent_client(monkeypatch) -> None:
    monkeypatch.setattr(http, "READ_TIMEOUT", 0.2)
    listener = HttpListener(_route)
    _, port = await listener.start("127.0.0.1", 0)
    try:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(b"GET / HTTP/1.0\r\n")  # and then nothing
        assert await asyncio.wait_for(reader.read(), 5) == b""
        writer.close()
        await writer.wait_closed()
    finally:
        await listener.close()


async def test_probe_runs_one_call_at_a_time_and_caches() -> None:
    release = threading.Event()
    calls: list[str] = []

    def hangs() -> int:
        calls.append(threading.current_thread().name)
        release.wait(10)
        return len(calls)

    probe = Probe(hangs, ttl=60, name="test")
    try:
        # A hung call: every caller gives up at its deadline, and no caller starts a
        # second call (no thread, no connection per request).
        for _ in range(3):
            with pytest.raises(TimeoutError):
                await probe(0.05)
        assert len(calls) == 1
        release.set()
        assert await probe(5) == 1
        assert await probe(5) == 1  # cached for ttl
        assert calls == ["inbound-smtp-test"]
    finally:
        release.set()
        probe.close()
