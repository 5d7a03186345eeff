"""The worker's side of ``smtpd --workers``: its channel to the parent, its log labels.

The parent passes one end of a socket pair (see :mod:`.workers`). The worker writes one
JSON line on it, when it serves or when it could not bind; the parent never writes, so
the end of file is the only thing the worker ever reads: its parent is gone.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import signal
import socket
from typing import Any

__all__ = ["ParentChannel", "label_logs"]


def label_logs(index: int) -> None:
    """Make every log record of this worker say which worker wrote it: a ``worker``
    attribute for structured handlers, and a ``[worker N, pid P]`` prefix on the
    records of this app, so any formatter shows which worker served a session."""
    previous = logging.getLogRecordFactory()
    prefix = f"[worker {index}, pid {os.getpid()}] "

    def factory(*args: Any, **kwargs: Any) -> logging.LogRecord:
        record = previous(*args, **kwargs)
        record.worker = index
        if record.name.startswith("django_inbound_smtp") and isinstance(record.msg, str):
            record.msg = prefix + record.msg
        return record

    logging.setLogRecordFactory(factory)


class ParentChannel:
    """The worker's end of the socket pair its parent passed as file descriptor ``fd``."""

    def __init__(self, fd: int) -> None:
        self._socket = socket.socket(fileno=fd)

    def ready(self, report: dict[str, Any]) -> None:
        """Tell the parent this worker serves (``report``: its addresses); from now on,
        stop gracefully (as on SIGTERM) if the parent dies. Called in the event loop."""
        self._send(report)
        self._socket.settimeout(0)  # non-blocking: read only when readable
        asyncio.get_running_loop().add_reader(self._socket.fileno(), self._parent_gone)

    def failed(self, reason: str) -> None:
        """Tell the parent this worker could not start, in one sentence."""
        self._send({"error": reason})

    def close(self) -> None:
        self._socket.close()

    def _send(self, report: dict[str, Any]) -> None:
        self._socket.sendall(json.dumps(report).encode() + b"\n")

    def _parent_gone(self) -> None:
        try:
            if self._socket.recv(1):
                return  # the parent sends nothing; ignore it if it ever does
        except BlockingIOError:
            return
        except OSError:
            pass  # a reset is as final as the end of file
        asyncio.get_running_loop().remove_reader(self._socket.fileno())
        # Through the server's own SIGTERM handler: the graceful stop, never a cut commit.
        os.kill(os.getpid(), signal.SIGTERM)
