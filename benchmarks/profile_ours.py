#!/usr/bin/env python
"""Profile "ours" under the 1 KiB load with py-spy, and summarize where the time goes.

Creates the benchmark database like ``run.py``, starts ``manage.py smtpd``, drives it
with ``smtp-source -s 20 -l 1024 -d`` (enough messages to outlast the recordings), and
records the server with py-spy three times:

- ``cpu``:  samples of threads running on a CPU (``--threads``);
- ``gil``:  samples of the thread holding the GIL only (``--gil``): Python-level work;
- ``wall``: every thread, idle ones included (``--idle --threads``): where threads wait.

Writes the collapsed stacks (``*.txt``), an SVG flame graph of the ``cpu`` recording,
``budget.md`` and ``budget.json`` (the per-message CPU budget: the ``cpu`` samples put
in steps by ``budget.BUCKETS``, scaled to the CPU the process used during that recording
and divided by the messages stored meanwhile) and ``summary.txt`` (the budget, per-thread
share, top functions by own time, top by inclusive time) into ``--out`` (default
``benchmarks/results/profile-<timestamp>-<db>-<mode>/``).

    make profile PROFILE_ARGS="--mode store"     # installs py-spy into the venv first
    python benchmarks/profile_ours.py [--db postgres|sqlite] [--mode default|store]
"""

from __future__ import annotations

import argparse
import collections
import datetime as dt
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import budget  # noqa: E402 - the bucket table
import proctree  # noqa: E402
import run as bench  # noqa: E402 - the runner's helpers
import sampling  # noqa: E402

THREAD = re.compile(r"^(?:process \d+:.*?;)?thread \((0x[0-9A-Fa-f]+)\)")


def py_spy() -> str:
    found = shutil.which("py-spy") or str(Path(sys.executable).with_name("py-spy"))
    if not Path(found).exists():
        raise bench.BenchError("py-spy not found: `make profile` installs it into the venv")
    return found


def record(pid: int, out: Path, duration: int, *extra: str) -> None:
    cmd = [py_spy(), "record", "--pid", str(pid), "--duration", str(duration), "--rate", "200",
           "--nonblocking", "--output", str(out), *extra]  # fmt: skip
    rc, _, err = bench.run_child(cmd, timeout=duration + 60)
    if rc != 0:
        raise bench.BenchError(f"py-spy failed ({rc}): {err}")


def parse(path: Path) -> list[tuple[list[str], int]]:
    stacks = []
    for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
        stack, _, count = line.rpartition(" ")
        if stack and count.isdigit():
            stacks.append((stack.split(";"), int(count)))
    return stacks


def strip_line(frame: str) -> str:
    # "name (path/to/file.py:123)" -> "name (file.py)"
    match = re.match(r"^(.*) \((.*?):\d+\)$", frame)
    if not match:
        return frame
    name, path = match.groups()
    parts = Path(path).parts
    short = "/".join(parts[-2:]) if len(parts) >= 2 else path
    return f"{name} ({short})"


def thread_of(stack: list[str]) -> tuple[str, list[str]]:
    frames = list(stack)
    thread = "all"
    if frames and frames[0].startswith("process "):
        frames = frames[1:]
    if frames and frames[0].startswith("thread ("):
        thread = frames[0]
        frames = frames[1:]
    return thread, frames


def role(frames: list[str]) -> str:
    text = ";".join(frames)
    if "asyncio/base_events.py" in text or "run_server" in text or "base_events" in text:
        if "_bootstrap" not in text:
            return "main (event loop)"
    if "inbound-smtp-process" in text or "_process_inline" in text:
        return "processing pool"
    if "thread_sensitive" in text or "asgiref" in text or "delivery.py" in text:
        return "ORM thread (sync_to_async)"
    if "concurrent/futures/thread.py" in text:
        return "other pool thread"
    return "other"


def project_frame(frames: list[str]) -> str:
    """The innermost frame of our code (or aiosmtpd's): what the thread was doing for us."""
    for frame in reversed(frames):
        if "django_inbound_smtp" in frame or "aiosmtpd" in frame:
            return strip_line(frame)
    return "-"


def summarize(path: Path, title: str, top: int = 25) -> str:
    stacks = parse(path)
    total = sum(count for _, count in stacks) or 1
    own: collections.Counter[str] = collections.Counter()
    inclusive: collections.Counter[str] = collections.Counter()
    by_thread: collections.Counter[str] = collections.Counter()
    thread_role: dict[str, collections.Counter[str]] = collections.defaultdict(collections.Counter)
    thread_work: dict[str, collections.Counter[str]] = collections.defaultdict(collections.Counter)
    thread_step: dict[str, collections.Counter[str]] = collections.defaultdict(collections.Counter)
    for stack, count in stacks:
        thread, frames = thread_of(stack)
        by_thread[thread] += count
        thread_role[thread][role(frames)] += count
        if frames:
            own[strip_line(frames[-1])] += count
            thread_work[thread][f"{project_frame(frames)} | {strip_line(frames[-1])}"] += count
            thread_step[thread][project_frame(frames)] += count
            for frame in {strip_line(f) for f in frames}:
                inclusive[frame] += count
    lines = [f"== {title}: {total} samples ({path.name})", ""]
    if len(by_thread) > 1:
        lines.append("threads (share of samples):")
        for thread, count in by_thread.most_common(12):
            label = thread_role[thread].most_common(1)[0][0]
            lines.append(f"  {100 * count / total:5.1f}%  {thread}  [{label}]")
        lines += ["", "per thread, by step (innermost frame of ours or aiosmtpd; - = none):"]
        for thread, count in by_thread.most_common(5):
            lines.append(f"  {thread}: {count} samples")
            for step, n in thread_step[thread].most_common(10):
                lines.append(f"    {100 * n / count:5.1f}%  {step}")
        lines += ["", "per thread, top work (innermost frame of ours/aiosmtpd | leaf frame):"]
        for thread, count in by_thread.most_common(5):
            lines.append(f"  {thread}: {count} samples")
            for work, n in thread_work[thread].most_common(8):
                lines.append(f"    {100 * n / count:5.1f}%  {work}")
    lines += ["", f"top {top} by own time:"]
    for frame, count in own.most_common(top):
        lines.append(f"  {100 * count / total:5.1f}%  {frame}")
    lines += ["", f"top {top} by inclusive time:"]
    for frame, count in inclusive.most_common(top):
        lines.append(f"  {100 * count / total:5.1f}%  {frame}")
    return "\n".join(lines) + "\n"


def budget_report(out: Path) -> str:
    """The budget of a profile folder (``budget.json`` and ``cpu.txt``) as Markdown."""
    facts = json.loads((out / "budget.json").read_text(encoding="utf-8"))
    fractions = budget.shares(budget.parse_raw((out / "cpu.txt").open(encoding="utf-8")))
    per_message = budget.per_message_ms(
        fractions, cpu_seconds=facts["server_cpu_s"], messages=facts["messages"]
    )
    extra = {
        "PostgreSQL (benchmark database)": 1000 * facts["postgres_cpu_s"] / facts["messages"],
    }
    if facts.get("broker_cpu_s"):
        extra["redis (broker)"] = 1000 * facts["broker_cpu_s"] / facts["messages"]
    head = (
        f"per-message CPU budget: {facts['messages']} messages in {facts['seconds']:.1f} s "
        f"({facts['messages'] / facts['seconds']:.0f} msg/s with py-spy attached), "
        f"mode {facts['mode']}, db {facts['db']}, others {facts['others_cpu_pct']:.0f}% of a core"
    )
    return budget.render(per_message, extra=extra, title=head + "\n") + "\n"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--db", choices=("postgres", "sqlite"), default="postgres")
    parser.add_argument(
        "--mode",
        choices=("default", "store"),
        default="default",
        help="ours processing inline (default) or storing only (Celery, no worker)",
    )
    parser.add_argument("--duration", type=int, default=20, help="seconds per recording")
    parser.add_argument("--pg-name", default="inbound_bench_profile")
    parser.add_argument("--ref", help="profile django_inbound_smtp as of this git commit")
    parser.add_argument("--out", type=Path)
    parser.add_argument(
        "--summarize", type=Path, metavar="DIR", help="only summarize an earlier profile folder"
    )
    args = parser.parse_args()
    if args.summarize:
        if (args.summarize / "budget.json").exists():
            print(budget_report(args.summarize))
        for name in ("cpu", "gil", "wall"):
            if (args.summarize / f"{name}.txt").exists():
                print(summarize(args.summarize / f"{name}.txt", name))
        return 0
    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGTERM, bench._raise_interrupt)
    bench_args = bench.parse_args(
        ["--db", args.db, "--pg-name", args.pg_name] + (["--ref", args.ref] if args.ref else [])
    )
    timestamp = dt.datetime.now(dt.UTC).strftime("%Y%m%dT%H%M%SZ")
    out = args.out or bench.RESULTS_DIR / f"profile-{timestamp}-{args.db}-{args.mode}"
    out.mkdir(parents=True, exist_ok=True)
    workdir = Path(tempfile.mkdtemp(prefix="inbound-profile-"))
    variant = bench.Variant("ours" if args.mode == "default" else "store", "ours", mode=args.mode)
    setup: bench.Setup | None = None
    status = 1
    try:
        py_spy()
        setup = bench.prepare(bench_args, workdir, [variant])
        store = setup.stores[args.mode]
        store.create()
        runner = bench.Runner(
            bench_args, setup.stores, workdir, bench.find_smtp_source(), [variant],
            broker=setup.broker,
        )  # fmt: skip
        runner.run_id = "p"
        with runner.server(variant) as server:
            recordings = [
                ("cpu", ["--threads"]),
                ("gil", ["--gil"]),
                ("wall", ["--idle", "--threads"]),
            ]
            cmd = [runner.smtp_source, "-s", "20", "-m", "10000000", "-l", "1024", "-d", "-N",
                   "-M", bench.CLIENT_NAME, "-f", f"bench@{bench.CLIENT_NAME}",
                   "-t", "prof@bench.test", f"127.0.0.1:{server.port}"]  # fmt: skip
            load = bench.spawn(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
            try:
                time.sleep(3)  # steady state
                before = store.counts()["rows"]
                t0 = time.perf_counter()
                for name, extra in recordings:
                    rows_before = store.counts()["rows"]
                    account = sampling.CpuAccount(
                        server.pid,
                        store.pg_name if args.db == "postgres" else None,
                        setup.broker.pid if setup.broker is not None else None,
                    )
                    t_rec = time.perf_counter()
                    load_cpu = proctree.tree_cpu_seconds(load.pid)
                    record(
                        server.pid, out / f"{name}.txt", args.duration, "--format", "raw", *extra
                    )
                    if name == "cpu":  # the budget: this recording's samples and CPU
                        cpu = account.finish()
                        # smtp-source still runs (not reaped): its CPU is the client's,
                        # not "others" (which only counts other people's jobs).
                        client = (
                            100
                            * (proctree.tree_cpu_seconds(load.pid) - load_cpu)
                            / (time.perf_counter() - t_rec)
                        )
                        cpu["client_cpu_pct"] += client
                        cpu["others_cpu_pct"] = max(0.0, cpu["others_cpu_pct"] - client)
                        facts = {
                            "mode": args.mode, "db": args.db,
                            "messages": store.counts()["rows"] - rows_before,
                            "seconds": time.perf_counter() - t_rec,
                            "code": {k: v for k, v in store.code.items() if k != "src"},
                            "timestamp": timestamp,
                            "loadavg": os.getloadavg(),
                            **cpu,
                        }  # fmt: skip
                        (out / "budget.json").write_text(
                            json.dumps(facts, indent=2) + "\n", encoding="utf-8"
                        )
                    print(f"recorded {name}", flush=True)
                record(server.pid, out / "cpu.svg", min(args.duration, 10), "--threads")
                rate = (store.counts()["rows"] - before) / (time.perf_counter() - t0)
                dump = bench.run_child([py_spy(), "dump", "--pid", str(server.pid)], timeout=30)[1]
            finally:
                bench.stop_process(load, grace=5)
        summary = [f"ours ({store.code['source']} {store.code['commit'][:10]}, mode {args.mode}) "
                   f"under smtp-source -s 20 -l 1024 -d, db={args.db}: {rate:.1f} msg/s stored "
                   f"while recording (py-spy attached)\n"]  # fmt: skip
        report = budget_report(out)
        (out / "budget.md").write_text(report, encoding="utf-8")
        summary.append("== " + report)
        for name, _ in recordings:
            summary.append(summarize(out / f"{name}.txt", name))
        summary.append("== py-spy dump (one moment)\n" + dump)
        (out / "summary.txt").write_text("\n".join(summary), encoding="utf-8")
        print("\n".join(summary))
        print(f"wrote {out}")
        status = 0
    except bench.BenchError as error:
        print(f"PROFILE FAILED: {error}", file=sys.stderr)
    except KeyboardInterrupt:
        status = 130
    finally:
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        bench.stop_all_children()
        if setup is not None:
            setup.stop()
            setup.drop()
        shutil.rmtree(workdir, ignore_errors=True)
    return status


if __name__ == "__main__":
    sys.exit(main())
