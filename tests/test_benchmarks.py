"""The benchmark's pure helpers: the CPU budget's buckets, the Postfix config, the targets.

The benchmark scripts live in ``benchmarks/`` (not a package: they run as scripts), so
they are imported from there. Nothing here starts a server or Postfix; the stacks are
copied from a py-spy recording of ``smtpd`` under the 1 KiB load (``--format raw``).
"""

from __future__ import annotations

import importlib
import sys
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType

import pytest

BENCH_DIR = Path(__file__).resolve().parent.parent / "benchmarks"

LOOP = (
    "<module> (manage.py:13);Command.handle (django_inbound_smtp/management/commands/smtpd.py:81);"
    "run (asyncio/runners.py:190);BaseEventLoop.run_forever (asyncio/base_events.py:607);"
    "BaseEventLoop._run_once (asyncio/base_events.py:1884)"
)
POOL = (
    "Thread._bootstrap (threading.py:1002);Thread.run (threading.py:982);"
    "_worker (concurrent/futures/thread.py:83);_WorkItem.run (concurrent/futures/thread.py:58)"
)
PROCESS = f"{POOL};InlineDispatcher._process (django_inbound_smtp/lifecycle/backends.py:119)"
GROUP = (
    f"{POOL};SyncToAsync.thread_handler (asgiref/sync.py:522);"
    "store_batch (django_inbound_smtp/store/__init__.py:83)"
)


@pytest.fixture(scope="module")
def bench() -> Iterator[dict[str, ModuleType]]:
    sys.path.insert(0, str(BENCH_DIR))
    try:
        # run is imported too: it imports every other module of the benchmark.
        names = ("budget", "postfix", "report", "run")
        yield {name: importlib.import_module(name) for name in names}
    finally:
        sys.path.remove(str(BENCH_DIR))


@pytest.mark.parametrize(
    ("stack", "bucket"),
    [
        (f"{LOOP};EpollSelector.select (selectors.py:468)", "protocol"),
        (f"{LOOP};Handle._run (asyncio/events.py:80);SMTP._handle_client (aiosmtpd/smtp.py:540)",
         "protocol"),
        (f"{POOL};SyncToAsync.thread_handler (asgiref/sync.py:522);"
         "mailbox_validator (django_inbound_smtp/validators/models.py:58);"
         "QuerySet.filter (django/db/models/query.py:1495)", "rcpt"),
        (f"{GROUP};_write_files (django_inbound_smtp/store/__init__.py:137);"
         "make_durable_many (django_inbound_smtp/store/files.py:97)", "file"),
        (f"{GROUP};_commit (django_inbound_smtp/store/__init__.py:158);"
         "_insert (django_inbound_smtp/store/__init__.py:199);"
         "QuerySet.bulk_create (django/db/models/query.py:821)", "rows"),
        (f"{GROUP};_commit (django_inbound_smtp/store/__init__.py:157);"
         "Atomic.__exit__ (django/db/transaction.py:263);"
         "BaseDatabaseWrapper.commit (django/db/backends/base/base.py:330)", "commit"),
        (f"{PROCESS};process_batch (django_inbound_smtp/lifecycle/process.py:238);"
         "claim_many (django_inbound_smtp/lifecycle/process.py:81)", "claim"),
        # A commit made while extracting belongs to parsing, not to the store's commit.
        (f"{PROCESS};process_batch (django_inbound_smtp/lifecycle/process.py:241);"
         "extract_many (django_inbound_smtp/lifecycle/extract.py:91);"
         "_write (django_inbound_smtp/lifecycle/extract.py:115);"
         "Atomic.__exit__ (django/db/transaction.py:228)", "parse"),
        (f"{PROCESS};process_batch (django_inbound_smtp/lifecycle/process.py:242);"
         "notify (django_inbound_smtp/lifecycle/notify.py:197);"
         "Signal.send_robust (django/dispatch/dispatcher.py:226)", "notify"),
        (f"{POOL};send_celery_task (django_inbound_smtp/lifecycle/backends.py:127);"
         "Celery.send_task (celery/app/base.py:801)", "dispatch"),
        (POOL, "other"),
        # A pool thread between two jobs: its hand-off counts for what the pool is for.
        (f"thread (22661): inbound-smtp-process_2;{POOL}", "dispatch"),
        (f"thread (22776): inbound-fsync_7;{POOL}", "file"),
        (f"thread (22661): inbound-smtp-process_2;{PROCESS};"
         "process_batch (django_inbound_smtp/lifecycle/process.py:238)", "claim"),
    ],
)  # fmt: skip
def test_a_stack_goes_to_the_step_it_serves(
    bench: dict[str, ModuleType], stack: str, bucket: str
) -> None:
    assert bench["budget"].bucket_of(stack.split(";")) == bucket


def test_raw_lines_lose_the_thread_frames_and_keep_their_counts(
    bench: dict[str, ModuleType],
) -> None:
    budget = bench["budget"]
    lines = [
        f"thread (0x7f00): MainThread;{LOOP};EpollSelector.select (selectors.py:468) 30\n",
        f'process 12:"python";thread (0x7f01): pool;{POOL} 10\n',
        "not a stack line\n",
    ]
    stacks = budget.parse_raw(lines)
    assert [count for _, count in stacks] == [30, 10]
    assert stacks[1][0][0] == "thread (0x7f01): pool"  # the process pseudo-frame is gone
    fractions = budget.shares(stacks)
    assert fractions["protocol"] == pytest.approx(0.75)
    assert fractions["other"] == pytest.approx(0.25)
    assert set(fractions) == set(budget.ORDER)


def test_the_budget_splits_the_measured_cpu_per_message(bench: dict[str, ModuleType]) -> None:
    budget = bench["budget"]
    per_message = budget.per_message_ms(
        {"protocol": 0.25, "claim": 0.75}, cpu_seconds=2.0, messages=100
    )
    # 2 s of CPU for 100 messages is 20 ms each, split 1:3.
    assert per_message == {"protocol": pytest.approx(5.0), "claim": pytest.approx(15.0)}
    with pytest.raises(ValueError, match="no message"):
        budget.per_message_ms({"protocol": 1.0}, cpu_seconds=1.0, messages=0)


def test_the_private_postfix_listens_on_loopback_and_holds_every_message(
    bench: dict[str, ModuleType], tmp_path: Path
) -> None:
    config = bench["postfix"].main_cf(tmp_path)
    settings = dict(
        (key.strip(), value.strip())
        for key, _, value in (line.partition("=") for line in config.splitlines())
        if not key.startswith("#") and value
    )
    assert settings["inet_interfaces"] == "127.0.0.1"
    assert settings["queue_directory"] == f"{tmp_path}/queue"
    assert settings["mydestination"] == "bench.test"
    assert settings["smtpd_end_of_data_restrictions"] == "check_client_access static:HOLD"
    assert "local_recipient_maps =" in config.splitlines()  # every local part accepted


def _row(scenario: str, key: str, values: dict[str, float]) -> dict[str, object]:
    return {"scenario": scenario, "key": key, "values": values}


def test_targets_say_met_missed_or_not_measured(bench: dict[str, ModuleType]) -> None:
    rows = [
        _row("1k", "msg_per_s", {"ours": 1200.0, "store": 900.0, "postfix": 2000.0,
                                 "store-w2": 2100.0}),
        _row("1k-conn", "msg_per_s", {"postfix": 1200.0, "store-w2": 1100.0}),
        _row("latency", "p99_ms", {"ours": 10.0}),
        _row("25m", "rss_growth_mib", {"ours": 64.0}),
    ]  # fmt: skip
    checks = bench["report"].targets(rows, workers=2)
    met = [check["met"] for check in checks]
    # store 1 process, default, store -w2 vs postfix, 1k-conn -w2 vs postfix,
    # p99 (10 is not < 10), RSS (64 <= 64), 1 MiB DATA (not measured).
    assert met == [False, True, True, False, False, True, None]
    assert checks[2]["goal"] == 2000.0
    assert checks[2]["reference"] == "postfix"
    without_workers = bench["report"].targets(rows, workers=1)
    assert without_workers[2]["met"] is None  # store-w2 is only read with --workers 2
