"""CPU time and memory of a process and all its descendants, read from /proc.

A server may be several processes: Postfix (``master`` and the ``smtpd``, ``cleanup``,
``qmgr``, ... it starts and reaps) or ``smtpd --workers N``. Its CPU is the root's own
time, the time of the children it already reaped (``cutime``/``cstime``), and the time of
the descendants alive now, so a short-lived ``smtpd`` process is counted whether or not
it exited during the load. The kernel here has no ``/proc/PID/task/TID/children``, so
descendants are found by reading every process's parent from ``/proc/PID/stat``.
"""

from __future__ import annotations

import os

CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def _stat_fields(pid: int) -> list[str] | None:
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii", errors="replace") as stat:
            # After the ")" of comm: fields[0] is field 3 (state), fields[1] the parent.
            return stat.read().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None


def descendants(root: int) -> set[int]:
    """Every live process below ``root`` (not ``root`` itself)."""
    parents: dict[int, int] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            fields = _stat_fields(int(entry))
            if fields is not None:
                parents[int(entry)] = int(fields[1])
    found: set[int] = set()
    frontier = {root}
    while frontier:
        frontier = {pid for pid, parent in parents.items() if parent in frontier} - found
        found |= frontier
    return found


def _ticks_with_reaped(pid: int) -> int:
    fields = _stat_fields(pid)
    if fields is None:
        return 0
    # utime, stime, cutime, cstime are fields 14-17 of stat(5).
    return sum(int(value) for value in fields[11:15])


def tree_cpu_seconds(root: int) -> float:
    """CPU seconds of ``root`` and its descendants, reaped ones included."""
    pids = {root} | descendants(root)
    return sum(_ticks_with_reaped(pid) for pid in pids) / CLOCK_TICKS


def rss_kib(pid: int) -> int | None:
    try:
        with open(f"/proc/{pid}/status", encoding="ascii") as status:
            for line in status:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
    except (FileNotFoundError, ProcessLookupError):
        return None
    return None


def pss_kib(pid: int) -> int | None:
    """Proportional set size: each shared page split among the processes sharing it."""
    try:
        with open(f"/proc/{pid}/smaps_rollup", encoding="ascii") as rollup:
            for line in rollup:
                if line.startswith("Pss:"):
                    return int(line.split()[1])
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        return None
    return None


def tree_rss_kib(pids: set[int]) -> int | None:
    """Memory of ``pids``: VmRSS of a single process; for several, the sum of their PSS
    (a sum of RSS would count the shared libraries and the forked parent's pages once per
    process: Postfix's 30-odd processes would seem to take 200 MiB). ``None`` when none
    of them is alive."""
    measure = rss_kib if len(pids) == 1 else pss_kib
    values = [value for value in (measure(pid) for pid in pids) if value is not None]
    return sum(values) if values else None
