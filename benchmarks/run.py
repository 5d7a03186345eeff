#!/usr/bin/env python
"""The benchmark: ``manage.py smtpd`` ("ours") against a bare aiosmtpd server ("bare").

One run measures both servers under the same loads, alternating them (ours then bare,
then bare then ours in the next round, ...), each load against a freshly started
server process on 127.0.0.1 (port picked by the kernel):

- ``1k``:      smtp-source -s 20 -m 2000 -l 1024 -d   (msg/s; connections reused)
- ``1k-conn``: smtp-source -s 20 -m 1000 -l 1024      (msg/s; a new connection per message)
- ``1m``:      smtp-source -s 20 -m 100 -l 1048576 -d (msg/s and DATA MiB/s)
- ``25m``:     smtp-source -s 20 -m 20 -l 26214400 -d (20 concurrent 25 MiB messages)
- ``latency``: benchmarks/latency.py, 20 sessions paced at half of the server's own
  ``1k`` rate of the same round; p50/p99 from the final ``.CRLF`` to the ``250``.

During every load the server's VmRSS is sampled every 50 ms (peak, and growth over the
idle baseline taken after a short warm-up) and its CPU time is read from /proc.
After every load against ours, the rows of InboundMessage and the raw files must have
grown by exactly the number of messages the client saw accepted, with no duplicates
(every 250 must be stored); otherwise the run fails.

Prints a table (median over rounds), and writes every number to
``benchmarks/results/<timestamp>.json``. Stops every process it started, on Ctrl-C
and on failure too.

    python benchmarks/run.py [--db postgres|sqlite] [--rounds 2] [--quick]
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import json
import os
import platform
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

BENCH_DIR = Path(__file__).resolve().parent
REPO_DIR = BENCH_DIR.parent
RESULTS_DIR = BENCH_DIR / "results"
PYTHON = sys.executable
MIB = 1024 * 1024
CLIENT_NAME = "client.bench"
SERVERS: tuple[str, ...] = ("ours", "bare")
# --sender-checks adds "checks": ours with every sender check in tag mode, against a DNS
# server on loopback that answers after DNS_DELAY seconds (see start_dns()).
CHECKS = "checks"
DNS_DELAY = 0.001

# --------------------------------------------------------------------------- loads


@dataclass(frozen=True)
class Load:
    name: str
    title: str
    sessions: int
    messages: int
    length: int
    reuse: bool = True  # smtp-source -d: several messages per connection

    def smtp_source_args(self) -> list[str]:
        args = ["-s", str(self.sessions), "-m", str(self.messages), "-l", str(self.length)]
        return args + (["-d"] if self.reuse else [])


def loads_for(*, quick: bool) -> list[Load]:
    scale = 10 if quick else 1
    return [
        Load("1k", "1 KiB, 20 sessions, reused conns", 20, 2000 // scale, 1024),
        Load("1k-conn", "1 KiB, 20 sessions, new conn/msg", 20, 1000 // scale, 1024, reuse=False),
        Load("1m", "1 MiB, 20 sessions", 20, 100 // scale, MIB),
        Load(
            "25m",
            "25 MiB, 20 concurrent",
            20 // (4 if quick else 1),
            20 // (4 if quick else 1),
            25 * MIB,
        ),
    ]


WARMUP = Load("warmup", "warm-up", 2, 20, 1024)

# ------------------------------------------------------------------ child processes

_children: set[subprocess.Popen[Any]] = set()
_children_lock = threading.Lock()


def _register(process: subprocess.Popen[Any]) -> None:
    with _children_lock:
        _children.add(process)


def _forget(process: subprocess.Popen[Any]) -> None:
    with _children_lock:
        _children.discard(process)


def _kill_group(process: subprocess.Popen[Any], sig: int) -> None:
    # Every child runs in its own session (start_new_session), so its group id is its pid.
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(process.pid, sig)


def stop_process(process: subprocess.Popen[Any], *, grace: float = 60.0) -> int | None:
    """SIGTERM, wait up to ``grace`` seconds, then SIGKILL; returns the exit code."""
    if process.poll() is None:
        _kill_group(process, signal.SIGTERM)
        try:
            process.wait(timeout=grace)
        except subprocess.TimeoutExpired:
            _kill_group(process, signal.SIGKILL)
            process.wait(timeout=10)
    _forget(process)
    return process.returncode


def stop_all_children() -> None:
    with _children_lock:
        remaining = list(_children)
    for process in remaining:
        stop_process(process, grace=15.0)


def spawn(cmd: list[str], **kwargs: Any) -> subprocess.Popen[Any]:
    process = subprocess.Popen(cmd, start_new_session=True, **kwargs)
    _register(process)
    return process


def run_child(
    cmd: list[str], *, timeout: float, env: dict[str, str] | None = None
) -> tuple[int, str, str]:
    """Run ``cmd`` to completion (killed after ``timeout`` s); returns rc, stdout, stderr."""
    process = spawn(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    try:
        out, err = process.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        stop_process(process, grace=2)
        raise BenchError(f"timed out after {timeout:.0f} s: {' '.join(cmd)}") from None
    finally:
        _forget(process)
    return process.returncode, out, err


class BenchError(Exception):
    """A failed check or a failed step: the run stops and says why."""


# ---------------------------------------------------------------- /proc sampling


def rss_kib(pid: int) -> int | None:
    try:
        with open(f"/proc/{pid}/status", encoding="ascii") as status:
            for line in status:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
    except (FileNotFoundError, ProcessLookupError):
        return None
    return None


CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float:
    with open(f"/proc/{pid}/stat", encoding="ascii") as stat:
        fields = stat.read().rsplit(")", 1)[1].split()
    # After the ")" of comm: field 3 is fields[0]; utime and stime are fields 14 and 15.
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS


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
    """CPU used during a load, in % of one core: the server, the load client, PostgreSQL,
    and everything else on the machine ("others": other people's jobs distort results)."""

    def __init__(self, server_pid: int, pg_name: str | None) -> None:
        self.server_pid = server_pid
        self.pg_name = pg_name
        self.t0 = time.perf_counter()
        self.machine0 = _machine_busy_jiffies()
        self.server0 = cpu_seconds(server_pid)
        self.postgres0 = _postgres_jiffies(pg_name)
        self.children0 = _children_cpu()
        self.self0 = sum(os.times()[:2])

    def finish(self) -> dict[str, float]:
        elapsed = time.perf_counter() - self.t0
        machine = (_machine_busy_jiffies() - self.machine0) / CLOCK_TICKS
        server = cpu_seconds(self.server_pid) - self.server0
        postgres_now = _postgres_jiffies(self.pg_name)
        postgres = (
            sum(max(0, ticks - self.postgres0.get(pid, 0)) for pid, ticks in postgres_now.items())
            / CLOCK_TICKS
        )
        client = _children_cpu() - self.children0
        runner = sum(os.times()[:2]) - self.self0
        others = max(0.0, machine - server - postgres - client - runner)

        def pct(value: float) -> float:
            return 100 * value / elapsed if elapsed > 0 else 0.0

        return {
            "server_cpu_s": server,
            "server_cpu_pct": pct(server),
            "client_cpu_pct": pct(client),
            "postgres_cpu_pct": pct(postgres),
            "others_cpu_pct": pct(others),
            "machine_cpu_pct": pct(machine),
        }


def _children_cpu() -> float:
    import resource

    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


class RssSampler(threading.Thread):
    """Reads VmRSS of ``pid`` every ``interval`` seconds until stopped; keeps the peak."""

    def __init__(self, pid: int, interval: float = 0.05) -> None:
        super().__init__(daemon=True)
        self.pid = pid
        self.interval = interval
        self.peak_kib = 0
        self.samples = 0
        self._stop_event = threading.Event()

    def run(self) -> None:
        while True:
            value = rss_kib(self.pid)
            if value is not None:
                self.peak_kib = max(self.peak_kib, value)
                self.samples += 1
            if self._stop_event.wait(self.interval):
                break

    def stop(self) -> None:
        self._stop_event.set()
        self.join()
        value = rss_kib(self.pid)  # one last reading, after the load
        if value is not None:
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


def idle_rss_kib(pid: int) -> int:
    values = []
    for _ in range(6):
        value = rss_kib(pid)
        if value is not None:
            values.append(value)
        time.sleep(0.05)
    if not values:
        raise BenchError(f"process {pid} is gone")
    return int(statistics.median(values))


# ------------------------------------------------------------------------ servers


@dataclass
class Server:
    kind: str  # "ours" or "bare"
    cmd: list[str]
    env: dict[str, str]
    log_path: Path
    process: subprocess.Popen[Any] | None = None
    port: int = 0
    _log: Any = None

    BANNERS = {
        "ours": re.compile(r"Inbound SMTP server listening on (?:\[[^\]]+\]|[^\s:]+):(\d+)"),
        CHECKS: re.compile(r"Inbound SMTP server listening on (?:\[[^\]]+\]|[^\s:]+):(\d+)"),
        "bare": re.compile(r"listening on [^\s:]+:(\d+)"),
    }

    def start(self, timeout: float = 90.0) -> None:
        self._log = open(self.log_path, "w", encoding="utf-8")  # noqa: SIM115 - closed in stop()
        self.process = spawn(self.cmd, stdout=self._log, stderr=subprocess.STDOUT, env=self.env)
        deadline = time.monotonic() + timeout
        banner = self.BANNERS[self.kind]
        while time.monotonic() < deadline:
            match = banner.search(self.log_path.read_text(encoding="utf-8", errors="replace"))
            if match:
                self.port = int(match.group(1))
                return
            if self.process.poll() is not None:
                raise BenchError(f"{self.kind} server exited at start:\n{self.log_tail()}")
            time.sleep(0.05)
        raise BenchError(
            f"{self.kind} server did not start within {timeout:.0f} s:\n{self.log_tail()}"
        )

    @property
    def pid(self) -> int:
        assert self.process is not None
        return self.process.pid

    def stop(self) -> int | None:
        code = None
        if self.process is not None:
            code = stop_process(self.process, grace=60.0)
        if self._log is not None:
            self._log.close()
        return code

    def log_tail(self, lines: int = 30) -> str:
        try:
            text = self.log_path.read_text(encoding="utf-8", errors="replace")
        except FileNotFoundError:
            return "(no log)"
        return "\n".join(text.splitlines()[-lines:])

    def log_problems(self) -> list[str]:
        text = self.log_path.read_text(encoding="utf-8", errors="replace")
        return [
            line
            for line in text.splitlines()
            if re.search(r"\b(WARNING|ERROR|CRITICAL|Traceback)\b", line)
        ]


# ------------------------------------------------------------------- the database


class Store:
    """The benchmark project's database and storage, seen from the runner."""

    def __init__(self, args: argparse.Namespace, workdir: Path) -> None:
        self.db = args.db
        self.pg_name = args.pg_name
        self.media_root = workdir / "media"
        self.media_root.mkdir()
        self.sqlite_path = workdir / "inbound_bench.sqlite3"
        self.env = dict(os.environ)
        self.env.update(
            DJANGO_SETTINGS_MODULE="bench_project.settings",
            BENCH_DB=self.db,
            BENCH_PG_NAME=self.pg_name,
            BENCH_SQLITE_PATH=str(self.sqlite_path),
            BENCH_MEDIA_ROOT=str(self.media_root),
            PYTHONUNBUFFERED="1",
        )
        if args.setting:
            self.env["BENCH_INBOUND_SMTP"] = json.dumps(args.setting)
        self.code = code_under_test(args.ref, workdir)
        if self.code["src"]:
            self.env["PYTHONPATH"] = os.pathsep.join(
                p for p in (self.code["src"], os.environ.get("PYTHONPATH", "")) if p
            )
        self._django_ready = False
        self.created_pg = False

    def manage(self, *args: str, timeout: float = 300) -> str:
        rc, out, err = run_child(
            [PYTHON, str(BENCH_DIR / "manage.py"), *args], timeout=timeout, env=self.env
        )
        if rc != 0:
            raise BenchError(f"manage.py {' '.join(args)} failed ({rc}):\n{out}\n{err}")
        return out

    def _pg_admin(self) -> Any:
        import psycopg

        return psycopg.connect(
            dbname="postgres",
            host=os.environ.get("BENCH_PG_HOST", "127.0.0.1"),
            port=os.environ.get("BENCH_PG_PORT", "5432"),
            user=os.environ.get("BENCH_PG_USER", "postgres"),
            autocommit=True,
            connect_timeout=10,
        )

    def create(self) -> dict[str, Any]:
        info: dict[str, Any] = {"engine": self.db}
        if self.db == "postgres":
            if not re.fullmatch(r"[a-z_][a-z0-9_]*", self.pg_name):
                raise BenchError(f"--pg-name {self.pg_name!r}: use lower-case letters, digits, _")
            with self._pg_admin() as conn:
                conn.execute(f'DROP DATABASE IF EXISTS "{self.pg_name}" WITH (FORCE)')
                conn.execute(f'CREATE DATABASE "{self.pg_name}"')
                self.created_pg = True
                for setting in ("server_version", "fsync", "synchronous_commit", "wal_sync_method"):
                    info[setting] = conn.execute(f"SHOW {setting}").fetchone()[0]
            info["name"] = self.pg_name
        else:
            info["path"] = str(self.sqlite_path)
            info["pragmas"] = "journal_mode=WAL; synchronous=FULL; IMMEDIATE transactions"
        self.manage("migrate", "--noinput", "-v", "0")
        self.manage("inbound_mailbox", "add", "*@bench.test")
        return info

    def drop(self) -> None:
        if self.db == "postgres" and self.created_pg:
            self.close()
            with self._pg_admin() as conn:
                conn.execute(f'DROP DATABASE IF EXISTS "{self.pg_name}" WITH (FORCE)')

    def _setup_django(self) -> None:
        if not self._django_ready:
            os.environ.update(
                {k: v for k, v in self.env.items() if k.startswith(("BENCH_", "DJANGO_"))}
            )
            sys.path.insert(0, str(BENCH_DIR))
            if self.code["src"]:
                sys.path.insert(0, self.code["src"])
            import django

            django.setup()
            self._django_ready = True

    def counts(self) -> dict[str, int]:
        """Rows, duplicate rows and raw files stored so far."""
        self._setup_django()
        from django.db import connections

        from django_inbound_smtp.models import InboundMessage

        try:
            rows = InboundMessage.objects.count()
            duplicates = InboundMessage.objects.filter(
                status=InboundMessage.Status.DUPLICATE
            ).count()
        finally:
            connections.close_all()
        files = sum(
            1 for _, _, names in os.walk(self.media_root) for name in names if name.endswith(".eml")
        )
        return {"rows": rows, "duplicates": duplicates, "files": files}

    def status_counts(self) -> dict[str, int]:
        self._setup_django()
        from django.db import connections
        from django.db.models import Count

        from django_inbound_smtp.models import InboundMessage

        try:
            return {
                row["status"]: row["n"]
                for row in InboundMessage.objects.values("status").annotate(n=Count("pk"))
            }
        finally:
            connections.close_all()

    def close(self) -> None:
        if self._django_ready:
            from django.db import connections

            connections.close_all()


# -------------------------------------------------------------------- the runner


@dataclass
class Runner:
    args: argparse.Namespace
    store: Store
    workdir: Path
    smtp_source: str
    seq: int = 0
    run_id: str = ""
    #: (the loopback DNS server, INBOUND_SMTP overrides) with --sender-checks.
    dns: tuple[Any, dict[str, Any]] | None = None

    def say(self, text: str) -> None:
        print(text, flush=True)

    def new_server(self, kind: str) -> Server:
        self.seq += 1
        log_path = self.workdir / f"server-{self.seq:03d}-{kind}.log"
        env = self.store.env
        if kind in ("ours", CHECKS):
            cmd = [PYTHON, str(BENCH_DIR / "manage.py"), "smtpd", "127.0.0.1:0"]
        else:
            cmd = [PYTHON, str(BENCH_DIR / "bare_server.py"), "--host", "127.0.0.1", "--port", "0"]
        if kind == CHECKS:
            assert self.dns is not None
            overrides = {**json.loads(env.get("BENCH_INBOUND_SMTP") or "{}"), **self.dns[1]}
            env = {**env, "BENCH_INBOUND_SMTP": json.dumps(overrides)}
        return Server(kind, cmd, env, log_path)

    @contextlib.contextmanager
    def server(self, kind: str) -> Iterator[Server]:
        if self.args.wait_quiet > 0:
            wait_until_quiet(self.args.wait_quiet, self.args.quiet_threshold, self.say)
        server = self.new_server(kind)
        try:
            server.start()
            self.smtp_source_load(server, WARMUP, check=True)
            time.sleep(0.5)  # let inline processing of the warm-up finish
            yield server
        finally:
            code = server.stop()
            if code not in (0, None, -signal.SIGTERM):
                self.say(f"  note: {kind} server exited with {code}")

    def tag(self) -> str:
        self.seq += 1
        return f"t{self.run_id}x{self.seq}"

    def smtp_source_load(self, server: Server, load: Load, *, check: bool = True) -> dict[str, Any]:
        recipient = f"{self.tag()}@bench.test"
        cmd = [
            self.smtp_source,
            *load.smtp_source_args(),
            "-N",  # a unique recipient per message (so no two messages are duplicates)
            "-M",
            CLIENT_NAME,
            "-f",
            f"bench@{CLIENT_NAME}",
            "-t",
            recipient,
            f"127.0.0.1:{server.port}",
        ]
        before = self.store.counts() if server.kind in ("ours", CHECKS) else None
        run = self.observed(server, cmd, timeout=self.args.load_timeout)
        rc, err, elapsed, cpu = run.rc, run.err, run.elapsed, run.cpu
        baseline, sampler = run.baseline_kib, run.sampler
        if rc != 0 or "fatal" in err or "error" in err.lower():
            raise BenchError(
                f"smtp-source failed against {server.kind} ({load.name}, rc={rc}):\n{err.strip()}\n"
                f"server log:\n{server.log_tail()}"
            )
        result: dict[str, Any] = {
            "command": " ".join(cmd),
            "messages": load.messages,
            "elapsed_s": elapsed,
            "msg_per_s": load.messages / elapsed,
            "data_mib_per_s": load.messages * load.length / MIB / elapsed,
            "rss_idle_mib": baseline / 1024,
            "rss_peak_mib": sampler.peak_kib / 1024,
            "rss_growth_mib": (sampler.peak_kib - baseline) / 1024,
            "rss_samples": sampler.samples,
            **cpu,
        }
        if before is not None and check:
            result["stored"] = self.check_stored(server, before, load.messages, load.name)
        return result

    def observed(self, server: Server, cmd: list[str], *, timeout: float) -> Observed:
        """Run the client ``cmd`` against ``server``, sampling the server's RSS and the
        CPU used meanwhile."""
        sampler = RssSampler(server.pid)
        baseline = idle_rss_kib(server.pid)
        account = CpuAccount(
            server.pid, self.store.pg_name if self.store.db == "postgres" else None
        )
        sampler.start()
        t0 = time.perf_counter()
        rc, out, err = run_child(cmd, timeout=timeout)
        elapsed = time.perf_counter() - t0
        sampler.stop()
        return Observed(rc, out, err, elapsed, baseline, sampler, account.finish())

    def check_stored(
        self, server: Server, before: dict[str, int], accepted: int, what: str
    ) -> dict[str, int]:
        after = self.store.counts()
        delta = {key: after[key] - before[key] for key in after}
        if delta["rows"] != accepted or delta["files"] != accepted or delta["duplicates"] != 0:
            raise BenchError(
                f"STORAGE CHECK FAILED after {what} against ours: {accepted} messages got 250, "
                f"but rows grew by {delta['rows']}, raw files by {delta['files']}, "
                f"duplicates by {delta['duplicates']}.\nserver log:\n{server.log_tail()}"
            )
        return delta

    def latency_load(self, server: Server, rate: float) -> dict[str, Any]:
        tag = self.tag()
        cmd = [
            PYTHON, str(BENCH_DIR / "latency.py"), "127.0.0.1", str(server.port),
            "--rate", f"{rate:.1f}",
            "--sessions", str(self.args.latency_sessions),
            "--duration", str(self.args.latency_duration),
            "--size", "1024",
            "--tag", tag,
        ]  # fmt: skip
        before = self.store.counts() if server.kind in ("ours", CHECKS) else None
        run = self.observed(server, cmd, timeout=self.args.latency_duration + 120)
        rc, out, err, cpu = run.rc, run.out, run.err, run.cpu
        baseline, sampler = run.baseline_kib, run.sampler
        if rc != 0:
            raise BenchError(f"latency client failed against {server.kind} (rc={rc}):\n{err}")
        result = json.loads(out)
        if result["refused"] or result["session_failures"]:
            raise BenchError(
                f"latency client against {server.kind}: {result['refused']} refused, "
                f"session failures {result['session_failures']}, e.g. {result['refusals']}\n"
                f"server log:\n{server.log_tail()}"
            )
        result["command"] = " ".join(cmd)
        result["rss_idle_mib"] = baseline / 1024
        result["rss_peak_mib"] = sampler.peak_kib / 1024
        result.update(cpu)
        if before is not None:
            result["stored"] = self.check_stored(server, before, result["accepted"], "latency")
        return result

    def run(self) -> dict[str, Any]:
        loads = loads_for(quick=self.args.quick)
        wanted = set(self.args.only or [])
        if "latency" in wanted:
            wanted.add("1k")  # its rate sets the latency load's pace
        raw: dict[str, dict[str, list[dict[str, Any]]]] = {}
        for round_index in range(self.args.rounds):
            order = SERVERS if round_index % 2 == 0 else tuple(reversed(SERVERS))
            self.say(f"round {round_index + 1}/{self.args.rounds} (order: {' then '.join(order)})")
            for load in loads:
                if wanted and load.name not in wanted:
                    continue
                for kind in order:
                    raw.setdefault(load.name, {}).setdefault(kind, []).append(
                        self.measure_load(kind, load)
                    )
                if load.name == "1k" and (not wanted or "latency" in wanted):
                    for kind in order:
                        rate = self.args.latency_fraction * raw["1k"][kind][-1]["msg_per_s"]
                        raw.setdefault("latency", {}).setdefault(kind, []).append(
                            self.measure_latency(kind, max(1.0, rate))
                        )
        return raw

    def measure_load(self, kind: str, load: Load) -> dict[str, Any]:
        with self.server(kind) as server:
            result = self.smtp_source_load(server, load)
        problems = server.log_problems()  # shutdown included
        result["server_log_problems"] = problems[:10]
        self.say(
            f"  {load.name:8} {kind:4} {result['msg_per_s']:9.1f} msg/s "
            f"{result['data_mib_per_s']:7.1f} MiB/s {result['elapsed_s']:6.2f} s  "
            f"RSS {result['rss_peak_mib']:6.1f} MiB (+{result['rss_growth_mib']:.1f})  "
            f"CPU {result['server_cpu_pct']:3.0f}% pg {result['postgres_cpu_pct']:3.0f}% "
            f"others {result['others_cpu_pct']:3.0f}%"
            + (f"  [{len(problems)} warning lines in server log]" if problems else "")
        )
        return result

    def measure_latency(self, kind: str, rate: float) -> dict[str, Any]:
        with self.server(kind) as server:
            result = self.latency_load(server, rate)
        result["server_log_problems"] = server.log_problems()[:10]
        self.say(
            f"  latency  {kind:4} offered {rate:7.1f}/s achieved "
            f"{result['achieved_rate']:7.1f}/s  p50 {result['p50_ms']:6.2f} ms  "
            f"p99 {result['p99_ms']:6.2f} ms  max {result['max_ms']:6.2f} ms  "
            f"others {result['others_cpu_pct']:3.0f}%"
        )
        return result


# ---------------------------------------------------------------------- reporting

# (row label, scenario, metric key, unit, digits)
ROWS = [
    ("1k msg/s  (1 KiB x2000, 20 sess, -d)", "1k", "msg_per_s", "msg/s", 0),
    ("1k RSS peak", "1k", "rss_peak_mib", "MiB", 1),
    ("1k RSS growth", "1k", "rss_growth_mib", "MiB", 1),
    ("1k server CPU (100% = one core)", "1k", "server_cpu_pct", "%", 0),
    ("1k PostgreSQL CPU", "1k", "postgres_cpu_pct", "%", 0),
    ("1k other processes' CPU (noise)", "1k", "others_cpu_pct", "%", 0),
    ("1k msg/s, new conn per msg (x1000)", "1k-conn", "msg_per_s", "msg/s", 0),
    ("latency offered rate (1/2 of own 1k)", "latency", "offered_rate", "msg/s", 0),
    ("latency achieved rate", "latency", "achieved_rate", "msg/s", 0),
    ("latency dot->250 p50", "latency", "p50_ms", "ms", 2),
    ("latency dot->250 p99", "latency", "p99_ms", "ms", 2),
    ("latency dot->250 max", "latency", "max_ms", "ms", 2),
    ("latency send start lag p99", "latency", "start_lag_p99_ms", "ms", 2),
    ("1m msg/s  (1 MiB x100, 20 sess)", "1m", "msg_per_s", "msg/s", 1),
    ("1m DATA", "1m", "data_mib_per_s", "MiB/s", 1),
    ("1m RSS peak", "1m", "rss_peak_mib", "MiB", 1),
    ("1m RSS growth", "1m", "rss_growth_mib", "MiB", 1),
    ("25m wall time (20 x 25 MiB concurrent)", "25m", "elapsed_s", "s", 2),
    ("25m DATA", "25m", "data_mib_per_s", "MiB/s", 1),
    ("25m RSS peak", "25m", "rss_peak_mib", "MiB", 1),
    ("25m RSS growth", "25m", "rss_growth_mib", "MiB", 1),
    ("25m server CPU", "25m", "server_cpu_pct", "%", 0),
]


def summarize(raw: dict[str, dict[str, list[dict[str, Any]]]]) -> list[dict[str, Any]]:
    rows = []
    for label, scenario, key, unit, digits in ROWS:
        values = {}
        for kind in SERVERS:
            runs = raw.get(scenario, {}).get(kind, [])
            if runs:
                values[kind] = statistics.median(run[key] for run in runs)
        if not values:
            continue
        ours, bare = values.get("ours"), values.get("bare")
        ratio = ours / bare if ours is not None and bare else None
        rows.append(
            {
                "metric": label,
                "scenario": scenario,
                "key": key,
                "unit": unit,
                "digits": digits,
                "ours": ours,
                "bare": bare,
                "ratio": ratio,
                CHECKS: values.get(CHECKS),
            }
        )
    return rows


def targets(
    raw: dict[str, dict[str, list[dict[str, Any]]]], rows: list[dict[str, Any]]
) -> list[dict[str, Any]]:
    def value(scenario: str, key: str, kind: str = "ours") -> float | None:
        for row in rows:
            if row["scenario"] == scenario and row["key"] == key:
                return row[kind]
        return None

    checks = []
    rate, bare_rate = value("1k", "msg_per_s"), value("1k", "msg_per_s", "bare")
    if rate is not None:
        checks.append(("1 KiB durable msg/s >= 3000", rate, rate >= 3000))
        if bare_rate:
            checks.append(("1 KiB msg/s >= 1.2x bare", rate / bare_rate, rate >= 1.2 * bare_rate))
    data = value("1m", "data_mib_per_s")
    if data is not None:
        checks.append(("DATA (1 MiB msgs) >= 100 MiB/s", data, data >= 100))
    growth = value("25m", "rss_growth_mib")
    if growth is not None:
        checks.append(("RSS growth, 20 x 25 MiB <= 64 MiB", growth, growth <= 64))
    p99 = value("latency", "p99_ms")
    if p99 is not None:
        checks.append(("p99 dot->250 at half max rate < 50 ms", p99, p99 < 50))
    return [{"target": name, "ours": v, "met": ok} for name, v, ok in checks]


def fmt(value: float | None, digits: int) -> str:
    if value is None:
        return "-"
    return f"{value:,.{digits}f}"


def noisy_loads(
    raw: dict[str, dict[str, list[dict[str, Any]]]], threshold: float = 20.0
) -> list[str]:
    """Loads during which other processes used more than ``threshold``% of a core."""
    return [
        f"{scenario}/{kind}#{index + 1}: {run['others_cpu_pct']:.0f}%"
        for scenario, by_kind in raw.items()
        for kind, runs in by_kind.items()
        for index, run in enumerate(runs)
        if run.get("others_cpu_pct", 0) > threshold
    ]


def render(rows: list[dict[str, Any]], checks: list[dict[str, Any]], meta: dict[str, Any]) -> str:
    host = meta["host"]
    lines = [
        f"django-inbound-smtp benchmark  db={meta['db']['engine']}  rounds={meta['rounds']} "
        f"(median)  {meta['timestamp']}",
        f"code: {meta['code']['source']} at {meta['code']['commit'][:10]}"
        + (" + uncommitted changes in django_inbound_smtp/" if meta["code"]["dirty"] else ""),
        f"host: {host['cpus']} CPUs, load average before {host['loadavg_before'][0]:.2f}, "
        f"after {host['loadavg_after'][0]:.2f}",
        "",
        f"{'metric':42} {'unit':6} {'ours':>12} {'bare':>12} {'ours/bare':>10}"
        + (f" {'ours+checks':>12} {'with/without':>12}" if CHECKS in SERVERS else ""),
        f"{'-' * 42} {'-' * 6} {'-' * 12} {'-' * 12} {'-' * 10}"
        + (f" {'-' * 12} {'-' * 12}" if CHECKS in SERVERS else ""),
    ]
    if meta["inbound_smtp_overrides"]:
        lines.insert(3, f"INBOUND_SMTP overrides for ours: {meta['inbound_smtp_overrides']}")
    for row in rows:
        ratio = f"{row['ratio']:.2f}" if row["ratio"] is not None else "-"
        line = (
            f"{row['metric']:42} {row['unit']:6} {fmt(row['ours'], row['digits']):>12} "
            f"{fmt(row['bare'], row['digits']):>12} {ratio:>10}"
        )
        if CHECKS in SERVERS:
            with_checks = row.get(CHECKS)
            relative = (
                with_checks / row["ours"] if with_checks is not None and row["ours"] else None
            )
            line += f" {fmt(with_checks, row['digits']):>12} {fmt(relative, 2):>12}"
        lines.append(line)
    if meta.get("noisy_loads"):
        lines += [
            "",
            "WARNING: other processes used > 20% of a core during: "
            + ", ".join(meta["noisy_loads"]),
        ]
    if CHECKS in SERVERS:
        lines += [
            "",
            f"ours+checks: every sender check in tag mode (DNSBL zone, iprev, sender domain, SPF "
            f"and HELO SPF, DKIM, DMARC), DNS server on loopback answering after "
            f"{DNS_DELAY * 1000:.0f} ms, resolver cache {meta.get('dns_cache', 0)}.",
        ]
    if checks:
        lines += ["", "targets (ours):"]
        for check in checks:
            lines.append(
                f"  [{'met' if check['met'] else 'MISSED'}] {check['target']}: {check['ours']:,.2f}"
            )
    return "\n".join(lines)


def git_info() -> dict[str, Any]:
    def git(*args: str) -> str:
        try:
            return subprocess.run(
                ["git", *args], cwd=REPO_DIR, capture_output=True, text=True, check=True, timeout=10
            ).stdout.strip()
        except (OSError, subprocess.SubprocessError):
            return ""

    return {
        "commit": git("rev-parse", "HEAD") or "unknown",
        "dirty": bool(git("status", "--porcelain", "--", "django_inbound_smtp")),
    }


def code_under_test(ref: str | None, workdir: Path) -> dict[str, Any]:
    """Which django_inbound_smtp the servers run: the working tree (default), or the
    package as of git ``ref``, extracted into the work folder and put first on PYTHONPATH
    (other people may be editing the working tree while the benchmark runs)."""
    if not ref:
        info = git_info()
        return {"src": None, "source": "working tree", **info}
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "--verify", f"{ref}^{{commit}}"],
            cwd=REPO_DIR, capture_output=True, text=True, check=True, timeout=10,
        ).stdout.strip()  # fmt: skip
    except subprocess.CalledProcessError as error:
        raise BenchError(f"--ref {ref}: {error.stderr.strip()}") from None
    src = workdir / "src"
    src.mkdir()
    archive = subprocess.run(
        ["git", "archive", "--format=tar", commit, "django_inbound_smtp"],
        cwd=REPO_DIR, capture_output=True, check=True, timeout=60,
    )  # fmt: skip
    subprocess.run(["tar", "-x", "-C", str(src)], input=archive.stdout, check=True, timeout=60)
    source = "git commit" if commit.startswith(ref.lower()) else f"git {ref}"
    return {"src": str(src), "source": source, "commit": commit, "dirty": False}


def versions() -> dict[str, str]:
    from importlib.metadata import PackageNotFoundError, version

    found = {"python": platform.python_version()}
    for package in ("django", "aiosmtpd", "asgiref", "psycopg", "django-inbound-smtp"):
        with contextlib.suppress(PackageNotFoundError):
            found[package] = version(package)
    return found


def find_smtp_source() -> str:
    path = shutil.which("smtp-source") or "/usr/sbin/smtp-source"
    if not os.access(path, os.X_OK):
        raise BenchError(
            "smtp-source not found: `make bench` installs it (Debian package postfix, "
            "no daemon started), or see benchmarks/README.md"
        )
    return path


# -------------------------------------------------------------------------- main


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--db", choices=("postgres", "sqlite"), default="postgres")
    parser.add_argument("--rounds", type=int, default=2, help="alternating rounds (default 2)")
    parser.add_argument("--quick", action="store_true", help="a tenth of the messages, 1 round")
    parser.add_argument(
        "--only",
        nargs="+",
        choices=("1k", "1k-conn", "latency", "1m", "25m"),
        help="run only these loads (latency implies 1k)",
    )
    parser.add_argument("--pg-name", default="inbound_bench", help="database created (and dropped)")
    parser.add_argument(
        "--ref", help="benchmark django_inbound_smtp as of this git commit (default: working tree)"
    )
    parser.add_argument("--latency-duration", type=float, default=10.0, help="seconds (default 10)")
    parser.add_argument("--latency-sessions", type=int, default=20)
    parser.add_argument("--latency-fraction", type=float, default=0.5, help="of the 1k max rate")
    parser.add_argument("--load-timeout", type=float, default=240.0, help="seconds per load")
    parser.add_argument(
        "--wait-quiet",
        type=float,
        default=0.0,
        metavar="SECONDS",
        help="before each load, wait up to this long for other processes to go quiet",
    )
    parser.add_argument(
        "--quiet-threshold", type=float, default=15.0, help="%% of one core counted as quiet"
    )
    parser.add_argument(
        "--setting",
        action="append",
        type=_setting,
        metavar="KEY=VALUE",
        help="override an INBOUND_SMTP key of ours (VALUE as JSON, else a string); repeatable",
    )
    parser.add_argument(
        "--sender-checks",
        action="store_true",
        help="also run ours with every sender check in tag mode against a loopback DNS server",
    )
    parser.add_argument(
        "--dns-cache", type=int, default=0, help="resolver cache size with --sender-checks"
    )
    parser.add_argument("--keep", action="store_true", help="keep the work folder and database")
    parser.add_argument("--output", type=Path, help="JSON path (default results/<timestamp>.json)")
    args = parser.parse_args(argv)
    args.setting = dict(args.setting or [])
    if args.quick:
        args.rounds = 1
        args.latency_duration = min(args.latency_duration, 3.0)
    if args.rounds < 1:
        parser.error("--rounds must be at least 1")
    return args


def _setting(text: str) -> tuple[str, Any]:
    key, sep, value = text.partition("=")
    if not sep or not key:
        raise argparse.ArgumentTypeError(f"{text!r}: expected KEY=VALUE")
    try:
        return key, json.loads(value)
    except json.JSONDecodeError:
        return key, value


def start_dns(cache_size: int) -> tuple[Any, dict[str, Any]]:
    """The tests' loopback DNS server, answering after DNS_DELAY, loaded with what the
    checks of a smtp-source message ask: client 127.0.0.1 (PTR client.bench), sender
    domain client.bench (MX, SPF pass, DMARC p=none), a DNSBL zone that lists nothing."""
    global SERVERS, _DNS_SERVER
    sys.path.insert(0, str(REPO_DIR))
    from tests.dnsserver import DnsServer

    server = DnsServer(delay=DNS_DELAY)
    _DNS_SERVER = server
    server.load(
        {
            "1.0.0.127.in-addr.arpa": [("PTR", "client.bench.")],
            CLIENT_NAME: [
                ("A", "127.0.0.1"),
                ("MX", f"10 {CLIENT_NAME}."),
                ("TXT", '"v=spf1 ip4:127.0.0.1 -all"'),
            ],
            f"_dmarc.{CLIENT_NAME}": [("TXT", '"v=DMARC1; p=none"')],
        }
    )
    SERVERS = ("ours", "bare", CHECKS)
    checks = dict.fromkeys(("DNSBL", "IPREV", "SENDER_DOMAIN", "SPF", "DKIM", "DMARC"), "tag")
    return server, {
        "SENDER_CHECKS": checks,
        "DNSBL_ZONES": ["bl.bench"],
        "DNS": {"NAMESERVERS": [server.address], "TIMEOUT": 2.0, "CACHE_SIZE": cache_size},
    }


_DNS_SERVER: Any = None


def _raise_interrupt(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    # Ctrl-C raises KeyboardInterrupt even where SIGINT came in ignored (a background job
    # of a non-interactive shell); SIGTERM and SIGHUP do the same.
    signal.signal(signal.SIGINT, signal.default_int_handler)
    for signum in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(signum, _raise_interrupt)
    started = dt.datetime.now(dt.UTC)
    timestamp = started.strftime("%Y%m%dT%H%M%SZ")
    workdir = Path(tempfile.mkdtemp(prefix="inbound-bench-"))
    store: Store | None = None
    status = 1
    try:
        store = Store(args, workdir)
        smtp_source = find_smtp_source()
        print(f"work folder {workdir}; database: {args.db}", flush=True)
        db_info = store.create()
        runner = Runner(args, store, workdir, smtp_source)
        runner.run_id = format(int(time.time()) % 0xFFFFFF, "x")
        if args.sender_checks:
            runner.dns = start_dns(args.dns_cache)
        t0 = time.monotonic()
        load_before = os.getloadavg()
        raw = runner.run()
        rows = summarize(raw)
        checks = targets(raw, rows)
        meta = {
            "timestamp": timestamp,
            "db": db_info,
            "rounds": args.rounds,
            "inbound_smtp_overrides": args.setting,
            "quick": args.quick,
            "argv": sys.argv[1:] if argv is None else argv,
            "duration_s": time.monotonic() - t0,
            "code": {k: v for k, v in store.code.items() if k != "src"},
            "versions": versions(),
            "host": {
                "cpus": os.cpu_count(),
                "kernel": platform.release(),
                "machine": platform.machine(),
                "loadavg_before": load_before,
                "loadavg_after": os.getloadavg(),
            },
            "smtp_source": smtp_source,
            "final_status_counts": store.status_counts(),
            "noisy_loads": noisy_loads(raw),
            "dns_cache": args.dns_cache,
        }
        table = render(rows, checks, meta)
        print()
        print(table)
        output = args.output or RESULTS_DIR / f"{timestamp}.json"
        output.parent.mkdir(parents=True, exist_ok=True)
        output.write_text(
            json.dumps(
                {"meta": meta, "summary": rows, "targets": checks, "table": table, "runs": raw},
                indent=2,
            )
            + "\n",
            encoding="utf-8",
        )
        print(f"\nwrote {output} ({meta['duration_s']:.0f} s of measurements)")
        status = 0
    except BenchError as error:
        print(f"\nBENCHMARK FAILED: {error}", file=sys.stderr, flush=True)
    except KeyboardInterrupt:
        print("\ninterrupted: stopping everything started", file=sys.stderr, flush=True)
        status = 130
    finally:
        # Ignore further Ctrl-C while cleaning up, so nothing is left running.
        previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
        try:
            stop_all_children()
            if runner_dns := globals().get("_DNS_SERVER"):
                runner_dns.stop()
            if not args.keep:
                if store is not None:
                    with contextlib.suppress(Exception):
                        store.drop()
                shutil.rmtree(workdir, ignore_errors=True)
            else:
                if store is not None:
                    store.close()
                print(f"kept {workdir} and the database", file=sys.stderr)
        finally:
            signal.signal(signal.SIGINT, previous)
    return status


if __name__ == "__main__":
    sys.exit(main())
