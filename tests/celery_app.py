"""The Celery app of the test project (the worker tests start it as a real process).

A reusable app never owns the Celery app; a project does, like this one.
"""

from __future__ import annotations

import os

from celery import Celery

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "tests.settings")

app = Celery("tests")
app.config_from_object("django.conf:settings", namespace="CELERY")
# The broker of a worker test is a redis-server the test started on a free port.
app.conf.update(broker_url=os.environ.get("INBOUND_TEST_BROKER_URL", "memory://"))
app.conf.imports = ["django_inbound_smtp.tasks"]
app.conf.worker_prefetch_multiplier = 1
app.conf.broker_connection_retry_on_startup = True

#: The app the test process sends tasks with; each worker test points it at its own
#: broker (INBOUND_SMTP["CELERY_APP"] = "tests.celery_app.sender").
sender: Celery | None = None
