"""The orphan sweeper: files that no row points at, left by a crash.

Every failure path deletes what it wrote, but a process killed between writing a
file and committing its row (or between spooling and storing) leaves the file behind.
Such a file was never acknowledged with a ``250`` (the ``250`` follows the commit),
so removing it loses nothing. Only files older than a grace period are considered:
a younger one may belong to a transaction still in flight.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

from django.core.files.storage import Storage

from django_inbound_smtp.conf import get_settings
from django_inbound_smtp.models import Attachment, InboundMessage
from django_inbound_smtp.spool import SPOOL_SUFFIX
from django_inbound_smtp.store import files

__all__ = ["ORPHAN_GRACE", "remove_orphans"]

logger = logging.getLogger(__name__)

# Seconds a file must have existed before it can be an orphan: far longer than any
# transaction, and longer than DATA_TIMEOUT for spool files.
ORPHAN_GRACE = 3600.0
# How often the server's sweeper looks (listing folders is not free).
_EVERY = 600.0
_last_run = -_EVERY
# Names looked up per query (IN lists stay well under every backend's limits).
_BATCH = 500


def remove_orphans(*, days: int = 2, dry_run: bool = False, force: bool = False) -> list[str]:
    """Delete orphaned spool files and stored files of the last ``days`` days.

    Returns what was (or, with ``dry_run``, would be) removed. Without ``force`` it
    does nothing when it ran less than ten minutes ago in this process."""
    global _last_run
    now = time.monotonic()
    if not force and now - _last_run < _EVERY:
        return []
    _last_run = now
    grace = max(ORPHAN_GRACE, 2 * get_settings().DATA_TIMEOUT)
    removed = _spool_orphans(grace, dry_run=dry_run)
    storage = files.inbound_storage()
    for folder in _day_folders(days):
        removed += _stored_orphans(storage, folder, grace, dry_run=dry_run)
    if removed:
        logger.warning("%s %d orphaned file(s)", "found" if dry_run else "removed", len(removed))
    return removed


def _spool_orphans(grace: float, *, dry_run: bool) -> list[str]:
    folder = files.spool_directory()
    try:
        entries = list(os.scandir(folder))
    except FileNotFoundError:
        return []
    cutoff = time.time() - grace
    removed = []
    for entry in entries:
        if entry.name.endswith(SPOOL_SUFFIX) and entry.stat().st_mtime < cutoff:
            if not dry_run:
                try:
                    os.unlink(entry.path)
                except FileNotFoundError:
                    continue
            removed.append(entry.path)
    return removed


def _day_folders(days: int) -> Iterator[str]:
    """Storage folders (raw messages and attachments) of the last ``days`` days."""
    prefix = get_settings().STORAGE_PREFIX
    today = datetime.now(UTC).date()
    for back in range(days + 1):
        day = (today - timedelta(days=back)).strftime("%Y/%m/%d")
        for kind in ("", "attachments/"):
            yield f"{prefix}/{kind}{day}" if prefix else f"{kind}{day}"


def _stored_orphans(storage: Storage, folder: str, grace: float, *, dry_run: bool) -> list[str]:
    try:
        _, listed = storage.listdir(folder)
    except (FileNotFoundError, NotImplementedError):
        return []
    names = [f"{folder}/{file}" for file in listed]
    cutoff = datetime.now(UTC) - timedelta(seconds=grace)
    known: set[str] = set()
    for start in range(0, len(names), _BATCH):
        batch = names[start : start + _BATCH]
        known.update(
            InboundMessage.objects.filter(raw_file__in=batch).values_list("raw_file", flat=True)
        )
        known.update(Attachment.objects.filter(file__in=batch).values_list("file", flat=True))
    removed = []
    for name in names:
        if name in known or _modified(storage, name) > cutoff:
            continue
        if not dry_run:
            files.discard(name, storage=storage)
        removed.append(name)
    return removed


def _modified(storage: Storage, name: str) -> datetime:
    try:
        modified = storage.get_modified_time(name)
    except (NotImplementedError, OSError):
        return datetime.now(UTC)  # cannot tell: treat as young, keep it
    # Naive when USE_TZ is off: the storage then reports local time.
    return modified if modified.tzinfo else modified.astimezone(UTC)
