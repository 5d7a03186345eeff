"""The project's Celery app (the standard Django layout).

Configured from Django's settings, every ``CELERY_*`` setting (``CELERY_BROKER_URL``
becomes ``broker_url``), and it finds the ``tasks.py`` of every installed app, so the
worker knows ``django_inbound_smtp.tasks.process_messages`` and ``.sweep``.

Run a worker and the beat scheduler from ``example_project/`` (see settings.py):

    CELERY_BROKER_URL=redis://127.0.0.1:6379/0 celery -A example_project worker -l info
    CELERY_BROKER_URL=redis://127.0.0.1:6379/0 celery -A example_project beat -l info
"""

import os

from celery import Celery

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "example_project.settings")

app = Celery("example_project")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks()
