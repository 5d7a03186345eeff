"""Who holds a message: worker identities, and whether a local one is still alive.

A message waiting in a process's inline queue, or being processed, names its holder
in ``claimed_by``. When the holder is an ``smtpd`` process on this host that no longer
exists (killed, crashed, restarted), its messages can be taken over at once; a holder
on another host is only known to be gone when its lease expires.
"""

from __future__ import annotations

import functools
import os
import socket
import threading

__all__ = [
    "execution_of",
    "is_dead_local",
    "local_prefix",
    "process_of",
    "process_owner",
    "thread_owner",
]

_PREFIX = "inline"


def _start_ticks(pid: int) -> str | None:
    # Field 22 of /proc/PID/stat: the process's start time since boot. A pid is reused
    # by the kernel; (pid, start time) names one process for the life of the machine.
    try:
        with open(f"/proc/{pid}/stat", "rb") as stat:
            fields = stat.read().rsplit(b")", 1)[1].split()
    except (OSError, IndexError):
        return None
    return fields[19].decode("ascii") if len(fields) > 19 else None


@functools.cache
def _host() -> str:
    # Where a pid means one process: this kernel (boot id) and this pid namespace. A
    # hostname alone is not that: two containers (or cloned machines) may share one,
    # and a pid from the other would be looked up here and found "dead".
    # ":" separates the parts of an owner; a hostname never holds one, but be sure.
    name = socket.gethostname().replace(":", "_")
    try:
        with open("/proc/sys/kernel/random/boot_id") as boot:
            kernel = boot.read().strip()[:8]
        namespace = os.stat("/proc/self/ns/pid").st_ino
    except OSError:
        return name
    return f"{name}~{kernel}~{namespace}"


def process_owner() -> str:
    """This process: ``inline:<host>:<pid>:<start time>``."""
    return _owner_of(os.getpid())


@functools.cache
def _owner_of(pid: int) -> str:
    # Cached per pid: a forked child gets its own entry, and /proc is read once.
    return f"{_PREFIX}:{_host()}:{pid}:{_start_ticks(pid) or '0'}"


def thread_owner() -> str:
    """A processing thread of this process (a prefix of its claims)."""
    return f"{process_owner()}:{threading.get_ident()}"


def execution_of(owner: str, token: str) -> str:
    """The claim of one execution by ``owner``: unique even for a redelivered task."""
    return f"{owner}:{token}"


def local_prefix() -> str:
    """The prefix every owner on this host starts with."""
    return f"{_PREFIX}:{_host()}:"


def process_of(claimed_by: str) -> str | None:
    """The process part (``inline:host:pid:start``) of an inline holder, else ``None``."""
    parts = claimed_by.split(":")
    if len(parts) < 4 or parts[0] != _PREFIX:
        return None
    return ":".join(parts[:4])


def is_dead_local(process: str) -> bool:
    """``True`` if ``process`` (from :func:`process_of`) ran on this host and is gone."""
    parts = process.split(":")
    if len(parts) != 4 or parts[0] != _PREFIX or parts[1] != _host():
        return False
    try:
        pid = int(parts[2])
    except ValueError:
        return False
    if pid == os.getpid():
        return parts[3] != (_start_ticks(pid) or "0")
    started = _start_ticks(pid)
    if started is None:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return True
        except PermissionError:
            return False  # alive, someone else's
        return False  # exists; without /proc its start time cannot be compared
    return started != parts[3]
