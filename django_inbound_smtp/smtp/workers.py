"""``smtpd --workers N``: one parent process, N worker processes serving the same ports.

One Python process is one core (the GIL), so several processes share each listening
port with ``SO_REUSEPORT``: every worker binds its own listening socket on the same
address and the Linux kernel spreads new connections among them. The parent serves
nothing. It reserves the ports (so port 0 means one port for all workers), starts the
workers, prints the banner once every one is serving, restarts a worker that dies, and
forwards SIGINT/SIGTERM (each worker stops gracefully, as a single ``smtpd`` does) and
SIGHUP (TLS reload).

Workers are new processes running the same entry point again, not ``fork()``: by the
time the command runs, Django is set up, the system checks have opened database
connections, and libraries may have started threads; a forked copy would share those
sockets and hold locks it can never release. A fresh interpreter sets itself up like
any ``smtpd``.

Each worker talks to its parent over a socket pair: one line when it is serving (or the
one-sentence reason it could not bind), then nothing; the parent holds its end open for
the worker's life. End of file on that socket means the parent is gone (even
SIGKILLed), and the worker stops gracefully instead of living on unsupervised.

Every worker runs the periodic sweeper too: sweeps are safe to run concurrently (claims
are leases), so N workers sweep N times as often, which costs a few queries a minute.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import signal
import socket
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

__all__ = [
    "StartupFailed",
    "Supervisor",
    "Worker",
    "cpu_count",
    "entry_point",
    "reserve",
]

logger = logging.getLogger(__name__)

# A worker that dies is started again after FIRST_DELAY; one that dies again within
# STABLE seconds of its start waits twice as long, up to LAST_DELAY, so a crash loop
# (a broken receiver, a database down) logs a line every 30 s rather than spinning.
FIRST_DELAY = 0.5
LAST_DELAY = 30.0
STABLE = 10.0


class StartupFailed(Exception):
    """A worker could not start; the message is one sentence saying why."""


def cpu_count() -> int:
    """The cores this process may run on (its affinity mask, e.g. under ``taskset`` or a
    container's cpuset), which can be fewer than the machine has."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def reserve(host: str, port: int) -> list[socket.socket]:
    """Bind ``SO_REUSEPORT`` sockets, without listening, on every address of ``host`` at
    ``port`` (port 0: one free port, the same for every address); raises ``OSError``.

    Held by the parent until it stops: the workers bind the same port beside them, and
    a port 0 stays ours while a worker is restarted. A socket that never listens is
    never given a connection, so the parent receives none.
    """
    sockets: list[socket.socket] = []
    try:
        for family, kind, proto, _name, address in socket.getaddrinfo(
            host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
        ):
            # First without SO_REUSEPORT: the port must be free. Otherwise a second
            # `smtpd --workers` (same user) would silently share it with the first.
            with socket.socket(family, kind, proto) as probe:
                probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                if family == socket.AF_INET6:
                    probe.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
                probe.bind((address[0], port, *address[2:]))
                port = probe.getsockname()[1]
            sock = socket.socket(family, kind, proto)
            sockets.append(sock)
            # As asyncio sets them on the workers' listeners: the kernel lets sockets
            # share a port only when all of them (of one user) ask for it.
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
            if family == socket.AF_INET6:
                sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
            sock.bind((address[0], port, *address[2:]))
            port = sock.getsockname()[1]
    except BaseException:
        for sock in sockets:
            sock.close()
        raise
    return sockets


def entry_point(command: str) -> list[str]:
    """The command line that starts ``manage.py <command>`` again, as this process was
    started (``manage.py``, ``django-admin``, ``python -m django``, interpreter options
    included), so a worker runs whatever set-up that entry point does (``sys.path``,
    environment, settings). When the command was called from code (``call_command``),
    the command line is someone else's: ``python -m django`` is used, with
    ``DJANGO_SETTINGS_MODULE`` in the environment (the caller's job)."""
    argv, original = sys.argv, sys.orig_argv
    if len(argv) > 1 and argv[1] == command and len(original) >= len(argv):
        return [sys.executable, *original[1 : len(original) - len(argv) + 1]]
    return [sys.executable, "-m", "django"]


@dataclass
class Worker:
    """One worker process; ``report`` is what it said when it started serving."""

    index: int
    process: asyncio.subprocess.Process
    channel: socket.socket
    started: float
    report: dict[str, Any] = field(default_factory=dict)

    @property
    def pid(self) -> int:
        return self.process.pid

    @property
    def ready(self) -> bool:
        return bool(self.report) and "error" not in self.report


class Supervisor:
    """Starts ``count`` workers with ``command(index, channel_fd)`` and keeps them running
    until SIGINT or SIGTERM; :meth:`run` returns once every worker has exited."""

    def __init__(
        self,
        *,
        count: int,
        command: Callable[[int, int], Sequence[str]],
        env: dict[str, str] | None = None,
        on_exit: Callable[[int], None] | None = None,
    ) -> None:
        self.count = count
        self.command = command
        self.env = env
        #: Called with the pid of each worker that exited (metrics bookkeeping).
        self.on_exit = on_exit
        self.workers: dict[int, Worker] = {}
        self._stopping = asyncio.Event()

    async def run(self, on_ready: Callable[[list[Worker]], None]) -> None:
        """Start the workers, call ``on_ready`` once all serve, supervise them until a
        stop signal, and return when all have exited. Raises :class:`StartupFailed` if a
        worker could not start (the others are stopped first)."""
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(signum, self._stop, signum)
        loop.add_signal_handler(signal.SIGHUP, self._forward, signal.SIGHUP)
        try:
            started = await asyncio.gather(*(self._spawn(i) for i in range(1, self.count + 1)))
            failed = [worker for worker in started if not worker.ready]
            if failed and not self._stopping.is_set():
                self._stop(signal.SIGTERM)
                await asyncio.gather(*(worker.process.wait() for worker in started))
                raise StartupFailed(await _reason(failed[0]))
            if not self._stopping.is_set():
                on_ready(started)
            await asyncio.gather(*(self._keep(worker) for worker in started))
        finally:
            for signum in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
                loop.remove_signal_handler(signum)
            for worker in self.workers.values():
                worker.channel.close()

    async def _spawn(self, index: int) -> Worker:
        loop = asyncio.get_running_loop()
        ours, theirs = socket.socketpair()
        try:
            process = await asyncio.create_subprocess_exec(
                *self.command(index, theirs.fileno()),
                pass_fds=(theirs.fileno(),),
                env=self.env,
                # Its own process group: CONTROL-C in a terminal signals the whole
                # foreground group, and a worker signalled by the terminal and again by
                # us would count two signals and skip its grace period.
                process_group=0,
            )
        except BaseException:
            ours.close()
            raise
        finally:
            theirs.close()
        worker = Worker(index=index, process=process, channel=ours, started=loop.time())
        self.workers[index] = worker
        if self._stopping.is_set():  # a signal came while it was being started
            process.send_signal(signal.SIGTERM)
        ours.settimeout(0)  # non-blocking, as loop.sock_recv requires
        line = b""
        while not line.endswith(b"\n"):
            chunk = await loop.sock_recv(ours, 4096)
            if not chunk:
                break  # it exited (or closed its end) before saying it was ready
            line += chunk
        if line.endswith(b"\n"):
            worker.report = json.loads(line)
        return worker

    async def _keep(self, worker: Worker) -> None:
        # Wait for the worker to exit; unless we are stopping, start it again.
        delay = FIRST_DELAY
        while True:
            status = await worker.process.wait()
            worker.channel.close()
            if self.on_exit is not None:
                self.on_exit(worker.pid)
            if self._stopping.is_set():
                if status != 0:
                    logger.warning(
                        "worker %d (pid %d) exited with status %d while stopping",
                        worker.index,
                        worker.pid,
                        status,
                    )
                return
            lived = asyncio.get_running_loop().time() - worker.started
            if lived >= STABLE:
                delay = FIRST_DELAY
            logger.error(
                "worker %d (pid %d) exited with status %d; starting another in %.1f s",
                worker.index,
                worker.pid,
                status,
                delay,
            )
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stopping.wait(), delay)
            if self._stopping.is_set():
                return
            delay = min(delay * 2, LAST_DELAY)
            worker = await self._spawn(worker.index)
            if self._stopping.is_set():
                continue  # stopped as it started: wait for it, say nothing
            if worker.ready:
                logger.warning("worker %d restarted (pid %d)", worker.index, worker.pid)
            elif "error" in worker.report:
                # It exits now; the next turn logs that and waits longer before the next try.
                logger.error("worker %d did not start: %s", worker.index, worker.report["error"])

    def state(self) -> tuple[bool, str]:
        """Whether every worker is serving, and how many are (``/readyz``)."""
        if self._stopping.is_set():
            return False, "stopping: workers finishing their work"
        up = sum(1 for w in self.workers.values() if w.ready and w.process.returncode is None)
        return up == self.count, f"{up} of {self.count} workers serving"

    def _stop(self, signum: int) -> None:
        # The first signal starts a graceful stop in every worker; a second one is passed
        # on too, and each worker then closes its sessions at once.
        self._stopping.set()
        self._forward(signum)

    def _forward(self, signum: int) -> None:
        for worker in self.workers.values():
            if worker.process.returncode is None:
                with contextlib.suppress(ProcessLookupError):
                    worker.process.send_signal(signum)


async def _reason(worker: Worker) -> str:
    if "error" in worker.report:
        return str(worker.report["error"])
    status = await worker.process.wait()
    return (
        f"Worker {worker.index} (pid {worker.pid}) exited with status {status} before it "
        "was serving; its output above says why."
    )
