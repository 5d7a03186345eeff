"""Review: a message handed to the GroupCommitter just as its last writer finishes
must not wait for the next message.

Real store, real database threads. The only hook is timing: the after-commit hook
(which runs in the database thread) wakes a "session" on the loop, exactly as another
thread's result (a spool rewrite, a validator) wakes a session that then hands over
its message in the same loop iteration as the writer's own result."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest

from django_inbound_smtp.lifecycle import schedule
from django_inbound_smtp.models import InboundMessage
from django_inbound_smtp.smtp import _bridge
from django_inbound_smtp.spool import Spool
from tests.helpers import received_envelope

pytestmark = pytest.mark.django_db(transaction=True)


def _spool(n: int) -> Spool:
    spool = Spool(None, memory_limit=1 << 20, head_limit=1 << 16)
    spool.add(b"Subject: m%d\r\n\r\nbody %d\r\n" % (n, n))
    spool.finish()
    return spool


async def test_a_message_arriving_as_the_writer_ends_is_stored(monkeypatch: Any) -> None:
    loop = asyncio.get_running_loop()
    session_ready: asyncio.Future[None] = loop.create_future()
    original = schedule.schedule

    def busy_loop() -> None:  # the loop is busy for a moment (a TLS handshake, GC)
        time.sleep(0.3)

    def hook(pks: Any) -> None:  # in the database thread, just before the commit returns
        loop.call_soon_threadsafe(busy_loop)
        loop.call_soon_threadsafe(session_ready.set_result, None)
        original(pks)

    monkeypatch.setattr(schedule, "schedule", hook)
    _bridge.open_database_threads()
    committer = _bridge.GroupCommitter(writers=1)
    try:
        with schedule.recording():
            first = asyncio.ensure_future(committer.deliver(received_envelope("QW1"), _spool(1)))

            async def session() -> int:
                await session_ready  # woken by another thread, like handle_DATA is
                # handler._deliver: the delivery is its own task
                return await asyncio.ensure_future(
                    committer.deliver(received_envelope("QW2"), _spool(2))
                )

            second = asyncio.ensure_future(session())
            assert await asyncio.wait_for(first, 10)
            done, _ = await asyncio.wait({second}, timeout=5)
            assert second in done, "the second message waits for a writer that never comes"
            stored = InboundMessage.objects.filter(queue_id="QW2").exists
            assert await _bridge.run_sync(stored)
    finally:
        await _bridge.close_connections()
