"""What a load costs, read from /proc while it runs: CPU by owner, peak memory.

- :class:`CpuAccount`: CPU in % of one core of the server (all its processes), PostgreSQL
  (the benchmark database's backends and the server's background processes), the Celery
  broker, the load client (the runner's reaped children), and everything else ("others").
- :class:`RssSampler`: the server's peak memory, read every 50 ms.
- :func:`wait_until_quiet`: wait for other people's jobs to calm down before a load.
"""

from __future__ import annotations

import os
import statistics
import threading
import time
from dataclasses import dataclass
from typing import Any

import proctree

CLOCK_TICKS = proctree.CLOCK_TICKS


def _jiffies_of(pid: str) -> int:
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii", errors="replace") as stat:
            fields = stat.read().rsplit(")", 1)[1].split()
        return int(fields[11]) + int(fields[12])
    except (OSError, IndexError, ValueError):
        return 0


def _postgres_jiffies(dbname: str | None) -> dict[str, int]:
    """CPU ticks per PostgreSQL process that works for ``dbname``: its client backends
    and the server's own background processes (WAL writer, checkpointer, ...), not the
    backends of other databases (other people's test runs count as "others")."""
    found: dict[str, int] = {}
    if not dbname:
        return found
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        try:
            with open(f"/proc/{pid}/comm", encoding="ascii", errors="replace") as comm:
                if comm.read().strip() != "postgres":
                    continue
            with open(f"/proc/{pid}/cmdline", "rb") as cmdline:
                title = cmdline.read().replace(b"\0", b" ").decode("ascii", "replace")
        except OSError:
            continue
        is_backend = "(" in title  # "postgres: 15/main: user db 127.0.0.1(port) ..."
        if not is_backend or f" {dbname} " in title:
            found[pid] = _jiffies_of(pid)
    return found


def _machine_busy_jiffies() -> int:
    with open("/proc/stat", encoding="ascii") as stat:
        fields = [int(v) for v in stat.readline().split()[1:]]
    user, nice, system, _idle, _iowait, irq, softirq, steal = (fields + [0] * 8)[:8]
    return user + nice + system + irq + softirq + steal


def machine_busy_pct(seconds: float = 1.0) -> float:
    """Busy CPU of the whole machine over ``seconds``, in % of one core."""
    before = _machine_busy_jiffies()
    time.sleep(seconds)
    return 100 * (_machine_busy_jiffies() - before) / CLOCK_TICKS / seconds


def wait_until_quiet(limit_s: float, threshold_pct: float, say: Any) -> float:
    """Wait up to ``limit_s`` seconds for the machine to be idle (busy below
    ``threshold_pct`` of one core for a whole second); returns the last reading."""
    deadline = time.monotonic() + limit_s
    busy = machine_busy_pct()
    announced = False
    while busy > threshold_pct and time.monotonic() < deadline:
        if not announced:
            say(f"  (machine busy: {busy:.0f}% of a core; waiting up to {limit_s:.0f} s)")
            announced = True
        busy = machine_busy_pct()
    return busy


class CpuAccount:
    """CPU used during a load, in % of one core: the server (all its processes), the load
    client, PostgreSQL, the Celery broker, and everything else on the machine ("others":
    other people's jobs distort results)."""

    def __init__(self, server_pid: int, pg_name: str | None, broker_pid: int | None) -> None:
        self.server_pid = server_pid
        self.pg_name = pg_name
        self.broker_pid = broker_pid
        self.t0 = time.perf_counter()
        self.machine0 = _machine_busy_jiffies()
        self.server0 = proctree.tree_cpu_seconds(server_pid)
        self.broker0 = self._broker()
        self.postgres0 = _postgres_jiffies(pg_name)
        self.children0 = _children_cpu()
        self.self0 = sum(os.times()[:2])

    def _broker(self) -> float:
        return proctree.tree_cpu_seconds(self.broker_pid) if self.broker_pid else 0.0

    def finish(self) -> dict[str, float]:
        elapsed = time.perf_counter() - self.t0
        machine = (_machine_busy_jiffies() - self.machine0) / CLOCK_TICKS
        server = proctree.tree_cpu_seconds(self.server_pid) - self.server0
        broker = self._broker() - self.broker0
        postgres_now = _postgres_jiffies(self.pg_name)
        postgres = (
            sum(max(0, ticks - self.postgres0.get(pid, 0)) for pid, ticks in postgres_now.items())
            / CLOCK_TICKS
        )
        client = _children_cpu() - self.children0
        runner = sum(os.times()[:2]) - self.self0
        others = max(0.0, machine - server - broker - postgres - client - runner)

        def pct(value: float) -> float:
            return 100 * value / elapsed if elapsed > 0 else 0.0

        return {
            "server_cpu_s": server,
            "postgres_cpu_s": postgres,
            "broker_cpu_s": broker,
            "server_cpu_pct": pct(server),
            "client_cpu_pct": pct(client),
            "postgres_cpu_pct": pct(postgres),
            "broker_cpu_pct": pct(broker),
            "others_cpu_pct": pct(others),
            "machine_cpu_pct": pct(machine),
        }


def _children_cpu() -> float:
    import resource

    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


class RssSampler(threading.Thread):
    """Reads VmRSS of ``pid`` every ``interval`` seconds until stopped; keeps the peak.
    With ``tree``, the sum over ``pid`` and its descendants (looked up every 5th tick)."""

    def __init__(self, pid: int, interval: float = 0.05, *, tree: bool = False) -> None:
        super().__init__(daemon=True)
        self.pid = pid
        self.interval = interval
        self.tree = tree
        self.peak_kib = 0
        self.samples = 0
        self._stop_event = threading.Event()

    def run(self) -> None:
        pids, tick = {self.pid}, 0
        while True:
            if self.tree and tick % 5 == 0:
                pids = {self.pid} | proctree.descendants(self.pid)
            tick += 1
            value = proctree.tree_rss_kib(pids)
            if value is not None:
                self.peak_kib = max(self.peak_kib, value)
                self.samples += 1
            if self._stop_event.wait(self.interval):
                break

    def stop(self) -> None:
        self._stop_event.set()
        self.join()
        value = idle_rss_kib(self.pid, tree=self.tree, readings=1)  # after the load
        self.peak_kib = max(self.peak_kib, value)


@dataclass
class Observed:
    """One client run against a server, with what was measured around it."""

    rc: int
    out: str
    err: str
    elapsed: float
    baseline_kib: int
    sampler: RssSampler
    cpu: dict[str, float]


def idle_rss_kib(pid: int, *, tree: bool = False, readings: int = 6) -> int:
    values = []
    pids = {pid} | (proctree.descendants(pid) if tree else set())
    for _ in range(readings):
        value = proctree.tree_rss_kib(pids)
        if value is not None:
            values.append(value)
        if readings > 1:
            time.sleep(0.05)
    if not values:
        raise ProcessLookupError(f"process {pid} is gone")
    return int(statistics.median(values))
