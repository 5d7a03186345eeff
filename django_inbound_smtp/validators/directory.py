"""The per-process directory of active mailboxes and served domains, read at RCPT time.

Without it every ``RCPT TO`` costs one or two queries on the server's single ORM thread
(about half of that thread's time under load). With it, one query loads every active
mailbox (address and primary key) and domain, and answers are given from that snapshot
until it is ``DIRECTORY_TTL`` seconds old; then the next lookup reloads it.

**The staleness bound.** A snapshot's age is counted from the moment its query *started*,
so data used at time ``t`` was read at a time ``s > t - DIRECTORY_TTL``. A change to
``Mailbox`` rows committed at time ``T`` is therefore seen by every answer given after
``T + DIRECTORY_TTL``, in every process, whatever wrote it (admin, a queryset
``update()``, raw SQL, another host). No answer is ever given from older data: when the
snapshot has expired and the database cannot be read, the lookup raises and the client
gets ``451 4.3.0``. A save or delete through the ORM in *this* process also drops the
snapshot at once (and again at commit), so a process sees its own changes sooner.

**Bounded memory.** A table with more than ``DIRECTORY_MAX_SIZE`` active mailboxes is
never loaded whole: the directory then remembers per-address and per-domain facts, each
for ``DIRECTORY_TTL`` seconds, at most ``DIRECTORY_MAX_SIZE`` of them (least recently used
dropped first), and checks once a minute whether the table has shrunk.

``DIRECTORY_TTL = 0`` turns all of this off: every RCPT queries the database, as before.
Thread-safe; :meth:`Directory.from_memory` never does I/O and may run on the event loop,
:meth:`Directory.lookup` may query and runs in a worker thread.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from django.core.signals import setting_changed
from django.db import transaction
from django.db.models.signals import post_delete, post_save
from django.dispatch import receiver

from django_inbound_smtp._db import unit_of_work
from django_inbound_smtp.conf import DEFAULTS, SETTINGS_NAME, get_settings
from django_inbound_smtp.models import Mailbox
from django_inbound_smtp.validators._expiring import MISS, ExpiringLru

__all__ = ["Directory", "Found", "directory"]

#: Seconds a directory found too large stays in per-address mode before it tries a whole
#: load again (one ``LIMIT DIRECTORY_MAX_SIZE + 1`` query a minute at most).
TOO_LARGE_RECHECK = 60.0


@dataclass(frozen=True, slots=True)
class Found:
    """What the directory knows about one address's candidates.

    ``owners`` maps each candidate that is an active mailbox to its primary key;
    ``served`` is true when the domain has at least one active mailbox.
    """

    owners: Mapping[str, int]
    served: bool


@dataclass(frozen=True, slots=True)
class _Snapshot:
    owners: Mapping[str, int]
    domains: frozenset[str]
    read_at: float
    limited: frozenset[int] = frozenset()  # pks of the mailboxes with a quota
    pks: frozenset[int] = frozenset()  # pks of every active mailbox


class Directory:
    """Active mailboxes and served domains of one process (see the module docstring)."""

    def __init__(self) -> None:
        self._snapshot: _Snapshot | None = None
        # Resized from the settings at each lookup; nothing is read at import time.
        self._facts: ExpiringLru[Any] = ExpiringLru(DEFAULTS["DIRECTORY_MAX_SIZE"])
        self._too_large_until = 0.0
        self._generation = 0
        self._load_lock = threading.Lock()

    def from_memory(self, candidates: Sequence[str], domain: str) -> Found | None:
        """What memory younger than ``DIRECTORY_TTL`` says, or ``None`` if it cannot say.

        ``candidates`` are in order of preference (``candidate_addresses``); when one is
        an owner, the result may leave out the owners after it.

        Never does I/O and never waits for a load: safe on the event loop."""
        ttl = get_settings().DIRECTORY_TTL
        if ttl <= 0:
            return None
        now = time.monotonic()
        snapshot = self._snapshot  # one read: a concurrent load swaps the whole object
        if snapshot is not None and now - snapshot.read_at < ttl:
            owners = {c: snapshot.owners[c] for c in candidates if c in snapshot.owners}
            return Found(owners, domain in snapshot.domains)
        for candidate in candidates:  # best match first: the first owner decides
            pk = self._facts.get(("address", candidate), max_age=ttl, now=now)
            if pk is MISS:
                return None
            if pk is not None:  # an active mailbox of the domain: served
                return Found({candidate: pk}, served=True)
        served = self._facts.get(("domain", domain), max_age=ttl, now=now)
        return None if served is MISS else Found({}, bool(served))

    def lookup(self, candidates: Sequence[str], domain: str) -> Found:
        """What the database says, from memory when it is young enough.

        Synchronous, may query: call it off the event loop. Raises the database's error
        when the data it needs cannot be read (never answers from expired memory)."""
        found = self.from_memory(candidates, domain)
        if found is not None:
            return found
        settings = get_settings()
        if settings.DIRECTORY_TTL <= 0:
            return _query(candidates, domain)[1]
        self._facts.max_entries = settings.DIRECTORY_MAX_SIZE
        if time.monotonic() >= self._too_large_until:
            with self._load_lock:  # one load at a time; the others then use its result
                found = self.from_memory(candidates, domain)
                if found is not None:
                    return found
                if self._load(settings.DIRECTORY_MAX_SIZE):
                    found = self.from_memory(candidates, domain)
                    if found is not None:
                        return found
        read_at, found = _query(candidates, domain)
        for candidate in candidates:
            self._facts.put(("address", candidate), found.owners.get(candidate), read_at=read_at)
        if not found.owners:
            self._facts.put(("domain", domain), found.served, read_at=read_at)
        return found

    def _load(self, max_size: int) -> bool:
        """Load the whole snapshot in one query; ``False`` if the table is too large."""
        generation = self._generation
        read_at = time.monotonic()
        with unit_of_work():
            # order_by(): no sort of the whole table for the model's default ordering.
            active = Mailbox.objects.active().order_by()
            rows = list(
                active.values_list("address", "pk", "domain", "quota_messages", "quota_bytes")[
                    : max_size + 1
                ]
            )
        if len(rows) > max_size:
            self._snapshot = None
            self._too_large_until = time.monotonic() + TOO_LARGE_RECHECK
            return False
        snapshot = _Snapshot(
            owners={address: pk for address, pk, *_ in rows},
            domains=frozenset(domain for _, _, domain, *_ in rows),
            read_at=read_at,
            limited=frozenset(
                pk for _, pk, _, messages, size in rows if messages is not None or size is not None
            ),
            pks=frozenset(pk for _, pk, *_ in rows),
        )
        # Not invalidated while it loaded. (A clear() racing this line can still see the
        # new snapshot installed; it then only lasts its TTL: the bound holds either way.)
        if generation == self._generation:
            self._snapshot = snapshot
            self._facts.clear()  # the snapshot answers everything now
            return True
        return False

    def has_quota(self, pk: int) -> bool | None:
        """Whether active mailbox ``pk`` has a quota, from memory younger than
        ``DIRECTORY_TTL``; ``None`` when memory cannot say (ask the database).

        Never does I/O: safe on the event loop. Lets RCPT skip the quota query for the
        mailboxes that have none (most of them), with the directory's staleness bound:
        from the whole snapshot, or (a table too large for one) from what
        :meth:`note_quota` remembered."""
        ttl = get_settings().DIRECTORY_TTL
        if ttl <= 0:
            return None
        now = time.monotonic()
        snapshot = self._snapshot
        if snapshot is not None and now - snapshot.read_at < ttl:
            if pk in snapshot.limited:
                return True
            if pk in snapshot.pks:
                return False
        known = self._facts.get(("quota", pk), max_age=ttl, now=now)
        return None if known is MISS else bool(known)

    def note_quota(self, pk: int, *, limited: bool, read_at: float) -> None:
        """Remember what the database said at ``read_at`` (``time.monotonic()``, taken
        before the query) about whether mailbox ``pk`` has a quota."""
        if get_settings().DIRECTORY_TTL > 0:
            self._facts.put(("quota", pk), limited, read_at=read_at)

    def clear(self) -> None:
        """Forget everything; the next lookup reads the database."""
        self._generation += 1
        self._snapshot = None
        self._too_large_until = 0.0
        self._facts.clear()


def _query(candidates: Sequence[str], domain: str) -> tuple[float, Found]:
    """The per-address queries (as without a directory): candidates, then the domain."""
    read_at = time.monotonic()
    with unit_of_work():
        owners = dict(
            Mailbox.objects.active()
            .filter(address__in=list(candidates))
            .values_list("address", "pk")
        )
        served = bool(owners) or Mailbox.objects.serves_domain(domain)
    return read_at, Found(owners, served)


#: The directory of this process.
directory = Directory()


@receiver(post_save, sender=Mailbox)
@receiver(post_delete, sender=Mailbox)
def _mailbox_changed(*, using: str, **kwargs: Any) -> None:
    # Now, and again once the change is committed: a load between the two would
    # otherwise keep the old rows as fresh until it expires.
    directory.clear()
    transaction.on_commit(directory.clear, using=using)


@receiver(setting_changed)
def _settings_changed(*, setting: str, **kwargs: Any) -> None:
    if setting == SETTINGS_NAME:
        directory.clear()
