"""Mailbox handlers run by the worker in the Celery tests.

The worker is another process: each call is appended to the file named by
``INBOUND_TEST_HANDLER_LOG``, which the test reads.
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any


def _log(event: str) -> None:
    with Path(os.environ["INBOUND_TEST_HANDLER_LOG"]).open("a") as handle:
        handle.write(event + "\n")


def record(*, message: Any, **kwargs: Any) -> None:
    """Note that the message was handled."""
    _log(f"done {message.subject}")


def slow(*, message: Any, **kwargs: Any) -> None:
    """Start, then wait until the test creates the release file (or 60 s)."""
    _log(f"start {message.subject}")
    release = Path(os.environ["INBOUND_TEST_HANDLER_LOG"] + ".release")
    deadline = time.monotonic() + 60
    while not release.exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    _log(f"done {message.subject}")


def fail_until_released(*, message: Any, **kwargs: Any) -> None:
    """Raise until the test creates the release file."""
    if not Path(os.environ["INBOUND_TEST_HANDLER_LOG"] + ".release").exists():
        _log(f"fail {message.subject}")
        raise RuntimeError("handler not ready")
    _log(f"done {message.subject}")


def record_host(*, message: Any, **kwargs: Any) -> None:
    """Note the message with the worker's pid, a little slowly: two tasks for one
    message (a re-dispatch racing the first) overlap, and only a claim keeps them
    from both running the handler."""
    _log(f"start {message.queue_id} {os.getpid()}")
    time.sleep(0.05)
    _log(f"done {message.queue_id} {os.getpid()}")
