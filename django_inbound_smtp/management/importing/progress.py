"""Progress of a long import: a bar on a terminal, a plain line now and then otherwise."""

from __future__ import annotations

import time
from typing import Protocol, TextIO

from django_inbound_smtp.management.importing.outcomes import Summary

__all__ = ["Progress", "summary_lines"]

_BAR = 30


class Source(Protocol):
    done: int
    total: int
    unit: str


class Progress:
    """Shows how far ``source`` is, at most every ``every`` seconds (a terminal) or
    every ``plain_every`` seconds (a log, a pipe: one line each time, no bar)."""

    def __init__(
        self, stream: TextIO, *, tty: bool, every: float = 0.2, plain_every: float = 10.0
    ) -> None:
        self.stream = stream
        self.tty = tty
        self.every = every if tty else plain_every
        self._last = time.monotonic()

    def update(self, source: Source, summary: Summary, *, force: bool = False) -> None:
        now = time.monotonic()
        if not force and now - self._last < self.every:
            return
        self._last = now
        share = source.done / source.total if source.total else 1.0
        counts = (
            f"{summary.seen} read: {summary.stored} stored, {summary.duplicates + summary.already}"
            f" duplicates, {sum(summary.refused.values())} refused"
        )
        if self.tty:
            filled = int(_BAR * share)
            bar = "#" * filled + "-" * (_BAR - filled)
            self.stream.write(f"\r[{bar}] {share:4.0%} {counts}")
        else:
            self.stream.write(f"{share:.0%} of {source.total} {source.unit}; {counts}\n")
        self.stream.flush()

    def close(self) -> None:
        if self.tty:
            self.stream.write("\n")
            self.stream.flush()


def summary_lines(summary: Summary) -> list[str]:
    """The end-of-import summary, one fact a line."""
    lines = [
        f"Read {summary.seen} message(s).",
        f"Stored {summary.stored} new message(s).",
    ]
    if summary.already:
        lines.append(f"Skipped {summary.already} already imported (nothing new stored for them).")
    if summary.duplicates:
        lines.append(f"Recorded {summary.duplicates} duplicate(s) of messages stored earlier.")
    for reason, count in sorted(summary.refused.items()):
        lines.append(f"Refused {count}: {reason}.")
    if summary.errors:
        lines.append(f"Errors: {summary.errors} message(s) could not be stored.")
    return lines
