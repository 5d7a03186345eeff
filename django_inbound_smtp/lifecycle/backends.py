"""Dispatchers: how stored messages reach processing, chosen by ``DISPATCH``.

In the manner of Django's email and cache backends: one small class per way of
running work, and a setting that names one.

- ``inline``: :class:`InlineDispatcher`, processing in this process, in
  ``PROCESSING_CONCURRENCY`` threads that each take a batch of waiting messages.
- ``celery``: :class:`CeleryDispatcher`, one ``process_messages`` task per batch of
  messages, sent from a background thread so a broker outage never blocks a commit.
- ``tasks``: :class:`TasksDispatcher`, Django 6's ``django.tasks`` with whatever task
  backend the project configured; one task per batch.
- ``memory``: :class:`MemoryDispatcher`, records instead of running (tests).
- a dotted path to a :class:`Dispatcher` subclass of your own.

:func:`send_celery_task` is the one place a Celery task is sent (processing tasks
and mailbox handlers that are tasks); a recording :class:`MemoryDispatcher` (see
``schedule.recording``) is the one test seam, catching both.
"""

from __future__ import annotations

import logging
import threading
from collections import deque
from collections.abc import Callable, Sequence
from contextvars import ContextVar
from typing import Any

from django_inbound_smtp._celery import celery_app
from django_inbound_smtp._db import close_thread_connections
from django_inbound_smtp.conf import get_settings

__all__ = [
    "PROCESS_BATCH_TASK",
    "PROCESS_TASK",
    "CeleryDispatcher",
    "Dispatcher",
    "InlineDispatcher",
    "MemoryDispatcher",
    "TasksDispatcher",
    "send_celery_task",
]

logger = logging.getLogger(__name__)

#: Name of the Celery task that processes one message (see ``tasks.py``).
PROCESS_TASK = "django_inbound_smtp.tasks.process_message"
#: Name of the Celery task that processes a batch of messages (what is sent now).
PROCESS_BATCH_TASK = "django_inbound_smtp.tasks.process_messages"
#: Messages one inline thread (or one ``django.tasks`` task) processes at once: enough
#: to share a claim, a parse write and an outcome write among many messages, few
#: enough that one slow receiver holds up little.
BATCH = 32

recording: ContextVar[MemoryDispatcher | None] = ContextVar("inbound_smtp_recording", default=None)


class Dispatcher:
    """Hands stored messages (primary keys) to processing. Never blocks, never raises."""

    def enqueue(self, pks: Sequence[int]) -> None:
        raise NotImplementedError

    def queue_owner(self) -> str:
        """Who holds a message this dispatcher queued (``claimed_by`` of a waiting
        row), so that its death can be noticed; ``""`` when it is held elsewhere."""
        return ""

    def drain(self, timeout: float | None = None) -> bool:
        """Wait until work queued in this process has finished; ``True`` if none is left."""
        return True

    def shutdown(self) -> None:
        """Drop queued work that has not started (it stays ``received``; the sweeper
        schedules it again). Running work is not interrupted."""


class _Workers:
    """A queue of primary keys and the threads that take batches of them."""

    def __init__(self, *, threads: int, batch: int, handle: Callable[[list[int]], None]) -> None:
        self._threads, self._batch, self._handle = threads, batch, handle
        self._queue: deque[int] = deque()
        self._queued: set[int] = set()  # never queued twice in this process
        self._busy = 0
        self._running = 0
        self._generation = 0
        self._changed = threading.Condition()

    def put(self, pks: Sequence[int]) -> None:
        with self._changed:
            for pk in pks:
                if pk not in self._queued:
                    self._queued.add(pk)
                    self._queue.append(pk)
            waiting_batches = -(-len(self._queue) // self._batch)
            while self._running < self._threads and self._running - self._busy < waiting_batches:
                thread = threading.Thread(
                    target=self._run,
                    args=(self._generation,),
                    name="inbound-smtp-process",
                    daemon=True,
                )
                try:
                    thread.start()
                except RuntimeError:
                    # Out of threads for now: the pks stay queued for the next put() (a
                    # new message, the sweeper); counting a thread that never ran would
                    # stop this queue for the life of the process.
                    logger.exception("could not start a processing thread")
                    break
                self._running += 1  # the thread waits for this lock before it looks
            self._changed.notify_all()

    def _run(self, generation: int) -> None:
        try:
            self._serve(generation)
        finally:
            close_thread_connections()  # a thread that ends leaves no connection behind

    def _serve(self, generation: int) -> None:
        while True:
            with self._changed:
                while not self._queue and generation == self._generation:
                    if not self._changed.wait(timeout=30):
                        break  # idle: let the thread go; put() starts another
                if generation != self._generation or not self._queue:
                    if generation == self._generation:
                        self._running -= 1  # drop() forgot the older generations
                    self._changed.notify_all()
                    return
                pks = [self._queue.popleft() for _ in range(min(self._batch, len(self._queue)))]
                self._busy += 1
            try:
                self._handle(pks)
            except Exception:
                # Database trouble: the messages stay claimed or received; the sweeper
                # takes them again.
                logger.exception("processing of %d message(s) failed", len(pks))
            finally:
                with self._changed:
                    self._busy -= 1
                    self._queued.difference_update(pks)
                    self._changed.notify_all()

    def drain(self, timeout: float | None) -> bool:
        with self._changed:
            return self._changed.wait_for(lambda: not self._queue and not self._busy, timeout)

    def drop(self) -> None:
        with self._changed:
            self._queued.difference_update(self._queue)
            self._queue.clear()
            self._generation += 1
            self._running = 0
            self._changed.notify_all()


class InlineDispatcher(Dispatcher):
    """Processing in this process, in ``PROCESSING_CONCURRENCY`` threads, in batches."""

    def __init__(self) -> None:
        self._workers = _Workers(
            threads=get_settings().PROCESSING_CONCURRENCY, batch=BATCH, handle=self._process
        )

    @staticmethod
    def _process(pks: list[int]) -> None:
        from django_inbound_smtp.lifecycle import owners, process

        process.process_batch(pks, owner=owners.thread_owner())

    def enqueue(self, pks: Sequence[int]) -> None:
        self._workers.put(pks)

    def queue_owner(self) -> str:
        from django_inbound_smtp.lifecycle import owners

        return owners.process_owner()

    def drain(self, timeout: float | None = None) -> bool:
        return self._workers.drain(timeout)

    def shutdown(self) -> None:
        self._workers.drop()


def send_celery_task(name: str, args: list[Any], *, known_only: bool = False) -> None:
    """Send Celery task ``name`` with ``args`` through the project's Celery app.

    ``known_only``: refuse (``LookupError``) a name the app has no task for. Within
    ``schedule.recording()`` the task is recorded instead of sent."""
    recorder = recording.get()
    if recorder is not None:
        recorder.tasks.append((name, args))
        return
    app = celery_app()
    if known_only and name not in app.tasks:
        raise LookupError(
            f"mailbox handler {name!r} is neither an importable callable nor a task "
            "registered with the project's Celery app"
        )
    app.send_task(
        name,
        args=args,
        # Bounded: a broker outage must not pin a thread; the sweeper retries.
        retry=True,
        retry_policy={"max_retries": 2, "interval_start": 0, "interval_step": 0.5},
    )


class _Sender(Dispatcher):
    """Sends work to another system from one background thread."""

    def __init__(self) -> None:
        self._workers = _Workers(threads=1, batch=BATCH, handle=self._send_all)

    def _send_all(self, pks: list[int]) -> None:
        raise NotImplementedError

    def enqueue(self, pks: Sequence[int]) -> None:
        self._workers.put(pks)

    def drain(self, timeout: float | None = None) -> bool:
        return self._workers.drain(timeout)

    def shutdown(self) -> None:
        self._workers.drop()


class CeleryDispatcher(_Sender):
    """One ``process_messages`` Celery task per batch (one broker round trip for up to
    ``BATCH`` messages)."""

    def _send_all(self, pks: list[int]) -> None:
        try:
            send_celery_task(PROCESS_BATCH_TASK, [pks])
        except Exception as error:
            logger.warning(
                "could not send processing task for %d message(s) (%s); the sweeper will retry",
                len(pks),
                type(error).__name__,
            )


class TasksDispatcher(_Sender):
    """Django 6's ``django.tasks``: one ``process_messages`` task per batch, with the
    task backend the project configured (``TASKS``)."""

    def _send_all(self, pks: list[int]) -> None:
        from django_inbound_smtp.lifecycle import django_task

        try:
            django_task.process_messages.enqueue(pks)
        except Exception as error:
            logger.warning(
                "could not enqueue processing of %d message(s) (%s); the sweeper will retry",
                len(pks),
                type(error).__name__,
            )


class MemoryDispatcher(Dispatcher):
    """Records what would be processed and which Celery tasks would be sent."""

    def __init__(self) -> None:
        self.scheduled: list[int] = []
        self.tasks: list[tuple[str, list[Any]]] = []

    def enqueue(self, pks: Sequence[int]) -> None:
        self.scheduled.extend(pks)
