"""Retention: delete finished messages past their age, rows and files together.

``INBOUND_SMTP["RETENTION"]`` gives days per status (``None``: for ever, the default).
Only finished messages are ever pruned: ``processed``, ``failed`` once no retry is due
(``attempts >= MAX_ATTEMPTS``) and ``duplicate``; never ``received`` or
``processing``, whatever the settings, never a held message, and never the original
of a held duplicate (deleting an original deletes its duplicates, which share its file).

Each batch of at most :data:`BATCH` messages is one transaction: the rows are locked
(skipping rows another pruner holds), their file names are written to
:class:`PendingFileDeletion`, the rows are deleted (recipients, sender checks,
attachments and duplicates with them) and, after the commit, the files are deleted and
their notes removed. A crash after the commit leaves notes, and the next prune deletes
those files first: no row ever points at a missing file, and no file outlives its row
for longer than until the next prune.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from functools import partial

from django.db import connections, router, transaction
from django.db.models import Q, QuerySet
from django.utils import timezone

from django_inbound_smtp._db import unit_of_work
from django_inbound_smtp.conf import get_settings
from django_inbound_smtp.models import Attachment, InboundMessage, PendingFileDeletion
from django_inbound_smtp.store import files

__all__ = [
    "BATCH",
    "PRUNABLE",
    "PruneReport",
    "delete_messages",
    "eligible",
    "prune",
    "retention_limits",
]

logger = logging.getLogger(__name__)
Status = InboundMessage.Status

#: Statuses retention may prune, in the order they are pruned.
PRUNABLE = (Status.DUPLICATE, Status.PROCESSED, Status.FAILED)
#: Messages per transaction: a big prune never holds many row locks for long.
BATCH = 500


@dataclass
class PruneReport:
    """What a prune deleted (or, dry, would delete): messages by status, and files."""

    messages: dict[str, int] = field(default_factory=dict)
    #: Duplicates deleted along with their original (not counted in ``messages``).
    with_original: int = 0
    files: int = 0
    dry_run: bool = False

    @property
    def total(self) -> int:
        return sum(self.messages.values()) + self.with_original


def retention_limits() -> dict[str, int]:
    """Days per prunable status that has a limit (statuses kept for ever left out)."""
    configured = get_settings().RETENTION
    return {
        str(status): days
        for status in PRUNABLE
        if (days := configured.get(str(status))) is not None
    }


def eligible(status: str, days: int, *, now: datetime | None = None) -> QuerySet[InboundMessage]:
    """Messages of ``status`` that retention of ``days`` days may delete now."""
    if status not in PRUNABLE:
        raise ValueError(f"{status!r} is never pruned")
    cutoff = (now or timezone.now()) - timedelta(days=days)
    queryset = InboundMessage.objects.filter(status=status, held=False)
    if status == Status.DUPLICATE:
        return queryset.filter(received_at__lt=cutoff)
    # Counted from the last outcome: a message reprocessed yesterday is a day old.
    queryset = queryset.filter(
        Q(processed_at__lt=cutoff) | Q(processed_at__isnull=True, received_at__lt=cutoff)
    )
    if status == Status.FAILED:
        # Still due for a retry by the sweeper: not finished yet.
        queryset = queryset.filter(attempts__gte=get_settings().MAX_ATTEMPTS)
    return queryset.exclude(duplicates__held=True)


def prune(
    *,
    dry_run: bool = False,
    batch_size: int = BATCH,
    stop: threading.Event | None = None,
    now: datetime | None = None,
) -> PruneReport:
    """Delete every message past its status's retention, with its files.

    ``dry_run`` counts and deletes nothing. ``stop`` (set by a stopping server) ends the
    prune between batches; the rest waits for the next one."""
    report = PruneReport(dry_run=dry_run)
    now = now or timezone.now()
    with unit_of_work():
        if not dry_run:
            report.files += finish_pending()
        for status, days in retention_limits().items():
            queryset = eligible(status, days, now=now)
            if dry_run:
                report.messages[status] = queryset.count()
                continue
            deleted = 0
            while stop is None or not stop.is_set():
                selected, count, cascaded, names = _prune_batch(queryset, batch_size)
                deleted += count
                report.with_original += cascaded
                report.files += names
                if selected < batch_size:
                    break
            report.messages[status] = deleted
    if report.total:
        logger.info(
            "retention %s %d message(s) and %d file(s)",
            "would delete" if dry_run else "deleted",
            report.total,
            report.files,
            extra={"pruned": report.messages},
        )
    return report


def _prune_batch(
    queryset: QuerySet[InboundMessage], batch_size: int, *, respect_holds: bool = True
) -> tuple[int, int, int, int]:
    """One transaction; returns (messages selected, of them deleted, duplicates deleted
    with them, files)."""
    using = router.db_for_write(InboundMessage)
    # PostgreSQL: rows another pruner (another smtpd worker) has locked are left to it.
    skip_locked = connections[using].features.has_select_for_update_skip_locked
    with transaction.atomic(using=using):
        rows = list(
            queryset.select_for_update(skip_locked=skip_locked)
            .order_by("pk")
            .values_list("pk", "raw_file", "duplicate_of_id")[:batch_size]
        )
        if not rows:
            return 0, 0, 0, 0
        selected = len(rows)
        if respect_holds:
            # The duplicates go with their original: lock them too, so a hold put on
            # one now either lands first (its original stays) or finds it gone.
            duplicates = InboundMessage.objects.select_for_update().filter(
                duplicate_of_id__in=[pk for pk, _raw, _of in rows]
            )
            held = {
                of for of, is_held in duplicates.values_list("duplicate_of_id", "held") if is_held
            }
            rows = [row for row in rows if row[0] not in held]
        pks = [pk for pk, _raw, _of in rows]
        # A duplicate shares its original's raw file: only originals' files go.
        names = {raw for _pk, raw, original in rows if original is None and raw}
        going = Q(message_id__in=pks) | Q(message__duplicate_of_id__in=pks)
        names.update(Attachment.objects.filter(going).values_list("file", flat=True))
        names.discard("")
        PendingFileDeletion.objects.bulk_create(PendingFileDeletion(name=n) for n in names)
        _total, per_model = InboundMessage.objects.filter(pk__in=pks).delete()
        messages = per_model.get(InboundMessage._meta.label, 0)
        transaction.on_commit(partial(_delete_files, sorted(names)), using=using, robust=True)
    return selected, len(pks), messages - len(pks), len(names)


def delete_messages(pks: Sequence[int]) -> int:
    """Delete the messages ``pks`` now, whatever their status or hold, with their files
    the way retention does (a person asked: the admin's delete); how many went,
    duplicates deleted with their original included."""
    total = 0
    with unit_of_work():
        for start in range(0, len(pks), BATCH):
            chosen = InboundMessage.objects.filter(pk__in=pks[start : start + BATCH])
            _selected, count, cascaded, _files = _prune_batch(chosen, BATCH, respect_holds=False)
            total += count + cascaded
    return total


def _delete_files(names: list[str]) -> None:
    """After the commit: delete the files, then their notes (a failure keeps its note)."""
    storage = files.inbound_storage()
    done: list[str] = []
    for name in names:
        try:
            storage.delete(name)  # a missing file is no error: deleting twice is harmless
        except Exception:
            logger.exception("could not delete %s; the next prune tries again", name)
        else:
            done.append(name)
    for start in range(0, len(done), BATCH):
        PendingFileDeletion.objects.filter(name__in=done[start : start + BATCH]).delete()


def finish_pending() -> int:
    """Delete the files an earlier prune could not (a crash, a storage error); how many."""
    count = 0
    while True:
        notes = list(PendingFileDeletion.objects.order_by("pk").values_list("pk", "name")[:BATCH])
        if not notes:
            return count
        _delete_files(sorted({name for _pk, name in notes}))
        left = PendingFileDeletion.objects.filter(pk__in=[pk for pk, _name in notes]).count()
        count += len(notes) - left
        if left:
            return count  # the storage keeps failing: try again at the next prune
