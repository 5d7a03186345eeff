"""The benchmark project's Celery app, used in store-only mode (``BENCH_MODE=store``).

Its broker is the private ``redis-server`` that ``run.py`` starts (``BENCH_BROKER_URL``).
No worker runs: ``smtpd`` sends one task per message and the tasks stay in the broker,
so the numbers are those of receiving and storing alone.
"""

from __future__ import annotations

import os

from celery import Celery

app = Celery("bench_project")
app.conf.update(
    broker_url=os.environ.get("BENCH_BROKER_URL", "memory://"),
    broker_connection_retry_on_startup=True,
)
