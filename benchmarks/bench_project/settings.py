"""Settings of the benchmark project. Everything variable comes from the environment,
set by ``benchmarks/run.py``:

- ``BENCH_DB``: ``postgres`` (default) or ``sqlite``;
- ``BENCH_PG_NAME`` / ``BENCH_PG_HOST`` / ``BENCH_PG_PORT`` / ``BENCH_PG_USER``: the
  PostgreSQL database (default ``inbound_bench`` on 127.0.0.1:5432 as ``postgres``);
- ``BENCH_SQLITE_PATH``: the SQLite file (WAL, ``synchronous=FULL``: durable commits);
- ``BENCH_MEDIA_ROOT``: the folder raw messages are written to (a temporary folder);
- ``BENCH_MODE``: ``default`` (processing inline, the default without a broker) or
  ``store`` (store only: ``DISPATCH="celery"`` with the Celery app of
  ``bench_project.celery_app``, broker ``BENCH_BROKER_URL``, and no worker);
- ``BENCH_INBOUND_SMTP``: JSON object merged over ``INBOUND_SMTP`` (experiments).

Durability settings are the ones the README asks for, so the numbers are those of a
correctly configured deployment: PostgreSQL with its defaults (``fsync``,
``synchronous_commit``), SQLite in WAL with ``synchronous=FULL``.
"""

import json
import os
import tempfile

SECRET_KEY = "benchmark-only-not-secret"  # noqa: S105 - benchmark settings
DEBUG = False
USE_TZ = True
TIME_ZONE = "UTC"
ALLOWED_HOSTS: list[str] = []

INSTALLED_APPS = [
    "django.contrib.contenttypes",
    "django.contrib.auth",
    "django_inbound_smtp",
]

if os.environ.get("BENCH_DB", "postgres") == "sqlite":
    DATABASES = {
        "default": {
            "ENGINE": "django.db.backends.sqlite3",
            "NAME": os.environ.get("BENCH_SQLITE_PATH")
            or os.path.join(tempfile.gettempdir(), "inbound_bench.sqlite3"),
            "CONN_MAX_AGE": None,
            "OPTIONS": {
                "timeout": 20,
                "transaction_mode": "IMMEDIATE",
                "init_command": "PRAGMA journal_mode=WAL; PRAGMA synchronous=FULL",
            },
        }
    }
else:
    DATABASES = {
        "default": {
            "ENGINE": "django.db.backends.postgresql",
            "NAME": os.environ.get("BENCH_PG_NAME", "inbound_bench"),
            "USER": os.environ.get("BENCH_PG_USER", "postgres"),
            "HOST": os.environ.get("BENCH_PG_HOST", "127.0.0.1"),
            "PORT": os.environ.get("BENCH_PG_PORT", "5432"),
            "CONN_MAX_AGE": None,
        }
    }
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

STORAGES = {
    "default": {
        "BACKEND": "django.core.files.storage.FileSystemStorage",
        "OPTIONS": {
            "location": os.environ.get("BENCH_MEDIA_ROOT")
            or os.path.join(tempfile.gettempdir(), "inbound_bench_media"),
        },
    },
}

STORE_ONLY = os.environ.get("BENCH_MODE", "default") == "store"
if STORE_ONLY:
    CELERY_BROKER_URL = os.environ.get("BENCH_BROKER_URL", "memory://")

INBOUND_SMTP = {
    "HOSTNAME": "mx.bench",
    "SWEEP_INTERVAL": 0,
    "MAX_MESSAGE_SIZE": 40 * 1024 * 1024,
    # Sender checks off (they are on by default): run.py --sender-checks measures them
    # against its own loopback DNS server, never the machine's resolver.
    "SENDER_CHECKS": dict.fromkeys(
        ("DNSBL", "IPREV", "SENDER_DOMAIN", "SPF", "DKIM", "DMARC"), "off"
    ),
    # Store only: every message is handed to Celery (a private redis-server, no worker).
    **(
        {"DISPATCH": "celery", "CELERY_APP": "bench_project.celery_app.app"}
        if STORE_ONLY
        else {"DISPATCH": "inline"}
    ),
    # Experiments: run.py --setting KEY=VALUE, e.g. PROCESSING_CONCURRENCY=1.
    **json.loads(os.environ.get("BENCH_INBOUND_SMTP") or "{}"),
}

# Quiet: no per-message INFO line; warnings and errors still reach stderr (the
# runner keeps the server's output in a log file and shows its tail on failure).
LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "handlers": {"stderr": {"class": "logging.StreamHandler"}},
    "root": {"handlers": ["stderr"], "level": "WARNING"},
    "loggers": {
        "django_inbound_smtp": {"handlers": ["stderr"], "level": "WARNING", "propagate": False},
    },
}
