"""The lifecycle: everything that happens to a message after its commit.

- ``schedule``: the store's after-commit hook, the sweeper and reprocessing, through
  the dispatcher ``DISPATCH`` names (``backends``);
- ``process``: claim, parse (``extract``), notify (``notify``), record, in batches;
- ``leases`` and ``owners``: who holds a message, and noticing when it died.

A message's walk: ``store.store_batch`` commits it and calls ``schedule.schedule``;
the dispatcher hands it to ``process.process_batch`` (in a thread of this process, a
Celery worker or a ``django.tasks`` worker), which sends ``message_received``.
"""
