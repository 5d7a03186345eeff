#!/usr/bin/env python
"""The benchmark: ``manage.py smtpd`` ("ours") beside a bare aiosmtpd server and Postfix.

Servers (``--servers``; all by default):

- ``ours``:    ``manage.py smtpd``, default mode (processing inline, in the same process);
- ``store``:   ours storing only (``DISPATCH="celery"``, a private redis-server, no worker);
- ``store-wN``: the same with ``smtpd --workers N`` (only with ``--workers N``, N > 1);
- ``bare``:    aiosmtpd whose handler answers 250 and stores nothing;
- ``postfix``: a private Postfix that queues every message durably and puts it on hold;
- ``checks``:  ours with every sender check in tag mode (``--sender-checks``).

One run measures them under the same loads, alternating the order (reversed in the
next round), each load against a freshly started server on 127.0.0.1:

- ``1k``:      smtp-source -s 20 -m 2000 -l 1024 -d   (msg/s; connections reused)
- ``1k-conn``: smtp-source -s 20 -m 1000 -l 1024      (msg/s; a new connection per message)
- ``1m``:      smtp-source -s 20 -m 100 -l 1048576 -d (msg/s and DATA MiB/s)
- ``25m``:     smtp-source -s 20 -m 20 -l 26214400 -d (20 concurrent 25 MiB messages)
- ``latency``: benchmarks/latency.py, 20 sessions paced at half of the server's own
  ``1k`` rate of the same round; p50/p99 from the final ``.CRLF`` to the ``250``.

During every load the server's VmRSS is sampled every 50 ms (peak, and growth over the
idle baseline taken after a short warm-up; summed over its processes for Postfix and
workers) and its CPU time is read from /proc (all its processes, reaped ones included).
After every load against ours, the rows of InboundMessage and the raw files must have
grown by exactly the number of messages the client saw accepted, with no duplicates;
after every load against Postfix, its hold queue must have grown by as many (every 250
must be stored); otherwise the run fails.

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
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from broker import BrokerError, RedisBroker
from postfix import PostfixError, PostfixServer, count_fsyncs
from report import CHECKS, noisy_loads, render, summarize, targets
from sampling import CpuAccount, Observed, RssSampler, idle_rss_kib, wait_until_quiet

BENCH_DIR = Path(__file__).resolve().parent
REPO_DIR = BENCH_DIR.parent
RESULTS_DIR = BENCH_DIR / "results"
PYTHON = sys.executable
MIB = 1024 * 1024
CLIENT_NAME = "client.bench"
# --sender-checks adds CHECKS: ours with every sender check in tag mode, against a DNS
# server on loopback that answers after DNS_DELAY seconds (see start_dns()).
DNS_DELAY = 0.001
#: Ours' message table (app label "inbound_smtp"): the storage check counts its rows.
MESSAGE_TABLE = "inbound_smtp_inboundmessage"


@dataclass(frozen=True)
class Variant:
    """One column of the table: a server program and how it runs."""

    name: str
    program: str  # "ours", "bare" or "postfix"
    mode: str = "default"  # ours: "default" (processing inline) or "store" (store only)
    workers: int = 1
    senders_checked: bool = False

    @property
    def is_ours(self) -> bool:
        return self.program == "ours"


def variants_for(args: argparse.Namespace) -> list[Variant]:
    """The servers of this run, in the order of the first round."""
    known = {
        "ours": Variant("ours", "ours"),
        "store": Variant("store", "ours", mode="store"),
        "bare": Variant("bare", "bare"),
        "postfix": Variant("postfix", "postfix"),
    }
    if args.workers > 1:
        known[f"store-w{args.workers}"] = Variant(
            f"store-w{args.workers}", "ours", mode="store", workers=args.workers
        )
    if args.sender_checks:
        known[CHECKS] = Variant(CHECKS, "ours", senders_checked=True)
    wanted = args.servers or list(known)
    if args.sender_checks and CHECKS not in wanted:
        wanted = [*wanted, CHECKS]
    unknown = [name for name in wanted if name not in known]
    if unknown:
        raise BenchError(f"--servers: unknown {unknown}; choose from {sorted(known)}")
    return [known[name] for name in wanted]


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


#: Postfix instances started and not yet stopped: ``postfix start`` daemonizes its
#: master, so it is not a child the runner could signal; stop_live_postfix() stops them.
_live_postfix: list[PostfixServer] = []


def stop_live_postfix() -> None:
    while _live_postfix:
        server = _live_postfix.pop()
        with contextlib.suppress(Exception):
            server.stop()
        server.remove()


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


# ------------------------------------------------------------------------ servers


@dataclass
class Server:
    variant: Variant
    cmd: list[str]
    env: dict[str, str]
    log_path: Path
    process: subprocess.Popen[Any] | None = None
    port: int = 0
    _log: Any = None

    BANNERS = {
        "ours": re.compile(r"Inbound SMTP server listening on (?:\[[^\]]+\]|[^\s:]+):(\d+)"),
        "bare": re.compile(r"listening on [^\s:]+:(\d+)"),
    }

    @property
    def kind(self) -> str:
        return self.variant.name

    def start(self, timeout: float = 90.0) -> None:
        self._log = open(self.log_path, "w", encoding="utf-8")  # noqa: SIM115 - closed in stop()
        self.process = spawn(self.cmd, stdout=self._log, stderr=subprocess.STDOUT, env=self.env)
        deadline = time.monotonic() + timeout
        banner = self.BANNERS[self.variant.program]
        while time.monotonic() < deadline:
            match = banner.search(self.log_path.read_text(encoding="utf-8", errors="replace"))
            if match:
                self.port = int(match.group(1))
                return
            if self.process.poll() is not None:
                hint = (
                    "\n(an smtpd without --workers? leave out --workers N)"
                    if self.variant.workers > 1 and "--workers" in self.log_tail()
                    else ""
                )
                raise BenchError(f"{self.kind} server exited at start:\n{self.log_tail()}{hint}")
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
    """The benchmark project's database and storage for one mode of ours, seen from the
    runner. Each mode has its own database and folder: messages that store-only mode
    leaves unprocessed must never become work for a default-mode server."""

    def __init__(
        self,
        args: argparse.Namespace,
        workdir: Path,
        *,
        mode: str = "default",
        code: dict[str, Any] | None = None,
        broker_url: str | None = None,
    ) -> None:
        self.db = args.db
        self.mode = mode
        suffix = "" if mode == "default" else f"_{mode}"
        self.pg_name = args.pg_name + suffix
        self.media_root = workdir / f"media{suffix}"
        self.media_root.mkdir()
        self.sqlite_path = workdir / f"inbound_bench{suffix}.sqlite3"
        self.env = dict(os.environ)
        self.env.update(
            DJANGO_SETTINGS_MODULE="bench_project.settings",
            BENCH_DB=self.db,
            BENCH_MODE=mode,
            BENCH_PG_NAME=self.pg_name,
            BENCH_SQLITE_PATH=str(self.sqlite_path),
            BENCH_MEDIA_ROOT=str(self.media_root),
            PYTHONUNBUFFERED="1",
        )
        if broker_url:
            self.env["BENCH_BROKER_URL"] = broker_url
        if args.setting:
            self.env["BENCH_INBOUND_SMTP"] = json.dumps(args.setting)
        self.code = code if code is not None else code_under_test(args.ref, workdir)
        if self.code["src"]:
            self.env["PYTHONPATH"] = os.pathsep.join(
                p for p in (self.code["src"], os.environ.get("PYTHONPATH", "")) if p
            )
        self.created_pg = False

    def manage(self, *args: str, timeout: float = 300) -> str:
        rc, out, err = run_child(
            [PYTHON, str(BENCH_DIR / "manage.py"), *args], timeout=timeout, env=self.env
        )
        if rc != 0:
            raise BenchError(f"manage.py {' '.join(args)} failed ({rc}):\n{out}\n{err}")
        return out

    def _pg_connect(self, dbname: str) -> Any:
        import psycopg

        return psycopg.connect(
            dbname=dbname,
            host=os.environ.get("BENCH_PG_HOST", "127.0.0.1"),
            port=os.environ.get("BENCH_PG_PORT", "5432"),
            user=os.environ.get("BENCH_PG_USER", "postgres"),
            autocommit=True,
            connect_timeout=10,
        )

    def _pg_admin(self) -> Any:
        return self._pg_connect("postgres")

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
            with self._pg_admin() as conn:
                conn.execute(f'DROP DATABASE IF EXISTS "{self.pg_name}" WITH (FORCE)')

    def _query(self, sql: str) -> list[tuple[Any, ...]]:
        # Plain SQL, not the ORM: the runner reads two databases (one per mode) and
        # must not import the code under test (--ref may differ from the working tree).
        if self.db == "postgres":
            with self._pg_connect(self.pg_name) as conn:
                return list(conn.execute(sql).fetchall())
        import sqlite3

        with contextlib.closing(sqlite3.connect(self.sqlite_path, timeout=30)) as conn:
            return list(conn.execute(sql).fetchall())

    def counts(self) -> dict[str, int]:
        """Rows, duplicate rows and raw files stored so far."""
        rows, duplicates = self._query(
            f"SELECT count(*), coalesce(sum(CASE WHEN status = 'duplicate' THEN 1 ELSE 0 END), 0)"
            f" FROM {MESSAGE_TABLE}"
        )[0]
        files = sum(
            1 for _, _, names in os.walk(self.media_root) for name in names if name.endswith(".eml")
        )
        return {"rows": int(rows), "duplicates": int(duplicates), "files": files}

    def status_counts(self) -> dict[str, int]:
        return {
            str(status): int(n)
            for status, n in self._query(
                f"SELECT status, count(*) FROM {MESSAGE_TABLE} GROUP BY status"
            )
        }

    def close(self) -> None:
        """Nothing stays open between queries (kept for callers)."""


# -------------------------------------------------------------------- the runner


@dataclass
class Runner:
    args: argparse.Namespace
    stores: dict[str, Store]  # by mode of ours: "default", "store"
    workdir: Path
    smtp_source: str
    variants: list[Variant]
    broker: RedisBroker | None = None
    seq: int = 0
    run_id: str = ""
    #: (the loopback DNS server, INBOUND_SMTP overrides) with --sender-checks.
    dns: tuple[Any, dict[str, Any]] | None = None
    #: fsyncs Postfix made for the warm-up of its first load (strace), once per run.
    postfix_fsync: dict[str, Any] | None = None

    def say(self, text: str) -> None:
        print(text, flush=True)

    def variant(self, name: str) -> Variant:
        return next(v for v in self.variants if v.name == name)

    def store_of(self, variant: Variant) -> Store | None:
        return self.stores[variant.mode] if variant.is_ours else None

    def new_server(self, variant: Variant) -> Server | PostfixServer:
        self.seq += 1
        if variant.program == "postfix":
            # Its own folder, readable by the postfix user (the work folder is private).
            folder = Path(tempfile.mkdtemp(prefix=f"inbound-bench-postfix-{self.seq:03d}-"))
            folder.chmod(0o755)
            return PostfixServer(folder)
        log_path = self.workdir / f"server-{self.seq:03d}-{variant.name}.log"
        store = self.store_of(variant)
        env = store.env if store is not None else dict(os.environ)
        if variant.is_ours:
            cmd = [PYTHON, str(BENCH_DIR / "manage.py"), "smtpd", "127.0.0.1:0"]
            if variant.workers > 1:  # only then: smtpd without --workers still runs
                cmd += ["--workers", str(variant.workers)]
        else:
            cmd = [PYTHON, str(BENCH_DIR / "bare_server.py"), "--host", "127.0.0.1", "--port", "0"]
        if variant.senders_checked:
            assert self.dns is not None
            overrides = {**json.loads(env.get("BENCH_INBOUND_SMTP") or "{}"), **self.dns[1]}
            env = {**env, "BENCH_INBOUND_SMTP": json.dumps(overrides)}
        return Server(variant, cmd, env, log_path)

    @contextlib.contextmanager
    def server(self, variant: Variant) -> Iterator[Server | PostfixServer]:
        if self.args.wait_quiet > 0:
            wait_until_quiet(self.args.wait_quiet, self.args.quiet_threshold, self.say)
        server = self.new_server(variant)
        if isinstance(server, PostfixServer):
            _live_postfix.append(server)
        try:
            try:
                server.start()
            except PostfixError as error:
                raise BenchError(str(error)) from None
            if variant.program == "postfix" and self.postfix_fsync is None:
                self.postfix_fsync = self.warm_up_counting_fsyncs(server)
            else:
                self.smtp_source_load(server, WARMUP, check=True)
            time.sleep(0.5)  # let inline processing of the warm-up finish
            yield server
        finally:
            code = server.stop()
            if code not in (0, None, -signal.SIGTERM):
                self.say(f"  note: {variant.name} server exited with {code}")
            if isinstance(server, PostfixServer):
                _live_postfix.remove(server)
                if self.args.keep:
                    self.say(f"  kept {server.folder}")
                else:
                    server.remove()  # its queue: up to 500 MiB after the 25m load

    def warm_up_counting_fsyncs(self, server: Server | PostfixServer) -> dict[str, Any]:
        """The warm-up under strace: Postfix must fsync each accepted message."""
        try:
            fsyncs = count_fsyncs(server.pid, send=lambda: self.smtp_source_load(server, WARMUP))
        except PostfixError as error:
            self.say(f"  (Postfix fsyncs not verified: {error})")
            self.smtp_source_load(server, WARMUP)
            return {"verified": False, "reason": str(error)}
        if fsyncs < WARMUP.messages:
            raise BenchError(
                f"Postfix made {fsyncs} fsync calls for {WARMUP.messages} messages: "
                "it would not be a durable reference"
            )
        self.say(f"  postfix: {fsyncs} fsyncs for {WARMUP.messages} warm-up messages (strace)")
        return {"verified": True, "messages": WARMUP.messages, "fsyncs": fsyncs}

    def tag(self) -> str:
        self.seq += 1
        return f"t{self.run_id}x{self.seq}"

    def stored_counts(self, server: Server | PostfixServer) -> dict[str, int] | None:
        if isinstance(server, PostfixServer):
            return server.queued()
        store = self.store_of(server.variant)
        return store.counts() if store is not None else None

    def smtp_source_load(
        self, server: Server | PostfixServer, load: Load, *, check: bool = True
    ) -> dict[str, Any]:
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
        before = self.stored_counts(server)
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
            "cpu_ms_per_msg": 1000 * cpu["server_cpu_s"] / load.messages,
            "postgres_ms_per_msg": 1000 * cpu["postgres_cpu_s"] / load.messages,
            **cpu,
        }
        if before is not None and check:
            result["stored"] = self.check_stored(server, before, load.messages, load.name)
        return result

    def observed(
        self, server: Server | PostfixServer, cmd: list[str], *, timeout: float
    ) -> Observed:
        """Run the client ``cmd`` against ``server``, sampling the server's RSS and the
        CPU used meanwhile."""
        tree = server.variant.workers > 1 if isinstance(server, Server) else True
        try:
            return self._observed(server, cmd, timeout=timeout, tree=tree)
        except ProcessLookupError as error:  # the server died
            raise BenchError(f"{server.kind}: {error}\n{server.log_tail()}") from None

    def _observed(
        self, server: Server | PostfixServer, cmd: list[str], *, timeout: float, tree: bool
    ) -> Observed:
        sampler = RssSampler(server.pid, tree=tree)
        baseline = idle_rss_kib(server.pid, tree=tree)
        store = self.store_of(server.variant) if isinstance(server, Server) else None
        account = CpuAccount(
            server.pid,
            store.pg_name if store is not None and store.db == "postgres" else None,
            self.broker.pid if self.broker is not None else None,
        )
        sampler.start()
        t0 = time.perf_counter()
        rc, out, err = run_child(cmd, timeout=timeout)
        elapsed = time.perf_counter() - t0
        sampler.stop()
        return Observed(rc, out, err, elapsed, baseline, sampler, account.finish())

    def check_stored(
        self, server: Server | PostfixServer, before: dict[str, int], accepted: int, what: str
    ) -> dict[str, int]:
        if isinstance(server, PostfixServer):
            return self.check_queued(server, before, accepted, what)
        after = self.stored_counts(server)
        assert after is not None
        delta = {key: after[key] - before[key] for key in after}
        if delta["rows"] != accepted or delta["files"] != accepted or delta["duplicates"] != 0:
            raise BenchError(
                f"STORAGE CHECK FAILED after {what} against {server.kind}: {accepted} messages "
                f"got 250, but rows grew by {delta['rows']}, raw files by {delta['files']}, "
                f"duplicates by {delta['duplicates']}.\nserver log:\n{server.log_tail()}"
            )
        return delta

    def check_queued(
        self, server: PostfixServer, before: dict[str, int], accepted: int, what: str
    ) -> dict[str, int]:
        # cleanup moves a message to hold before smtpd answers; allow a moment anyway.
        deadline = time.monotonic() + 5
        while True:
            after = server.queued()
            delta = {key: after[key] - before[key] for key in after}
            if delta["hold"] == accepted or time.monotonic() > deadline:
                break
            time.sleep(0.1)
        others = {key: n for key, n in delta.items() if key != "hold" and n}
        if delta["hold"] != accepted or others:
            raise BenchError(
                f"QUEUE CHECK FAILED after {what} against postfix: {accepted} messages got 250, "
                f"but the hold queue grew by {delta['hold']} (other queues: {others}).\n"
                f"log:\n{server.log_tail()}"
            )
        return delta

    def latency_load(self, server: Server | PostfixServer, rate: float) -> dict[str, Any]:
        tag = self.tag()
        cmd = [
            PYTHON, str(BENCH_DIR / "latency.py"), "127.0.0.1", str(server.port),
            "--rate", f"{rate:.1f}",
            "--sessions", str(self.args.latency_sessions),
            "--duration", str(self.args.latency_duration),
            "--size", "1024",
            "--tag", tag,
        ]  # fmt: skip
        before = self.stored_counts(server)
        run = self.observed(server, cmd, timeout=self.args.latency_duration + 120)
        rc, out, err, cpu = run.rc, run.out, run.err, run.cpu
        baseline, sampler = run.baseline_kib, run.sampler
        if rc != 0:
            raise BenchError(f"latency client failed against {server.kind} (rc={rc}):\n{err}")
        result: dict[str, Any] = json.loads(out)
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
            order = self.variants if round_index % 2 == 0 else list(reversed(self.variants))
            self.say(
                f"round {round_index + 1}/{self.args.rounds} "
                f"(order: {' then '.join(v.name for v in order)})"
            )
            for load in loads:
                if wanted and load.name not in wanted:
                    continue
                for variant in order:
                    raw.setdefault(load.name, {}).setdefault(variant.name, []).append(
                        self.measure_load(variant, load)
                    )
                if load.name == "1k" and (not wanted or "latency" in wanted):
                    for variant in order:
                        rate = self.args.latency_fraction * raw["1k"][variant.name][-1]["msg_per_s"]
                        raw.setdefault("latency", {}).setdefault(variant.name, []).append(
                            self.measure_latency(variant, max(1.0, rate))
                        )
        return raw

    def measure_load(self, variant: Variant, load: Load) -> dict[str, Any]:
        with self.server(variant) as server:
            result = self.smtp_source_load(server, load)
            problems = server.log_problems() if isinstance(server, PostfixServer) else []
        if isinstance(server, Server):
            problems = server.log_problems()  # shutdown included
        result["server_log_problems"] = problems[:10]
        self.say(
            f"  {load.name:8} {variant.name:8} {result['msg_per_s']:9.1f} msg/s "
            f"{result['data_mib_per_s']:7.1f} MiB/s {result['elapsed_s']:6.2f} s  "
            f"RSS {result['rss_peak_mib']:6.1f} MiB (+{result['rss_growth_mib']:.1f})  "
            f"CPU {result['server_cpu_pct']:3.0f}% ({result['cpu_ms_per_msg']:.2f} ms/msg) "
            f"pg {result['postgres_cpu_pct']:3.0f}% others {result['others_cpu_pct']:3.0f}%"
            + (f"  [{len(problems)} warning lines in server log]" if problems else "")
        )
        return result

    def measure_latency(self, variant: Variant, rate: float) -> dict[str, Any]:
        with self.server(variant) as server:
            result = self.latency_load(server, rate)
            problems = server.log_problems() if isinstance(server, PostfixServer) else []
        if isinstance(server, Server):
            problems = server.log_problems()
        result["server_log_problems"] = problems[:10]
        self.say(
            f"  latency  {variant.name:8} offered {rate:7.1f}/s achieved "
            f"{result['achieved_rate']:7.1f}/s  p50 {result['p50_ms']:6.2f} ms  "
            f"p99 {result['p99_ms']:6.2f} ms  max {result['max_ms']:6.2f} ms  "
            f"others {result['others_cpu_pct']:3.0f}%"
        )
        return result


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
    parser.add_argument(
        "--servers",
        nargs="+",
        metavar="NAME",
        help="run only these servers: ours store bare postfix (store-wN with --workers N)",
    )
    parser.add_argument(
        "--workers",
        type=int,
        default=1,
        help="N > 1 adds store-wN: store only with `smtpd --workers N` (default 1: not run)",
    )
    parser.add_argument(
        "--pg-name",
        default="inbound_bench",
        help="database created (and dropped); store-only mode uses NAME_store",
    )
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
    if args.workers < 1:
        parser.error("--workers must be at least 1")
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
    global _DNS_SERVER
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
    checks = dict.fromkeys(("DNSBL", "IPREV", "SENDER_DOMAIN", "SPF", "DKIM", "DMARC"), "tag")
    return server, {
        "SENDER_CHECKS": checks,
        "DNSBL_ZONES": ["bl.bench"],
        "DNS": {"NAMESERVERS": [server.address], "TIMEOUT": 2.0, "CACHE_SIZE": cache_size},
    }


_DNS_SERVER: Any = None


def _raise_interrupt(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


@dataclass
class Setup:
    """What a run prepares before the first server starts, and tears down at the end."""

    workdir: Path
    code: dict[str, Any]  # which django_inbound_smtp runs (code_under_test())
    stores: dict[str, Store]
    broker: RedisBroker | None = None

    def drop(self) -> None:
        for store in self.stores.values():
            with contextlib.suppress(Exception):
                store.drop()

    def stop(self) -> None:
        if self.broker is not None:
            self.broker.stop()


def prepare(args: argparse.Namespace, workdir: Path, variants: list[Variant]) -> Setup:
    """The databases of the modes of ours in ``variants`` (one each), and the private
    redis-server when store-only mode is among them."""
    code = code_under_test(args.ref, workdir)
    setup = Setup(workdir, code, {})
    modes = sorted({v.mode for v in variants if v.is_ours}, key=lambda m: m != "default")
    if "store" in modes:
        setup.broker = RedisBroker(workdir / "redis")
        try:
            setup.broker.start()
        except BrokerError as error:
            raise BenchError(str(error)) from None
    for mode in modes:
        broker_url = setup.broker.url if setup.broker is not None and mode == "store" else None
        setup.stores[mode] = Store(args, workdir, mode=mode, code=code, broker_url=broker_url)
    return setup


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
    setup: Setup | None = None
    runner: Runner | None = None
    status = 1
    try:
        variants = variants_for(args)
        names = [v.name for v in variants]
        smtp_source = find_smtp_source()
        print(f"work folder {workdir}; database: {args.db}; servers: {' '.join(names)}", flush=True)
        setup = prepare(args, workdir, variants)
        db_info: dict[str, Any] = {"engine": args.db}
        for mode, store in setup.stores.items():
            db_info[mode] = store.create()
        runner = Runner(args, setup.stores, workdir, smtp_source, variants, broker=setup.broker)
        runner.run_id = format(int(time.time()) % 0xFFFFFF, "x")
        if args.sender_checks:
            runner.dns = start_dns(args.dns_cache)
        t0 = time.monotonic()
        load_before = os.getloadavg()
        raw = runner.run()
        rows = summarize(raw, names)
        checks = targets(rows, workers=args.workers)
        meta = {
            "timestamp": timestamp,
            "db": db_info,
            "servers": names,
            "workers": args.workers,
            "rounds": args.rounds,
            "inbound_smtp_overrides": args.setting,
            "quick": args.quick,
            "argv": sys.argv[1:] if argv is None else argv,
            "duration_s": time.monotonic() - t0,
            "code": {k: v for k, v in setup.code.items() if k != "src"},
            "versions": versions(),
            "host": {
                "cpus": os.cpu_count(),
                "kernel": platform.release(),
                "machine": platform.machine(),
                "loadavg_before": load_before,
                "loadavg_after": os.getloadavg(),
            },
            "smtp_source": smtp_source,
            "postfix_fsync": runner.postfix_fsync,
            "final_status_counts": {
                mode: store.status_counts() for mode, store in setup.stores.items()
            },
            "noisy_loads": noisy_loads(raw),
            "dns_cache": args.dns_cache,
            "dns_delay_ms": DNS_DELAY * 1000,
        }  # fmt: skip
        table = render(rows, checks, meta, names)
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
            stop_live_postfix()
            if runner_dns := globals().get("_DNS_SERVER"):
                runner_dns.stop()
            if setup is not None:
                setup.stop()
            if not args.keep:
                if setup is not None:
                    setup.drop()
                shutil.rmtree(workdir, ignore_errors=True)
            else:
                print(f"kept {workdir} and the databases", file=sys.stderr)
        finally:
            signal.signal(signal.SIGINT, previous)
    return status


if __name__ == "__main__":
    sys.exit(main())
