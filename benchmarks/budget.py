"""Per-message CPU budget from py-spy samples: which step of ours costs how much.

A py-spy stack (``--format raw``: frames ``function (path:line)`` joined by ``;``) is put
in the first bucket of ``BUCKETS`` whose pattern matches any of its frames; the order is
the priority (processing before storing, storing before the protocol), so a commit made
while claiming counts as ``claim`` and a query made while deciding ``RCPT`` as ``rcpt``.
Unmatched stacks are ``other`` (thread-pool plumbing, garbage collection, logging).

The shares of the samples are then scaled to the CPU time the process used during the
recording (from /proc, not from the sample count: py-spy may miss samples) and divided by
the messages stored meanwhile: milliseconds of CPU per message, per step.

**When modules move** (e.g. into ``store/`` and ``lifecycle/``), update the patterns: a
step whose frames no longer match falls into ``other``, which the summary shows.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Iterable, Sequence

PKG = r"django_inbound_smtp/"


def calls(*names: str) -> str:
    """A frame of one of these functions or methods (py-spy writes ``Class.method``)."""
    return rf"(?:^|\.)(?:{'|'.join(names)}) \("


def under(*folders: str) -> str:
    """A frame of code in one of these folders (py-spy shortens paths to the import
    path: ``asyncio/base_events.py``, ``django_inbound_smtp/spool.py``)."""
    return rf"[(/](?:{'|'.join(folders)})/"


def thread(prefix: str) -> str:
    """The pseudo-frame py-spy ``--threads`` puts first: a thread of this name. Only
    samples no code frame claimed land here: the pool's own hand-off and wake-ups."""
    return rf"^thread \([^)]*\): {prefix}"


#: (bucket, what it covers, pattern searched in each frame "function (path:line)").
BUCKETS: list[tuple[str, str, str]] = [
    ("notify", "message_received signal and handlers",
     rf"{calls('notify', 'send_robust')}|{PKG}signals\.py|{PKG}lifecycle/notify\.py"),
    ("parse", "re-parse of the stored message, parsed fields and attachments",
     rf"{calls('extract', 'extract_many')}|{PKG}lifecycle/extract\.py"),
    ("claim", "batch claim UPDATE and SELECT, leases, outcome UPDATE",
     rf"{PKG}lifecycle/(process|leases|owners)\.py"),
    ("dispatch", "scheduling after commit, the processing pool's hand-off, Celery task",
     rf"{PKG}(tasks|_celery)\.py|{PKG}lifecycle/(schedule|backends|django_task)\.py"
     rf"|{under('kombu', 'celery', 'redis', 'amqp')}"
     rf"|{thread('inbound-smtp-process')}"),
    ("file", "raw file: write, fsync of file and folder",
     rf"{PKG}store/files\.py|{calls('_write_files', 'place_raw')}"
     rf"|{thread('inbound-fsync')}"),
    ("rows", "row building, header summary, dedupe lookup, INSERTs",
     calls("_insert", "_prepare", "_classify", "message_row", "recipient_rows",
           "sender_check_rows", "originals", "dedupe_key", "_store_duplicate",
           "summarize_headers", "bulk_create")),
    ("commit", "transaction commit (the WAL fsync is PostgreSQL's CPU, not ours)",
     rf"{calls('commit')}|Atomic\.__exit__ \("),
    ("rows", "(the rest of the write path)", rf"{PKG}store/"),
    ("spool", "DATA into the spool: buffer, hash, spool file",
     rf"{PKG}(spool\.py|smtp/_intake\.py)"),
    ("rcpt", "RCPT decision: address checks, mailbox lookup",
     rf"{calls('handle_RCPT', '_rcpt_reply', 'validate_recipient')}|{PKG}validators/"
     rf"|{PKG}accounts\.py"),
    ("protocol", "SMTP protocol (aiosmtpd, our protocol and handler) and the event loop",
     rf"{under('aiosmtpd', 'asyncio')}|{PKG}smtp/|\(selectors\.py"),
]  # fmt: skip
OTHER = "other"
#: Buckets in report order (the order a message meets them), then ``other``.
ORDER = ["protocol", "rcpt", "spool", "file", "rows", "commit", "dispatch", "claim", "parse",
         "notify", OTHER]  # fmt: skip

_COMPILED = [(bucket, re.compile(pattern)) for bucket, _, pattern in BUCKETS]


def bucket_of(frames: Sequence[str]) -> str:
    """The bucket of one stack (outermost frame first, as py-spy writes them)."""
    for bucket, pattern in _COMPILED:
        if any(pattern.search(frame) for frame in frames):
            return bucket
    return OTHER


def parse_raw(lines: Iterable[str]) -> list[tuple[list[str], int]]:
    """py-spy ``--format raw`` lines (``frame;frame;... COUNT``) as (frames, count);
    a ``process`` pseudo-frame is dropped, the ``thread`` one of ``--threads`` kept."""
    stacks = []
    for line in lines:
        stack, _, count = line.rstrip("\n").rpartition(" ")
        if not stack or not count.isdigit():
            continue
        frames = [f for f in stack.split(";") if not f.startswith("process ")]
        stacks.append((frames, int(count)))
    return stacks


def shares(stacks: Iterable[tuple[Sequence[str], int]]) -> dict[str, float]:
    """Fraction of the samples per bucket (every bucket of ORDER present, summing to 1)."""
    counts: Counter[str] = Counter()
    for frames, count in stacks:
        counts[bucket_of(frames)] += count
    total = sum(counts.values())
    return {bucket: (counts[bucket] / total if total else 0.0) for bucket in ORDER}


def per_message_ms(
    fractions: dict[str, float], *, cpu_seconds: float, messages: int
) -> dict[str, float]:
    """Milliseconds of CPU per message per bucket: ``cpu_seconds`` split by ``fractions``."""
    if messages <= 0:
        raise ValueError("no message was stored during the recording")
    return {bucket: 1000 * cpu_seconds * share / messages for bucket, share in fractions.items()}


def render(
    budget: dict[str, float], *, extra: dict[str, float] | None = None, title: str = ""
) -> str:
    """The budget as a Markdown table (ms per message, share of ours' CPU)."""
    total = sum(budget.values())
    what = {bucket: text for bucket, text, _ in BUCKETS if not text.startswith("(")}
    what[OTHER] = "unmatched: thread plumbing, connection handling, logging, GC"
    lines = [title] if title else []
    lines += ["| step | ms CPU / message | share | covers |", "|---|---:|---:|---|"]
    for bucket in ORDER:
        share = budget[bucket] / total if total else 0.0
        lines.append(f"| {bucket} | {budget[bucket]:.3f} | {100 * share:.0f}% | {what[bucket]} |")
    lines.append(f"| **ours, total** | **{total:.3f}** | 100% | the smtpd process (/proc) |")
    for name, value in (extra or {}).items():
        lines.append(f"| {name} | {value:.3f} | | outside the process |")
    return "\n".join(lines)
